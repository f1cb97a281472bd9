"""``kposture bench``: the whole pipeline under synthetic multi-cluster load, measured.

The parts, in the order a run uses them: ``workload`` and ``churning`` (pure: the manifests and
the writes that follow), ``kubewriting`` (timed writes to the apiservers), ``loading`` (the
initial objects, the paced churn, the cleanup), ``services`` (ingest, evaluate and remediate
as separate child processes, sampled from ``/proc``), ``observing`` (the topics, read back),
``measuring`` (observations to figures), ``reporting`` (the JSON and the plot) and
``running`` (the run itself).
"""
