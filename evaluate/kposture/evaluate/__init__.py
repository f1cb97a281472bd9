"""Evaluate: baselines as code, the evaluation engine, and the stream processor around it.

The pure core (``policy/``: baselines, loading, waivers, CEL; ``engine/``: evaluating,
projection, workloads, tracking) is a set of synchronous functions of data; ``scan/`` applies it
to files; ``stream/`` runs it on the resources topic and ``posture/`` adds the findings up.
"""
