"""Posture: what the findings add up to, per cluster, namespace, baseline and control.

Each worker tallies its objects' contributions and publishes posture snapshots (``tallying``);
``contributing`` turns a contribution into the record the rollup reads, and the faust rollup
(``rollup``) adds them up across workers with exact, idempotent arithmetic (``summing``).
"""
