"""Turns an object's posture contribution into the record evaluate publishes for the rollup.

Evaluate keeps each object's contribution as ``tallying.Contribution`` (passing checks without
their metadata, open findings' outcomes with theirs); the contributions topic carries it as
``schemas.posture.Contribution``, every outcome with its severity and controls, so the rollup
needs no policy. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt

from kposture.evaluate.posture import tallying
from kposture.schemas import posture as posture_schema

_OUTCOMES = {
    tallying.PASS: posture_schema.Outcome.PASS,
    tallying.FAIL: posture_schema.Outcome.FAIL,
    tallying.WAIVED: posture_schema.Outcome.WAIVED,
}


def contribution_record(
    contribution: tallying.Contribution, *, meta: tallying.CheckMeta, evaluated_at: dt.datetime
) -> posture_schema.Contribution:
    """The record of ``contribution``; ``meta`` gives passing checks' severity and controls.

    A passing check that ``meta`` does not know (it left the policy) is left out, as the
    tally leaves it out: the sweep that follows a policy change re-evaluates the object.
    """
    outcomes: list[posture_schema.CheckOutcome] = []
    for baseline, check in contribution.passed:
        found = meta(baseline, check)
        if found is None:
            continue
        severity, controls = found
        outcomes.append(
            posture_schema.CheckOutcome(
                baseline, check, posture_schema.Outcome.PASS, severity, tuple(controls)
            )
        )
    for baseline, check, outcome, severity, controls in contribution.failing:
        outcomes.append(
            posture_schema.CheckOutcome(
                baseline, check, _OUTCOMES[outcome], severity, tuple(controls)
            )
        )
    return posture_schema.Contribution(
        cluster=contribution.cluster,
        namespace=contribution.namespace,
        outcomes=tuple(outcomes),
        evaluated_at=evaluated_at,
    )
