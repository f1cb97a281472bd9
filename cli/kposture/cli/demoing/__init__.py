"""The parts of ``kposture demo``: the main job end to end on the local environment.

``manifests`` (the workloads) and ``scenarios`` (the drifts) are data; ``kubeapi`` writes them to
the clusters; ``pipeline`` runs ``kposture run`` as a child process; ``observing`` follows the
output topics and measures; ``display`` shows it live; ``reporting`` writes the verdict;
``orchestrating`` puts the steps in order.
"""
