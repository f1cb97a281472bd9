"""Engine: the pure core that evaluates one object against the resolved baselines.

Compiles a policy set once (``evaluating``), projects each object to the fields its checks read
(``projection``), gives workload templates a Pod-shaped view (``workloads``) and turns verdicts
into finding transitions (``tracking``). Synchronous functions of data; no I/O library.
"""
