"""The stream processor's fast paths give exactly what the straightforward code gives.

Compiled projections against the generic walk, the seeded digest against ``digest``, the
codebook's cached facts against a table round trip, and the lazily built tracking context
against the findings it must still produce.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import pytest

from kposture.evaluate import synthetic
from kposture.evaluate.engine import projection, tracking
from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.stream import processing, storing
from kposture.schemas import codec, common, envelope, findings, posture, resources

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
KEYS = ("a", "b", "c", "*", projection.PRESENT, "spec")


class View(Mapping[str, Any]):
    """A mapping that is not a dict (the projection must treat it like one)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def random_trie(rng: random.Random, depth: int) -> projection.Trie:
    if depth == 0 or rng.random() < 0.3:
        return {}
    return {rng.choice(KEYS): random_trie(rng, depth - 1) for _ in range(rng.randint(1, 3))}


def random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth == 0 or roll < 0.2:
        return rng.choice([1, "s", None, True, 2.5])
    if roll < 0.6:
        entries = {rng.choice(KEYS): random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))}
        return View(entries) if roll < 0.25 else entries
    if roll < 0.65:
        return tuple(random_value(rng, depth - 1) for _ in range(rng.randint(0, 3)))
    return [random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]


def shape(value: Any) -> Any:
    """The value with its types and key order made comparable."""
    if isinstance(value, Mapping):
        return ("map", type(value).__name__, [(key, shape(sub)) for key, sub in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [shape(item) for item in value])
    return ("value", repr(value))


def test_compiled_projections_equal_the_generic_walk() -> None:
    """Same values, same key order, same container types, for arbitrary tries and values."""
    rng = random.Random(7)
    for _ in range(3000):
        trie = None if rng.random() < 0.05 else random_trie(rng, 4)
        compiled = projection.compile(trie)
        for _ in range(4):
            value = random_value(rng, 5)
            assert shape(compiled(value)) == shape(projection.project(value, trie))


def test_the_seeded_digest_equals_digest() -> None:
    rng = random.Random(3)
    digest = projection.digester(salt="fingerprint")
    for obj in synthetic.fleet(200, seed=rng.randrange(99)).objects:
        assert digest(obj) == projection.digest(obj, salt="fingerprint")


@pytest.fixture(scope="module")
def policy() -> policy_store.PolicySet:
    return policy_store.PolicyStore(["pss-restricted", "cis-1.12"]).build()


def test_engine_digests_are_those_of_the_generic_projection(
    policy: policy_store.PolicySet,
) -> None:
    """The digest is that of the generic projection over what the rules that run read.

    Stored digests should not move needlessly: a new digest re-evaluates the object. For an
    object that a workload controls, only the rules that read the object itself run (its
    pod-template checks are rolled up); for a kind without rules nothing is read at all.
    """
    engine = policy.engine
    for obj in synthetic.fleet(400, seed=5).objects:
        digest, projected = engine.digest_and_projection(obj)
        plan = engine._plan(obj["apiVersion"], obj["kind"])
        metadata = obj["metadata"]
        scope: list[Any] = [metadata.get("namespace"), metadata.get("labels")]
        controlled = plan.template_path is not None and any(
            r.get("controller") for r in metadata.get("ownerReferences", ())
        )
        if controlled:
            scope.append(True)
        trie = plan.object_trie if controlled else plan.trie
        expected = projection.project(obj, trie) if plan.rules and trie != {} else None
        assert shape(projected) == shape(expected)
        assert digest == projection.digest([scope, expected], salt=engine.fingerprint)


def test_triage_keeps_what_tracking_needs_of_every_result(policy: policy_store.PolicySet) -> None:
    """``triage`` equals sorting ``evaluate``'s results, with and without watched checks."""
    engine = policy.engine
    rng = random.Random(11)
    fleet = synthetic.fleet(600, seed=2)
    idents = sorted({r.ident for obj in fleet.objects for r in engine.evaluate(obj)})
    bad = (common.Result.FAIL, common.Result.ERROR)
    for obj in fleet.objects:
        results = engine.evaluate(obj)
        watched = set(rng.sample(idents, 3)) if rng.random() < 0.5 else set()
        watched |= {
            r.ident for r in results if r.result is common.Result.SKIP and rng.random() < 0.2
        }
        _, projected = engine.digest_and_projection(obj)
        triage = engine.triage(obj, projected=projected, watched=watched)
        assert triage.passed == tuple(r.ident for r in results if r.result is common.Result.PASS)
        assert triage.notable == [r for r in results if r.result in bad or r.ident in watched]


def test_a_controlled_pod_digests_only_what_can_change_its_verdicts(
    policy: policy_store.PolicySet,
) -> None:
    """A ReplicaSet's Pod: pod-spec edits do not re-evaluate it; losing its controller does."""
    engine = policy.engine
    pod = next(
        o
        for o in synthetic.fleet(200, seed=1).objects
        if o["kind"] == "Pod" and o["metadata"].get("ownerReferences")
    )
    digest = engine.digest(pod)
    edited = copy.deepcopy(pod)
    edited["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    assert engine.digest(edited) == digest
    orphan = copy.deepcopy(edited)
    del orphan["metadata"]["ownerReferences"]
    assert engine.digest(orphan) != digest
    assert any(
        r.check_id == "privileged"
        for r in engine.evaluate(orphan)
        if r.result is common.Result.FAIL
    )
    relabelled = copy.deepcopy(pod)
    relabelled["metadata"]["labels"] = {**relabelled["metadata"].get("labels", {}), "x": "y"}
    assert engine.digest(relabelled) != digest


def open_finding(**changes: Any) -> tracking.OpenFinding:
    fields: dict[str, Any] = {
        "baseline": "pss-restricted",
        "check": "privileged",
        "baseline_version": "v1.30",
        "title": "",
        "controls": (),
        "severity": common.Severity.HIGH,
        "result": common.Result.FAIL,
        "message": "",
        "path": "",
        "priority": 60,
        "first_seen": T0,
    }
    fields.update(changes)
    return tracking.OpenFinding(**fields)


def test_states_with_unusual_findings_survive_the_table_encoding(
    policy: policy_store.PolicySet,
) -> None:
    """Static texts come back from the codebook; anything else is stored as it is."""
    processor = processing.Processor(policy, clock=lambda: T0)  # registers the codebook
    book = storing._CODEBOOKS[policy.fingerprint]
    static = book.static["pss-restricted", "privileged"]
    path = "spec.template." + static.path
    usual = open_finding(
        title=static.title,
        controls=static.controls,
        message=static.message,
        path=path,
        fix_risk=static.fix_risk,
    )
    waiver = findings.Waiver(name="w", reason="r", owner="o", ticket="t", expires=None)
    opened = (
        usual,
        open_finding(
            check="hostPorts",
            title=book.static["pss-restricted", "hostPorts"].title,
            controls=book.static["pss-restricted", "hostPorts"].controls,
            message="port 80 is a host port",
            path="spec.template.spec.containers[0].ports",
            fix_risk=book.static["pss-restricted", "hostPorts"].fix_risk,
            waiver=waiver,
        ),
        open_finding(check="not-in-the-policy", message="kept", path="kept.path"),
    )
    ref = common.ObjectRef(api_version="apps/v1", kind="Deployment", name="d", uid="u")
    state = storing.ObjectState(
        cluster="c1",
        ref=ref,
        partition=3,
        digest="d",
        fingerprint=policy.fingerprint,
        observed_at=T0,
        object=storing.encode_object({"kind": "Deployment", "status": {"x": 1}}, ref).data,
        passed=(book.idents[0], book.idents[2]),
        open=opened,
    )
    data = processing.encode_state(state)
    decoded = processing.decode_state(data)
    assert decoded.open[:2] == opened[:2]
    # Not in the codebook: the varying texts are kept, title and controls are not stored.
    assert (decoded.open[2].message, decoded.open[2].path) == ("kept", "kept.path")
    assert decoded.passed == state.passed
    assert decoded.load_object() == {"kind": "Deployment"}
    assert processing.encode_state(decoded) == data
    assert processor.policy is policy
    # What the app's index of keys reads without decoding the rest.
    assert storing.scope_of(data) == (3, "c1", "")
    placed = msgspec.structs.replace(state, ref=msgspec.structs.replace(ref, namespace="shop"))
    assert storing.scope_of(processing.encode_state(placed)) == (3, "c1", "shop")


@pytest.mark.parametrize(
    "metadata",
    [
        {"name": "p", "namespace": "shop", "uid": "u1", "resourceVersion": "7", "labels": {}},
        {"name": "p", "namespace": "shop"},  # no uid nor resourceVersion: none added back
        {"name": "other", "uid": "u2", "resourceVersion": ""},  # unlike ref: kept as is
        {},
    ],
)
def test_a_stored_object_leaves_out_what_its_ref_holds_and_loads_back_exactly(
    metadata: dict[str, Any],
) -> None:
    ref = common.ObjectRef(
        api_version="v1", kind="Pod", name="p", uid="u1", namespace="shop", resource_version="7"
    )
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"a": 1}}
    stored = storing.encode_object({**obj, "status": {"phase": "Running"}}, ref)
    identity = {"name": "p", "namespace": "shop", "uid": "u1", "resourceVersion": "7"}
    equal = {f for f, v in identity.items() if metadata.get(f) == v}
    kept = msgspec.msgpack.decode(stored.data)
    assert "status" not in kept
    # The fields equal to ref's are left out of the bytes; the others stay.
    assert kept["metadata"] == {f: v for f, v in metadata.items() if f not in equal}
    assert stored.identity.bit_count() == len(equal)
    state = storing.ObjectState(
        cluster="c1",
        ref=ref,
        partition=0,
        digest="d",
        fingerprint="f",
        observed_at=T0,
        object=stored.data,
        identity=stored.identity,
    )
    decoded = processing.decode_state(processing.encode_state(state))
    assert decoded.load_object() == obj
    assert obj["metadata"] == metadata  # the caller's object is left alone


def pod_event(*, privileged: bool, version: int, namespace: str = "shop") -> Any:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace, "resourceVersion": str(version)},
        "spec": {"containers": [{"name": "c", "securityContext": {"privileged": privileged}}]},
    }
    ref = common.ObjectRef(api_version="v1", kind="Pod", name="p", uid="u1", namespace=namespace)
    return resources.ResourceEvent(
        cluster="c1",
        change=resources.Change.MODIFIED,
        ref=ref,
        object=obj,
        digest=synthetic.source_digest(obj),
        observed_at=T0,
    )


def test_open_findings_still_follow_the_namespace_criticality(
    policy: policy_store.PolicySet,
) -> None:
    """The context is built only for objects with findings, and then it is exact."""
    reads: list[dt.datetime] = []

    def clock() -> dt.datetime:
        reads.append(T0)
        return T0

    processor = processing.Processor(policy, clock=clock)
    namespace: dict[str, Any] = {"metadata": {"name": "shop", "labels": {}}}
    first = processor.on_resource(
        pod_event(privileged=True, version=1), previous=None, partition=0, namespace_obj=namespace
    )
    assert first.outputs
    assert first.state is not None
    before = {f.check: f.priority for f in first.state.open}
    namespace = {"metadata": {"name": "shop", "labels": {tracking.CRITICALITY_LABEL: "critical"}}}
    again = processor.on_resource(
        pod_event(privileged=True, version=1),
        previous=first.state,
        partition=0,
        namespace_obj=namespace,
    )
    assert again.state is not None
    after = {f.check: f.priority for f in again.state.open}
    assert after == {check: min(100, score + 15) for check, score in before.items()}
    assert {o.event.type for o in again.outputs} == {"io.kposture.finding.updated.v1"}

    # An object without findings needs no context: the clock is not even read.
    reads.clear()
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    event = resources.ResourceEvent(
        cluster="c1",
        change=resources.Change.ADDED,
        ref=common.ObjectRef(api_version="v1", kind="ConfigMap", name="c", uid="u2"),
        object=config,
        digest=synthetic.source_digest(config),
        observed_at=T0,
    )
    clean = processor.on_resource(event, previous=None, partition=0, namespace_obj=None)
    assert clean.state is not None
    assert not clean.state.open
    assert not clean.outputs
    assert not reads


@pytest.mark.parametrize(
    "digest", ["", "ab12", "AB12", "abc", "not hex", "0" * 64, "e3b0c442.98fc"]
)
def test_digests_survive_the_table_encoding_whatever_their_form(digest: str) -> None:
    ref = common.ObjectRef(api_version="v1", kind="ConfigMap", name="c", uid="u", namespace="n")
    state = storing.ObjectState(
        cluster="c1",
        ref=ref,
        partition=1,
        digest=digest,
        fingerprint=digest,
        observed_at=T0,
        object=b"\x80",
        source_digest=digest,
    )
    decoded = processing.decode_state(processing.encode_state(state))
    assert (decoded.digest, decoded.fingerprint, decoded.source_digest) == (digest,) * 3


def test_a_state_written_before_packed_digests_and_identity_bits_still_decodes() -> None:
    # The table layout of earlier releases: digests as text, no identity field.
    legacy = msgspec.msgpack.encode(
        [
            "c1",
            ["v1", "ConfigMap", "c", "u", "n", "5"],
            2,
            "d1.s1",
            "f" * 32,
            T0,
            msgspec.msgpack.encode({"metadata": {"name": "c", "uid": "u"}, "data": {"k": "v"}}),
            "a" * 64,
            None,
            [],
            [],
        ]
    )
    state = processing.decode_state(legacy)
    assert (state.digest, state.fingerprint, state.source_digest) == ("d1.s1", "f" * 32, "a" * 64)
    assert state.identity == 0
    assert state.load_object() == {"metadata": {"name": "c", "uid": "u"}, "data": {"k": "v"}}


def record(event: resources.ResourceEvent) -> tuple[list[tuple[str, bytes]], bytes]:
    """The headers and value ingest publishes for ``event``."""
    wrapped = envelope.wrap(
        event, event_type=codec.resource_type(event.change), source="kposture://c/ingest"
    )
    return wrapped.headers(), wrapped.data


def test_an_event_decoded_lazily_completes_to_the_event_decoded_whole() -> None:
    """``decode_lazily(...).complete()`` is ``decode_resource``, and fails where it fails."""
    fleet = synthetic.fleet(60, seed=3)
    for event in synthetic.added(fleet):
        headers, value = record(event)
        key = event.key.encode()
        lazy = processing.decode_lazily(headers, value, key=key)
        assert lazy.complete() == processing.decode_resource(headers, value, key=key) == event
    event = synthetic.added(fleet)[0]
    headers, value = record(event)
    key = event.key.encode()
    fields = msgspec.json.decode(value)
    broken = [
        (headers, msgspec.json.encode({**fields, "object": [fields["object"]]})),
        (headers, msgspec.json.encode({**fields, "object": "text"})),
        (headers, msgspec.json.encode({**fields, "change": "created"})),
        (headers, msgspec.json.encode({**fields, "extra": 1})),
        (headers, value[:-1]),
        ([h for h in headers if h[0] != "ce_type"], value),
    ]
    for bad_headers, bad_value in broken:
        with pytest.raises(codec.DecodeError) as whole:
            processing.decode_resource(bad_headers, bad_value, key=key)
        with pytest.raises(codec.DecodeError) as lazily:
            processing.decode_lazily(bad_headers, bad_value, key=key)
        assert lazily.value.reason == whole.value.reason
    with pytest.raises(codec.DecodeError, match="does not match"):
        processing.decode_lazily(headers, value, key=b"bench/other")
    other = envelope.wrap(
        posture_snapshot(), event_type=codec.POSTURE_TYPE, source="kposture://c/evaluate"
    )
    with pytest.raises(codec.DecodeError, match="expected a resource event"):
        processing.decode_lazily(other.headers(), other.data, key=key)


def posture_snapshot() -> posture.PostureSnapshot:
    """A record of another model than resource events."""
    return posture.PostureSnapshot(
        cluster="c",
        scope=posture.Scope.CLUSTER,
        scope_key="c",
        passing=1,
        failing=0,
        waived=0,
        failing_by_severity={},
        score=100.0,
        computed_at=T0,
    )


def test_unchanged_says_exactly_when_an_event_would_leave_its_state_alone(
    policy: policy_store.PolicySet,
) -> None:
    """Over a stream of changes, status updates, resyncs and deletes, ``unchanged`` is true
    only where ``on_resource`` stores nothing and publishes nothing, and with no exception in
    force it is true for every such event, of objects with open findings too (the events it
    exists to skip)."""
    processor = processing.Processor(policy, clock=lambda: T0)
    fleet = synthetic.fleet(300, seed=5)
    table: dict[str, bytes] = {}
    for event in synthetic.added(fleet):
        step = processor.on_resource(event, previous=None, partition=0, namespace_obj=None)
        assert step.state is not None
        table[event.key] = processing.encode_state(step.state)
    mix = (("changed", 0.4), ("status", 0.3), ("resync", 0.3))
    skipped = skipped_open = 0
    for _, event in synthetic.updates(fleet, 1500, seed=6, mix=mix):
        raw = table.get(event.key)
        assert raw is not None
        headers, value = record(event)
        lazy = processing.decode_lazily(headers, value, key=event.key.encode())
        loaded = processing.load_state(raw)
        previous = loaded.state()
        says = processor.unchanged(loaded, lazy, namespace_obj=None)
        step = processor.on_resource(event, previous=previous, partition=0, namespace_obj=None)
        quiet = not step.changed and not step.outputs
        if says:
            skipped += 1
            skipped_open += bool(previous.open)
            assert quiet, event.key
        elif quiet:
            pytest.fail(f"{event.key}: left alone by on_resource, not by unchanged")
        if step.changed and step.state is not None:
            table[event.key] = processing.encode_state(step.state)
    assert skipped > 300
    assert skipped_open > 60
    deleted = msgspec.structs.replace(event, change=resources.Change.DELETED)
    headers, value = record(deleted)
    lazy = processing.decode_lazily(headers, value, key=deleted.key.encode())
    stored = processing.load_state(table[deleted.key])
    assert not processor.unchanged(stored, lazy, namespace_obj=None)
