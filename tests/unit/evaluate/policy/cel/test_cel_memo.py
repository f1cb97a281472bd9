"""Shared subexpressions: programs that share an activation's memo compute equal values once."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from kposture.evaluate import synthetic
from kposture.evaluate.engine import workloads
from kposture.evaluate.policy import baselines, cel
from kposture.evaluate.policy import store as policy_store

CONTAINERS = (
    "(has(object.spec.containers) ? object.spec.containers : [])"
    " + (has(object.spec.initContainers) ? object.spec.initContainers : [])"
)


def outcome(program: cel.Program, activation: dict[str, Any]) -> object:
    try:
        return program.evaluate(activation)
    except cel.CelEvalError as exc:
        return ("error", str(exc))


def test_equal_expressions_share_one_memo_entry_across_programs() -> None:
    first = cel.compile(f"({CONTAINERS}).all(c, has(c.image))")
    # The same concatenation, written with other spacing and at another position.
    second = cel.compile(f"size(  {CONTAINERS.replace(' + ', '+')}  ) > 1")
    pod = {"spec": {"containers": [{"image": "a"}], "initContainers": [{"name": "i"}]}}
    memo: dict[str, object] = {}
    activation = {"object": pod, cel.MEMO: memo}
    assert first.evaluate(activation) is False
    assert len(memo) == 1
    (value,) = memo.values()
    assert value == [{"image": "a"}, {"name": "i"}]
    assert second.evaluate(activation) is True
    assert len(memo) == 1  # reused, not recomputed under another key
    # Without a memo the programs compute the same values themselves.
    assert first.evaluate({"object": pod}) is False
    assert second.evaluate({"object": pod}) is True


def test_a_failing_subexpression_is_not_remembered() -> None:
    program = cel.compile(f"size({CONTAINERS}) > 0")
    memo: dict[str, object] = {}
    bad = {"object": {"spec": {"containers": "not a list", "initContainers": [1]}}, cel.MEMO: memo}
    with pytest.raises(cel.CelEvalError):
        program.evaluate(bad)
    assert memo == {}


@pytest.mark.parametrize("seed", [1, 2])
def test_built_in_checks_give_the_same_verdicts_with_a_shared_memo(seed: int) -> None:
    """Every built-in program, on every synthetic object, with one memo per object or none."""
    engine = policy_store.PolicyStore(["pss-restricted", "cis-1.12", "nsa-cisa-1.2"]).build().engine
    sources = {rule.validation for policy in engine.policies for rule in policy.rules}
    programs = [cel.compile(s, variables=baselines.CEL_VARIABLES) for s in sorted(sources)]
    shared = 0
    for obj in synthetic.fleet(300, seed=seed).objects:
        template = workloads.TEMPLATE_PATHS.get(
            (workloads.group_of(obj["apiVersion"]), obj["kind"])
        )
        targets: list[Mapping[str, Any]] = [obj]
        if template is not None:
            view = workloads.pod_view(obj, template)
            if view is not None:
                targets.append(view)
        for target in targets:
            memo: dict[str, object] = {}
            for program in programs:
                alone = outcome(program, {"object": copy.deepcopy(target), "namespaceObject": None})
                together = outcome(
                    program, {"object": target, "namespaceObject": None, cel.MEMO: memo}
                )
                assert together == alone, program.source
            shared += len(memo)
    assert shared > 0  # the built-in checks do share subexpressions
