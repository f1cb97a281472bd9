"""Processing one record: decode, evaluate, track, and say what to publish and what to store.

This is the stream processor without the stream: ``Processor`` turns a resource event (with
the object's previous state and its namespace) into the object's new state and the CloudEvents
to publish. ``app`` feeds it from faust and writes what it returns; nothing here does I/O, so
the same logic runs in unit tests, in the faust worker and in a re-evaluation sweep.

The per-object state keeps the normalised object (without status) so that a new policy version can
re-evaluate the inventory without re-reading the resources topic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import orjson

from kposture.evaluate.engine import tracking
from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.posture import tallying
from kposture.evaluate.stream import storing
from kposture.schemas import codec, common, deadletter, envelope, findings, resources, topics
from kposture.schemas import posture as posture_schema

SERVICE = "evaluate"
Clock = Callable[[], dt.datetime]
_S = TypeVar("_S")
_V = TypeVar("_V")


ObjectState = storing.ObjectState
"""What the table keeps per object (defined in ``storing``, with its table encoding)."""


def encode_state(state: ObjectState) -> bytes:
    """The table value of a state."""
    return storing.encode(state)


def decode_state(data: bytes) -> ObjectState:
    """A state from its table value."""
    return storing.decode(data)


def load_state(data: bytes) -> storing.Loaded:
    """A state from its table value, its findings left unexpanded until ``state()``."""
    return storing.load(data)


class Output(msgspec.Struct, frozen=True):
    """One record to publish: the logical topic, the key and the CloudEvent."""

    topic: topics.Topic
    key: str
    event: envelope.CloudEvent


class Step(msgspec.Struct, frozen=True):
    """The result of processing: the new state (``None``: delete the key) and the records.

    ``changed`` is false when the stored state is still exact, so nothing needs writing.
    """

    state: ObjectState | None
    outputs: list[Output]
    changed: bool = True


class Processor:
    """Evaluates objects under the policy in force and tracks their findings.

    ``policy`` may be swapped at any time (hot reload); ``tally`` accumulates posture for the
    partitions this worker owns.
    """

    def __init__(self, policy: policy_store.PolicySet, *, clock: Clock = common.utcnow) -> None:
        self.tally = tallying.Tally()
        self.policy = policy
        self.clock = clock
        self.surroundings: Callable[[str, str], tracking.Surroundings | None] = _no_surroundings
        """Gives a namespace's ``tracking.Surroundings`` for exposure (the app's inventory)."""

    @property
    def policy(self) -> policy_store.PolicySet:
        """The policy in force; setting it registers its codebook and re-aggregates posture."""
        return self._policy

    @policy.setter
    def policy(self, policy: policy_store.PolicySet) -> None:
        storing.register(
            policy.fingerprint,
            ((p.baseline, rule) for p in policy.engine.policies for rule in p.rules),
        )
        self._policy = policy
        self.tally.use(policy.meta)

    def on_resource(
        self,
        event: resources.ResourceEvent,
        *,
        previous: ObjectState | None,
        partition: int,
        namespace_obj: Mapping[str, Any] | None,
        inventory: Mapping[str, Any] | None = None,
    ) -> Step:
        """Process one resource event of the object whose previous state is ``previous``.

        ``inventory`` holds the views that ``needs_inventory`` names for this object's kind
        (``None`` for kinds without cross-object checks, which then do not run).
        """
        if event.change is resources.Change.DELETED:
            if previous is None:
                return Step(None, [])
            self._retally(previous, None)
            if not previous.open:
                return Step(None, [])
            context = self._context(
                event.cluster, event.ref, event.object, namespace_obj, event.observed_at
            )
            outcome = tracking.gone(previous.open, context)
            return Step(None, self._publish(outcome.transitions))
        return self._evaluate(
            event.cluster,
            event.ref,
            event.object,
            observed_at=event.observed_at,
            previous=previous,
            partition=partition,
            namespace_obj=namespace_obj,
            source_digest=event.digest,
            inventory=inventory,
        )

    def unchanged(
        self,
        previous: storing.Loaded,
        event: LazyResource | resources.ResourceEvent,
        *,
        namespace_obj: Mapping[str, Any] | None,
        inventory: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether ``on_resource`` would leave the ``previous`` state as it is and publish
        nothing.

        True only for an event that ``on_resource`` answers without reading its object: the
        same content under the same policy, namespace and inventory, and no open finding that
        an exception could move, as none is in force or carried. Most events of a stream are
        such (resyncs, status updates, redeliveries); this tells them apart with the event's
        object undecoded (``LazyResource``) and the state's findings unexpanded.

        Its one assumption: the priority stored with open findings is current, because the
        caller re-evaluates an object whose surroundings (exposing Services, privileged
        accounts) change, as the app does; ``on_resource`` would recompute it from them.
        """
        if event.change is resources.Change.DELETED:
            return False
        if previous.open and (previous.waived or self.policy.waivers):
            return False  # an exception may have expired, or come to apply: on_resource sees
        return _same_input(
            previous, event.digest, policy=self.policy, salt=_salt(namespace_obj, inventory)
        )

    def needs_inventory(self, ref: common.ObjectRef) -> frozenset[str]:
        """The inventory views the checks of ``ref``'s kind read (empty for most kinds)."""
        return self.policy.engine.needs(ref.api_version, ref.kind)

    def sweep(
        self,
        previous: ObjectState,
        *,
        namespace_obj: Mapping[str, Any] | None,
        inventory: Mapping[str, Any] | None = None,
    ) -> Step:
        """Bring a stored object up to the policy in force and the current time.

        Re-evaluates it if the policy's checks changed since it was evaluated, or (for an
        object with cross-object checks) if ``inventory`` changed; otherwise only re-applies
        exceptions and priority (an exception was published or expired). An object without
        open findings is then left as it is without loading its stored copy: a sweep after an
        exception's publication or expiry meets mostly such objects.
        """
        if not previous.open and _same_input(
            previous,
            previous.source_digest,
            policy=self.policy,
            salt=_salt(namespace_obj, inventory),
        ):
            return Step(previous, [], changed=False)  # as ``_evaluate`` answers, unloaded
        return self._evaluate(
            previous.cluster,
            previous.ref,
            previous.load_object(),
            observed_at=previous.observed_at,
            previous=previous,
            partition=previous.partition,
            namespace_obj=namespace_obj,
            source_digest=previous.source_digest,
            inventory=inventory,
        )

    def _evaluate(
        self,
        cluster: str,
        ref: common.ObjectRef,
        obj: Mapping[str, Any],
        *,
        observed_at: dt.datetime,
        previous: ObjectState | None,
        partition: int,
        namespace_obj: Mapping[str, Any] | None,
        source_digest: str,
        inventory: Mapping[str, Any] | None = None,
    ) -> Step:
        policy = self.policy
        salt = _salt(namespace_obj, inventory)
        # The tracking context (owner, exposure) is built only for an object with findings,
        # open or new: without either, ``refresh`` and ``track`` have nothing to do, and that
        # is the case of most events.
        if previous is not None and _same_input(previous, source_digest, policy=policy, salt=salt):
            # The same object under the same policy (an anti-entropy resync, a redelivery):
            # skip projecting, compressing and rewriting it; only time and exceptions can
            # have changed a finding.
            if not previous.open:
                return Step(previous, [], changed=False)
            context = self._context(cluster, ref, obj, namespace_obj, observed_at)
            outcome = tracking.refresh(previous.open, context)
            if not outcome.transitions and outcome.open == previous.open:
                return Step(previous, [], changed=False)
            state = msgspec.structs.replace(previous, open=outcome.open)
            self._retally(previous, state)
            return Step(state, self._publish(outcome.transitions))
        content, projected = policy.engine.digest_and_projection(obj)
        digest = f"{content}.{salt}"
        before = previous.open if previous is not None else ()
        if previous is not None and previous.digest == digest:
            passed = previous.passed
            if before:
                context = self._context(cluster, ref, obj, namespace_obj, observed_at)
                outcome = tracking.refresh(before, context)
            else:
                outcome = tracking.Outcome(open=(), transitions=[])
        else:
            triage = policy.engine.triage(
                obj,
                projected=projected,
                namespace_obj=namespace_obj,
                inventory=inventory,
                watched={finding.ident for finding in before} if before else (),
            )
            passed = triage.passed
            verdicts = [_verdicts.get(result) for result in triage.notable]
            if before or verdicts:
                context = self._context(cluster, ref, obj, namespace_obj, observed_at)
                outcome = tracking.track(before, verdicts, context)
            else:
                outcome = tracking.Outcome(open=(), transitions=[])
        stored = storing.encode_object(obj, ref)
        state = ObjectState(
            cluster=cluster,
            ref=ref,
            partition=partition,
            digest=digest,
            fingerprint=policy.fingerprint,
            observed_at=observed_at,
            object=stored.data,
            passed=passed,
            open=outcome.open,
            source_digest=source_digest,
            identity=stored.identity,
        )
        self._retally(previous, state)
        return Step(state, self._publish(outcome.transitions))

    def _context(
        self,
        cluster: str,
        ref: common.ObjectRef,
        obj: Mapping[str, Any],
        namespace_obj: Mapping[str, Any] | None,
        observed_at: dt.datetime,
    ) -> tracking.Context:
        """What ``tracking`` needs about the object; built only for objects with findings.

        It reads the clock too: most events have no finding to track, so they never do.
        """
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return tracking.Context(
            cluster=cluster,
            ref=ref,
            labels=labels if type(labels) is dict or isinstance(labels, Mapping) else {},
            observed_at=observed_at,
            now=self.clock(),
            owner=tracking.owner_of(obj, namespace_obj),
            exposure=tracking.exposure_of(
                obj,
                namespace_obj,
                self.surroundings(cluster, ref.namespace) if ref.namespace else None,
            ),
            waivers=self.policy.waivers,
        )

    def _retally(self, old: ObjectState | None, new: ObjectState | None) -> None:
        holder = new if new is not None else old
        if holder is None:
            return
        if (
            old is not None
            and new is not None
            and old.passed == new.passed
            and old.open == new.open
            and old.cluster == new.cluster
            and old.ref.namespace == new.ref.namespace
        ):
            return  # equal contributions, which ``Tally.replace`` would ignore
        self.tally.replace(holder.partition, contribution_of(old), contribution_of(new))

    def retally(self, states: Iterable[ObjectState], *, partition: int) -> None:
        """Rebuild one partition's posture from the table (after recovery or a sweep)."""
        self.tally.drop(partition)
        for state in states:
            self.tally.add(partition, contribution_of(state))

    def posture(self, *, only_changed: bool) -> list[Output]:
        """Posture snapshots of this processor's partitions (the changed ones, or all)."""
        return posture_outputs(self.tally.snapshots(now=self.clock(), only_changed=only_changed))

    def _publish(self, transitions: Iterable[findings.Finding]) -> list[Output]:
        return [
            Output(
                topics.Topic.FINDINGS,
                finding.key,
                envelope.wrap(
                    finding,
                    event_type=codec.finding_type(finding.state),
                    source=f"kposture://{finding.cluster}/{SERVICE}",
                    subject=finding.ref.subject,
                    time=finding.detected_at,
                ),
            )
            for finding in transitions
        ]


def _salt(namespace_obj: Mapping[str, Any] | None, inventory: Mapping[str, Any] | None) -> str:
    # What a state's digest ends with besides the object's content: the namespace labels
    # (namespaceSelector matches read them) and, for kinds with cross-object checks, the
    # inventory (a new or deleted NetworkPolicy must get past the "unchanged" shortcuts).
    salt = _namespace_salt(namespace_obj)
    if inventory is not None:
        salt += _inventory_salt(inventory)
    return salt


class _Evaluated(Protocol):
    """What ``_same_input`` reads of a stored state (``ObjectState`` or ``storing.Loaded``)."""

    @property
    def source_digest(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def digest(self) -> str: ...


def _same_input(
    state: _Evaluated, event_digest: str, *, policy: policy_store.PolicySet, salt: str
) -> bool:
    # A stored state was evaluated from the event's object (ingest's digest), under the
    # policy in force, with the same namespace labels and inventory (the ``salt`` its digest
    # ends with).
    return (
        bool(event_digest)
        and state.source_digest == event_digest
        and state.fingerprint == policy.fingerprint
        and state.digest.endswith(salt)
    )


class LazyResource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A resource event whose object is left undecoded until ``complete`` (``ResourceEvent``
    otherwise): most events of a stream leave their object's state as it is, and for those
    decoding the object is the largest part of decoding the event."""

    cluster: str
    change: resources.Change
    ref: common.ObjectRef
    object: msgspec.Raw
    digest: str
    observed_at: common.Timestamp

    @property
    def key(self) -> str:
        """The Kafka key: ``<cluster>/<uid>``."""
        return f"{self.cluster}/{self.ref.uid}"

    def complete(self) -> resources.ResourceEvent:
        """The event with its object decoded; ``codec.DecodeError`` if it is not an object."""
        try:
            obj = _OBJECT_JSON.decode(self.object)
        except msgspec.ValidationError as exc:
            raise codec.DecodeError(f"invalid ResourceEvent: {exc} - at `$.object`") from exc
        return resources.ResourceEvent(
            cluster=self.cluster,
            change=self.change,
            ref=self.ref,
            object=obj,
            digest=self.digest,
            observed_at=self.observed_at,
        )


_OBJECT_JSON = msgspec.json.Decoder(dict[str, Any], strict=True)


def decode_lazily(
    headers: Iterable[tuple[str, bytes]], value: bytes | None, *, key: bytes | None
) -> LazyResource:
    """``decode_resource`` with the object left undecoded (``LazyResource``), as strict.

    The event's envelope and every field but the object's content are checked here; the
    object is checked to be a JSON object, its content when ``complete`` decodes it.
    """
    kind = envelope.event_type(headers, value)
    assert value is not None  # ``event_type`` rejects a tombstone
    model = codec.model_for(kind)
    if model is not resources.ResourceEvent:
        raise codec.DecodeError(f"expected a resource event, got {model.__name__}")
    event = codec.decode(value, LazyResource, name="ResourceEvent")
    if memoryview(event.object)[:1].tobytes() != b"{":
        event.complete()  # raises the error that decoding it whole would have raised
    if key != event.key.encode():
        raise codec.DecodeError(f"record key {key!r} does not match the event's {event.key!r}")
    return event


def decode_resource(
    headers: Iterable[tuple[str, bytes]], value: bytes | None, *, key: bytes | None
) -> resources.ResourceEvent:
    """A resource event from a record; ``codec.DecodeError`` if it is anything else.

    The record key must be the event's ``<cluster>/<uid>``: the object's state is stored under
    it, so a mismatch would split one object's history. The straightforward decoding: the
    app uses ``decode_lazily``, which the tests hold to this one.
    """
    model = envelope.decode_data(headers, value)
    if type(model) is not resources.ResourceEvent:
        raise codec.DecodeError(f"expected a resource event, got {type(model).__name__}")
    if key != model.key.encode():
        raise codec.DecodeError(f"record key {key!r} does not match the event's {model.key!r}")
    return model


def dead_letter(
    reason: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Mapping[str, bytes],
    now: dt.datetime,
) -> Output:
    """The DLQ record for a record that could not be decoded or evaluated."""
    letter = deadletter.DeadLetter(
        reason=reason,
        service=SERVICE,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=dict(headers),
        failed_at=now,
    )
    event = envelope.wrap(
        letter, event_type=codec.DEADLETTER_TYPE, source=f"kposture://-/{SERVICE}", time=now
    )
    return Output(topics.Topic.DLQ, key.decode(errors="replace") if key else "", event)


def namespace_key(cluster: str, namespace: str) -> str:
    """The key of a namespace object in the namespaces table."""
    return f"{cluster}/{namespace}"


def _namespace_salt(namespace_obj: Mapping[str, Any] | None) -> str:
    # namespaceSelector matches read the namespace's labels: a label change must re-evaluate.
    if namespace_obj is None:
        return _NO_NAMESPACE_SALT
    return _namespace_salts.get(namespace_obj)


def _labels_salt(namespace_obj: Mapping[str, Any]) -> str:
    labels = (namespace_obj.get("metadata") or {}).get("labels") or {}
    return _hashed(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS))


def _inventory_salt(inventory: Mapping[str, Any]) -> str:
    return _inventory_salts.get(inventory)


def _views_salt(inventory: Mapping[str, Any]) -> str:
    # Prefixed so a state digest with an inventory never ends like one without.
    return "i" + _hashed(orjson.dumps(inventory, option=orjson.OPT_SORT_KEYS))


def _hashed(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class _ByIdentity(Generic[_S, _V]):
    """``compute(source)``, remembered by the identity of ``source``.

    For values that every event needs, computed from one of a few objects that come back
    again and again, unchanged and never mutated: a namespace object or a cluster's inventory
    (which the app hands over as is until they change), or a check result (most are shared
    by every object they fit). Bounded: it starts over once it holds ``kept`` entries.
    """

    def __init__(self, compute: Callable[[_S], _V], *, kept: int = 4096) -> None:
        self._compute = compute
        self._kept = kept
        self._entries: dict[int, tuple[_S, _V]] = {}

    def get(self, source: _S) -> _V:
        """The value for ``source``, computed on first sight."""
        entry = self._entries.get(id(source))
        if entry is not None and entry[0] is source:
            return entry[1]
        value = self._compute(source)
        if len(self._entries) >= self._kept:
            self._entries.clear()
        # The entry holds the source, so its id cannot be reused while the entry exists.
        self._entries[id(source)] = (source, value)
        return value


_namespace_salts = _ByIdentity(_labels_salt)
_inventory_salts = _ByIdentity(_views_salt)
_verdicts = _ByIdentity(tracking.Verdict.of)
_NO_NAMESPACE_SALT = _hashed(b"{}")


def contribution_of(state: ObjectState | None) -> tallying.Contribution | None:
    """What a stored state adds to the posture tally (``None`` for no state)."""
    if state is None:
        return None
    return tallying.contribution(
        cluster=state.cluster,
        namespace=state.ref.namespace,
        passed=state.passed,
        open_findings=state.open,
    )


def _no_surroundings(cluster: str, namespace: str) -> tracking.Surroundings | None:
    return None


def posture_outputs(snapshots: Iterable[posture_schema.PostureSnapshot]) -> list[Output]:
    """The records that publish posture snapshots."""
    return [
        Output(
            topics.Topic.POSTURE,
            snapshot.key,
            envelope.wrap(
                snapshot,
                event_type=codec.POSTURE_TYPE,
                source=f"kposture://{snapshot.cluster}/{SERVICE}",
                subject=f"{snapshot.scope}/{snapshot.scope_key}",
                time=snapshot.computed_at,
            ),
        )
        for snapshot in snapshots
    ]
