"""kposture remediate: throttled, safe, audited and reversible fixes for failing findings.

The pipeline, one module per activity: ``policy`` decides whether a finding may be acted on
and how, ``fixes`` knows the mechanical fix of each check, ``planning`` turns a finding and the
live object into a plan with its pre-image, ``throttling`` paces writes, ``applying`` talks to
the apiserver (dry run, server-side apply, verification, rollback), ``recording`` keeps the
idempotency ledger, ``auditing`` seals every decision into the hash chain, ``admitting``
waits for or parks a write the throttle or a canary holds, and ``service`` ties them to the
findings topic through ``consuming`` (the poll loop), ``dispatching`` (concurrency, order per
object, parking) and ``committing`` (low-water offsets). Only ``applying``, ``recording``,
``auditing``, ``consuming`` and ``service`` do I/O.
"""
