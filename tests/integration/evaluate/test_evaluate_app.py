"""The faust evaluate app end to end on the real broker: events in, exactly the transitions out."""

from __future__ import annotations

import time
from typing import Any

import pytest
from evaluate_harness import CLUSTER, Bus, running

from kposture.schemas import deadletter, findings, posture, resources, topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BASELINE = """\
apiVersion: kposture.io/v1
kind: Baseline
name: itest
version: {version}
checks:
  - id: privileged
    title: Containers must not be privileged
    severity: {severity}
    controls: ["itest:privileged"]
    target: podSpec
    message: {message}
    path: spec.containers[*].securityContext.privileged
    validation: >-
      object.spec.containers.all(c, !has(c.securityContext)
      || !has(c.securityContext.privileged) || c.securityContext.privileged == false)
{extra}"""

HOST_NETWORK = """\
  - id: hostNetwork
    title: Pods must not use the host network
    severity: high
    controls: ["itest:hostNetwork"]
    target: podSpec
    message: host network
    path: spec.hostNetwork
    validation: "!has(object.spec.hostNetwork) || object.spec.hostNetwork == false"
"""


def baseline(
    version: str = "v1.0",
    *,
    message: str = "privileged container",
    severity: str = "high",
    extra: str = "",
) -> str:
    """The test baseline at one version."""
    return BASELINE.format(version=version, message=message, severity=severity, extra=extra)


def pod(*, privileged: bool = False, host_network: bool = False, rv: str = "1") -> dict[str, Any]:
    """A pod in namespace ``shop``."""
    spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": "app:1", "securityContext": {"privileged": privileged}}
        ]
    }
    if host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop", "resourceVersion": rv},
        "spec": spec,
    }


def transitions(records: list[tuple[str, Any]]) -> list[tuple[str, str, str]]:
    """(object uid, check, transition) of every finding record, in arrival order."""
    return [
        (f.ref.uid, f.check, str(f.state)) for _, f in records if isinstance(f, findings.Finding)
    ]


def has(expected: tuple[str, str, str]) -> Any:
    """A predicate: the finding records include ``expected``."""
    return lambda records: expected in transitions(records)


async def test_resource_events_produce_exactly_the_expected_transitions(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """Opened, unchanged, resolved and deleted objects emit exactly one record per change."""
    await bus.baseline(baseline(), name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    scores = await reader(topics.Topic.POSTURE)
    async with running(settings):
        started = time.monotonic()
        await bus.resource(resources.Change.ADDED, "a", pod(privileged=True))
        await out.until(has(("uid-a", "privileged", "opened")))
        latency = time.monotonic() - started
        await bus.resource(resources.Change.ADDED, "b", pod())
        await bus.resource(resources.Change.SYNCED, "a", pod(privileged=True, rv="2"))
        await bus.resource(resources.Change.MODIFIED, "a", pod(rv="3"))
        await bus.resource(resources.Change.ADDED, "c", pod(privileged=True))
        await bus.resource(resources.Change.DELETED, "c", pod(privileged=True))
        await bus.raw(b"c1/uid-c", b"", [])  # the tombstone after a delete is ignored
        await out.until(has(("uid-c", "privileged", "resolved")))
        await out.until(has(("uid-a", "privileged", "resolved")))
        records = await out.settle()
        await scores.until(
            lambda rs: any(
                isinstance(s, posture.PostureSnapshot)
                and s.scope is posture.Scope.CLUSTER
                and s.passing == 2
                for _, s in rs
            )
        )
    assert sorted(transitions(records)) == [
        ("uid-a", "privileged", "opened"),
        ("uid-a", "privileged", "resolved"),
        ("uid-c", "privileged", "opened"),
        ("uid-c", "privileged", "resolved"),
    ]
    opened = next(f for _, f in records if f.state is findings.Transition.OPENED)
    assert opened.key == f"{CLUSTER}/uid-a/itest/privileged"
    assert next(k for k, _ in records) == opened.key
    assert opened.baseline_version == "v1.0"
    assert opened.controls == ["itest:privileged"]
    print(f"first finding {latency * 1000:.0f} ms after the event was produced")


async def test_a_poison_record_goes_to_the_dead_letter_topic_and_the_stream_flows_on(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """Undecodable records land on the DLQ with a reason and their bytes; later ones process."""
    await bus.baseline(baseline(), name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    dlq = await reader(topics.Topic.DLQ)
    async with running(settings):
        await bus.raw(b"c1/junk", b"\xff not json", [("ce_specversion", b"1.0")])
        await bus.raw(
            b"c1/bad",
            b'{"cluster": 1}',
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"x"),
                ("ce_source", b"test"),
                ("ce_type", b"io.kposture.resource.added.v1"),
            ],
        )
        await bus.resource(resources.Change.ADDED, "after", pod(privileged=True))
        await out.until(has(("uid-after", "privileged", "opened")))
        letters = await dlq.until(lambda rs: len(rs) >= 2)
    by_key = {letter.key: letter for _, letter in letters}
    assert set(by_key) == {b"c1/junk", b"c1/bad"}
    assert all(isinstance(letter, deadletter.DeadLetter) for letter in by_key.values())
    assert "missing header" in by_key[b"c1/junk"].reason
    assert by_key[b"c1/junk"].value == b"\xff not json"
    assert "ResourceEvent" in by_key[b"c1/bad"].reason
    assert by_key[b"c1/bad"].topic.endswith("resources.v1")


async def test_a_new_baseline_version_re_evaluates_the_inventory(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """Publishing v2 emits the resulting transitions, each naming v2, with no new events."""
    await bus.baseline(baseline(), name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    async with running(settings):
        await bus.resource(resources.Change.ADDED, "a", pod(privileged=True, host_network=True))
        await bus.resource(resources.Change.ADDED, "b", pod(privileged=True))
        await out.until(has(("uid-b", "privileged", "opened")))
        await out.until(has(("uid-a", "privileged", "opened")))
        v2 = baseline("v2.0", message="privileged!", severity="critical", extra=HOST_NETWORK)
        await bus.baseline(v2, name="itest", version="v2.0")
        await out.until(has(("uid-a", "hostNetwork", "opened")))
        await out.until(has(("uid-b", "privileged", "updated")))
        await out.until(has(("uid-a", "privileged", "updated")))
        records = await out.settle()
    after = [
        f
        for _, f in records
        if f.state is not findings.Transition.OPENED or f.check == "hostNetwork"
    ]
    assert sorted(transitions([("", f) for f in after])) == [
        ("uid-a", "hostNetwork", "opened"),
        ("uid-a", "privileged", "updated"),
        ("uid-b", "privileged", "updated"),
    ]
    assert {f.baseline_version for f in after} == {"v2.0"}
    assert {f.severity for f in after if f.check == "privileged"} == {"critical"}


async def test_a_restarted_worker_recovers_its_state_and_does_not_reopen(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """After a restart, state comes back from the changelog: no second opened; a fix resolves."""
    await bus.baseline(baseline(), name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    async with running(settings):
        await bus.resource(resources.Change.ADDED, "a", pod(privileged=True))
        await out.until(has(("uid-a", "privileged", "opened")))
    async with running(settings):
        await bus.resource(resources.Change.MODIFIED, "a", pod(privileged=True, rv="2"))
        await bus.resource(resources.Change.ADDED, "z", pod(privileged=True))
        await out.until(has(("uid-z", "privileged", "opened")))
        await bus.resource(resources.Change.MODIFIED, "a", pod(rv="3"))
        await out.until(has(("uid-a", "privileged", "resolved")))
        records = await out.settle()
    assert sorted(transitions(records)) == [
        ("uid-a", "privileged", "opened"),
        ("uid-a", "privileged", "resolved"),
        ("uid-z", "privileged", "opened"),
    ]


SELECTED = """\
  - id: prodHostNetwork
    title: Pods in production namespaces must not use the host network
    severity: high
    controls: ["itest:prodHostNetwork"]
    target: podSpec
    match: {namespaceSelector: {matchLabels: {tier: prod}}}
    message: host network in production
    path: spec.hostNetwork
    validation: "!has(object.spec.hostNetwork) || object.spec.hostNetwork == false"
"""


def namespace(**labels: str) -> dict[str, Any]:
    """Namespace ``shop`` with ``labels``."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "shop", "uid": "ns-shop", "labels": labels},
    }


async def test_a_namespace_label_change_re_evaluates_the_objects_in_it(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """A namespaceSelector starts and stops matching with the namespace's labels alone.

    The pod has no event of its own after the first: the namespace's change is what makes
    its check apply (opened) and stop applying (resolved), as it happens.
    """
    await bus.baseline(baseline(extra=SELECTED), name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    async with running(settings):
        await bus.resource(resources.Change.ADDED, "shop", namespace(tier="dev"), uid="ns-shop")
        await bus.resource(resources.Change.ADDED, "h", pod(host_network=True))
        await bus.resource(resources.Change.ADDED, "marker", pod(privileged=True))
        await out.until(has(("uid-marker", "privileged", "opened")))
        await bus.resource(resources.Change.MODIFIED, "shop", namespace(tier="prod"), uid="ns-shop")
        await out.until(has(("uid-h", "prodHostNetwork", "opened")))
        await bus.resource(resources.Change.MODIFIED, "shop", namespace(tier="dev"), uid="ns-shop")
        await out.until(has(("uid-h", "prodHostNetwork", "resolved")))
        records = await out.settle()
    assert [t for t in transitions(records) if t[0] == "uid-h"] == [
        ("uid-h", "prodHostNetwork", "opened"),
        ("uid-h", "prodHostNetwork", "resolved"),
    ]
