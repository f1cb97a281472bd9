"""Evaluate: baselines as code, the evaluation engine, and the stream processor around it.

The pure core (``baselines``, ``loading``, ``waivers``, ``workloads``, ``engine``) is a set of
synchronous functions of data; only the faust app module does I/O.
"""
