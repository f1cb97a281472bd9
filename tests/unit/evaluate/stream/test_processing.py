"""The processor without the stream: policy hot swap, digests, posture, dead letters."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import msgspec
import pytest

from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.stream import processing
from kposture.schemas import codec, common, envelope, findings, policy, posture, resources, topics

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

SOURCE = """\
apiVersion: kposture.io/v1
kind: Baseline
name: unit
version: {version}
checks:
  - id: privileged
    title: Containers must not be privileged
    severity: {severity}
    controls: ["unit:privileged"]
    target: podSpec
    message: privileged container
    validation: >-
      object.spec.containers.all(c, !has(c.securityContext)
      || !has(c.securityContext.privileged) || c.securityContext.privileged == false)
"""

EXCEPTION = """\
apiVersion: kposture.io/v1
kind: Exception
name: legacy
scope: {{namespaces: [shop]}}
checks: [privileged]
reason: legacy
owner: team-shop
ticket: SEC-9
expires: "{expires}"
"""


def document(kind: policy.DocumentKind, name: str, version: str, source: str) -> Any:
    """A published document."""
    return policy.PolicyDocument(
        kind=kind,
        name=name,
        version=version,
        source=source,
        digest=hashlib.sha256(source.encode()).hexdigest(),
        publisher="unit",
        published_at=T0,
    )


def baseline_doc(version: str = "v1.0", severity: str = "high") -> Any:
    """The unit baseline as a published document."""
    source = SOURCE.format(version=version, severity=severity)
    return document(policy.DocumentKind.BASELINE, "unit", version, source)


def event(change: resources.Change, *, privileged: bool, uid: str = "u1") -> Any:
    """A pod event."""
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": uid, "namespace": "shop"},
        "spec": {"containers": [{"name": "a", "securityContext": {"privileged": privileged}}]},
    }
    ref = common.ObjectRef(api_version="v1", kind="Pod", name=uid, uid=uid, namespace="shop")
    return resources.ResourceEvent(
        cluster="c1", change=change, ref=ref, object=obj, digest="d", observed_at=T0
    )


@pytest.fixture
def store() -> policy_store.PolicyStore:
    """A store holding the unit baseline v1.0 and no built-ins."""
    made = policy_store.PolicyStore([])
    made.apply("baseline/unit", baseline_doc())
    return made


def added(processor: processing.Processor, *, privileged: bool) -> processing.Step:
    """The step of the pod's first event, on partition 0 without a namespace object."""
    return processor.on_resource(
        event(resources.Change.ADDED, privileged=privileged),
        previous=None,
        partition=0,
        namespace_obj=None,
    )


def states(step: processing.Step) -> list[tuple[str, findings.Transition, str]]:
    """(check, transition, version) of each finding a step publishes."""
    out = []
    for output in step.outputs:
        model = envelope.unwrap(output.event)
        out.append((model.check, model.state, model.baseline_version))
    return out


def test_state_survives_its_table_encoding(store: policy_store.PolicyStore) -> None:
    """What the table stores decodes to the same state, object included."""
    processor = processing.Processor(store.build(), clock=lambda: T0)
    step = processor.on_resource(
        event(resources.Change.ADDED, privileged=True),
        previous=None,
        partition=2,
        namespace_obj=None,
    )
    assert step.state is not None
    again = processing.decode_state(processing.encode_state(step.state))
    assert again == step.state
    assert again.load_object()["metadata"]["name"] == "u1"
    assert states(step) == [("privileged", findings.Transition.OPENED, "v1.0")]
    assert step.outputs[0].topic is topics.Topic.FINDINGS
    assert step.outputs[0].event.type == codec.finding_type(findings.Transition.OPENED)


def test_a_sweep_after_a_new_version_re_evaluates_from_the_stored_object(
    store: policy_store.PolicyStore,
) -> None:
    """Hot reload: the stored object is re-evaluated and the update names the new version."""
    processor = processing.Processor(store.build(), clock=lambda: T0)
    first = added(processor, privileged=True)
    assert first.state is not None
    assert processor.sweep(first.state, namespace_obj=None).outputs == []
    store.apply("baseline/unit", baseline_doc("v2.0", severity="critical"))
    processor.policy = store.build()
    swept = processor.sweep(first.state, namespace_obj=None)
    assert states(swept) == [("privileged", findings.Transition.UPDATED, "v2.0")]


def test_an_exception_document_waives_on_the_next_sweep(store: policy_store.PolicyStore) -> None:
    """Publishing an exception waives open findings without re-running checks."""
    processor = processing.Processor(store.build(), clock=lambda: T0)
    first = added(processor, privileged=True)
    assert first.state is not None
    source = EXCEPTION.format(expires="2030-01-01T00:00:00Z")
    store.apply("exception/legacy", document(policy.DocumentKind.EXCEPTION, "legacy", "x", source))
    processor.policy = store.build()
    swept = processor.sweep(first.state, namespace_obj=None)
    assert states(swept) == [("privileged", findings.Transition.WAIVED, "v1.0")]


def test_findings_an_exception_can_move_are_never_skipped_as_unchanged(
    store: policy_store.PolicyStore,
) -> None:
    """A resync of an object with an open finding is unchanged while no exception is in force;
    once one is, or while a finding still carries one, the resync goes to ``on_resource``, which
    waives the finding, and reopens it when the exception is withdrawn."""
    processor = processing.Processor(store.build(), clock=lambda: T0)
    resync = event(resources.Change.SYNCED, privileged=True)
    first = processor.on_resource(resync, previous=None, partition=0, namespace_obj=None)
    assert first.state is not None
    assert first.state.open

    def unchanged(state: processing.ObjectState) -> bool:
        loaded = processing.load_state(processing.encode_state(state))
        return processor.unchanged(loaded, resync, namespace_obj=None)

    assert unchanged(first.state)
    again = processor.on_resource(resync, previous=first.state, partition=0, namespace_obj=None)
    assert not again.changed
    assert again.outputs == []

    source = EXCEPTION.format(expires="2030-01-01T00:00:00Z")
    store.apply("exception/legacy", document(policy.DocumentKind.EXCEPTION, "legacy", "x", source))
    processor.policy = store.build()
    assert not unchanged(first.state)
    waived = processor.on_resource(resync, previous=first.state, partition=0, namespace_obj=None)
    assert states(waived) == [("privileged", findings.Transition.WAIVED, "v1.0")]
    assert waived.state is not None

    store.apply("exception/legacy", None)
    processor.policy = store.build()
    assert processor.policy.waivers == ()
    assert not unchanged(waived.state)  # the finding still carries the withdrawn exception
    reopened = processor.on_resource(resync, previous=waived.state, partition=0, namespace_obj=None)
    assert states(reopened) == [("privileged", findings.Transition.OPENED, "v1.0")]
    assert reopened.state is not None
    assert unchanged(reopened.state)


def test_a_sweep_leaves_an_object_without_findings_unloaded_under_the_same_policy(
    store: policy_store.PolicyStore,
) -> None:
    """Under the policy that evaluated it, a sweep leaves a passing object as it is without
    loading its stored copy; under a new version it re-evaluates it from that copy."""
    processor = processing.Processor(store.build(), clock=lambda: T0)
    first = added(processor, privileged=False)
    assert first.state is not None
    assert not first.state.open
    unreadable = msgspec.structs.replace(first.state, object=b"\xc1")  # not msgpack
    swept = processor.sweep(unreadable, namespace_obj=None)
    assert not swept.changed
    assert swept.outputs == []
    store.apply("baseline/unit", baseline_doc("v2.0"))
    processor.policy = store.build()
    with pytest.raises(msgspec.DecodeError):
        processor.sweep(unreadable, namespace_obj=None)
    assert processor.sweep(first.state, namespace_obj=None).changed


def test_an_invalid_document_is_rejected_and_the_previous_one_stays(
    store: policy_store.PolicyStore,
) -> None:
    """A document whose CEL does not compile raises PolicyError; v1.0 stays in force."""
    broken = SOURCE.format(version="v3.0", severity="high").replace("object.spec", "object.spec)")
    with pytest.raises(policy_store.PolicyError, match="baseline/unit"):
        store.apply("baseline/unit", document(policy.DocumentKind.BASELINE, "unit", "v3.0", broken))
    assert store.build().versions == {"unit": "v1.0"}
    store.apply("baseline/unit", None)
    assert store.build().versions == {}


def test_posture_counts_follow_objects_and_publish_only_changes(
    store: policy_store.PolicyStore,
) -> None:
    """Posture counts passing and failing objects; an unchanged tally publishes nothing new."""
    processor = processing.Processor(store.build(), clock=lambda: T0)
    bad = processor.on_resource(
        event(resources.Change.ADDED, privileged=True),
        previous=None,
        partition=0,
        namespace_obj=None,
    )
    processor.on_resource(
        event(resources.Change.ADDED, privileged=False, uid="u2"),
        previous=None,
        partition=1,
        namespace_obj=None,
    )
    snapshots = {o.key: envelope.unwrap(o.event) for o in processor.posture(only_changed=True)}
    cluster = snapshots["c1/cluster/c1"]
    assert isinstance(cluster, posture.PostureSnapshot)
    assert (cluster.passing, cluster.failing, cluster.failing_by_severity) == (1, 1, {"high": 1})
    assert 0 < cluster.score < 100
    assert set(snapshots) == {
        "c1/cluster/c1",
        "c1/baseline/unit",
        "c1/namespace/shop",
        "c1/control/unit:privileged",
    }
    assert processor.posture(only_changed=True) == []
    assert len(processor.posture(only_changed=False)) == 4
    processor.on_resource(
        event(resources.Change.DELETED, privileged=True),
        previous=bad.state,
        partition=0,
        namespace_obj=None,
    )
    after = {o.key: envelope.unwrap(o.event) for o in processor.posture(only_changed=True)}
    assert (after["c1/cluster/c1"].passing, after["c1/cluster/c1"].failing) == (1, 0)
    assert after["c1/cluster/c1"].score == 100.0


def test_records_that_are_not_resource_events_do_not_decode() -> None:
    """Missing headers, a wrong type or a mismatched key are decode errors with a reason."""
    with pytest.raises(codec.DecodeError, match="missing header"):
        processing.decode_resource([], b"{}", key=b"k")
    good = event(resources.Change.ADDED, privileged=False)
    wrapped = envelope.wrap(good, event_type=codec.resource_type(good.change), source="t")
    with pytest.raises(codec.DecodeError, match="does not match"):
        processing.decode_resource(wrapped.headers(), wrapped.data, key=b"c1/other")
    assert processing.decode_resource(wrapped.headers(), wrapped.data, key=b"c1/u1") == good
