"""Scan: the engine applied to files instead of the stream, and what it writes out.

Scans manifests with their line numbers (``scanning``), writes SARIF and JUnit reports
(``reporting``), exports baselines as ValidatingAdmissionPolicy objects (``exporting``) and
runs a baseline's fixture tests (``fixture_tests``). The ``kposture scan`` and
``kposture baseline`` commands are built on it.
"""
