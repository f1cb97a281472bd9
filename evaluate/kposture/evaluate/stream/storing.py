"""The per-object state of the evaluator and its compact table encoding.

Memory is the constraint here: the ``objects`` table holds one state per tracked object
(≤ 150 MiB per 100 000 objects, about 1.5 KB each, all overheads included). Encoded plainly,
the open findings dominate: each repeats its check's title, controls, static message and
path (~300 bytes), and the passing checks repeat their names (~400 bytes per pod).

Those texts are the same for every object evaluated under one policy, so the table encoding
refers to them through a *codebook* of the policy that produced the state (its fingerprint is
in the state): passing checks become a bitmask over the codebook's checks, and a finding keeps
inline only what varies by object (result, priority, first_seen, exception, and a message or
path when it is not the check's static one). The processor registers the codebook of every
policy it runs, so within a process decoding is exact. A state whose policy is not registered
(a worker restarted after a policy change, before the sweep re-evaluated it) decodes with
empty titles and controls and no passes; the sweep re-evaluates exactly those states, since
their fingerprint differs from the policy in force.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import msgspec

from kposture.evaluate.engine import tracking, workloads
from kposture.schemas import common, findings

_CODEBOOKS_KEPT = 16  # policies remembered per process; a policy change adds one


class ObjectState(msgspec.Struct, kw_only=True):
    """What the table keeps per object (key ``<cluster>/<uid>``).

    ``digest`` covers what the checks read, the policy fingerprint and the namespace labels:
    when it is unchanged, re-running the checks cannot change a verdict. ``partition`` is the
    source partition, so a sweep knows which objects are its own. ``passed`` lists the checks
    that pass, for posture.
    """

    cluster: str
    ref: common.ObjectRef
    partition: int
    digest: str
    fingerprint: str
    observed_at: common.Timestamp
    object: bytes  # msgpack of the last normalised object, without its status
    source_digest: str = ""  # ingest's digest of the object: equal means nothing changed
    passed: tuple[tuple[str, str], ...] = ()
    open: tuple[tracking.OpenFinding, ...] = ()
    # The metadata fields left out of ``object`` because ``ref`` holds them (``StoredObject``).
    identity: int = 0

    def load_object(self) -> dict[str, Any]:
        """The stored object (without its status), with the metadata ``ref`` holds."""
        loaded: dict[str, Any] = _OBJECT_DECODER.decode(self.object)
        if self.identity:
            metadata = loaded["metadata"]  # kept, maybe emptied, when a field was left out
            for bit, field in enumerate(_IDENTITY_FIELDS):
                if self.identity >> bit & 1:
                    metadata[field] = _ref_value(self.ref, field)
        return loaded


class StoredObject(NamedTuple):
    """An object as a state keeps it: ``data`` and the ``identity`` bits it left out."""

    data: bytes
    identity: int


class _Static(msgspec.Struct, frozen=True):
    """What a check's findings share: everything but the per-object values."""

    title: str
    controls: tuple[str, ...]
    message: str
    path: str  # as written against the Pod view for podSpec checks
    pod_spec: bool
    fix_risk: findings.Risk | None


class _Facts(NamedTuple):
    """What a check's findings share on objects of one kind (``_Static`` with the real path)."""

    title: str
    controls: tuple[str, ...]
    message: str
    path: str  # in the object itself, under its pod template for podSpec checks
    fix_risk: findings.Risk | None


_NO_FACTS = _Facts("", (), "", "", None)
_OUTCOMES_KEPT = 4096  # bounded: distinct outcomes (of a kind), not objects
_KINDS_KEPT = 256  # (apiVersion, kind) pairs come from the stream


class Codebook:
    """The checks of one policy, in a fixed order, with what their findings share."""

    def __init__(self, fingerprint: str, checks: Iterable[tuple[tuple[str, str], _Static]]):
        self.fingerprint = fingerprint
        entries = list(checks)
        self.idents = tuple(ident for ident, _ in entries)
        self.static = dict(entries)
        self.position = {ident: n for n, ident in enumerate(self.idents)}
        self._passed: dict[int, tuple[tuple[str, str], ...]] = {}
        self._masks: dict[tuple[tuple[str, str], ...], int | None] = {}
        self._facts: dict[tuple[str, str], dict[tuple[str, str], _Facts]] = {}

    def mask(self, passed: Iterable[tuple[str, str]]) -> int | None:
        """The bitmask of ``passed``; ``None`` if a check is not in this policy."""
        if type(passed) is not tuple:
            return self._mask(passed)
        # Objects of a kind pass alike, and every state written needs its mask: remember them.
        try:
            return self._masks[passed]
        except KeyError:
            bits = self._masks[passed] = self._mask(passed)
            if len(self._masks) > _OUTCOMES_KEPT:
                self._masks.clear()
            return bits

    def _mask(self, passed: Iterable[tuple[str, str]]) -> int | None:
        bits = 0
        for ident in passed:
            position = self.position.get(ident)
            if position is None:
                return None
            bits |= 1 << position
        return bits

    def facts(self, api_version: str, kind: str) -> dict[tuple[str, str], _Facts]:
        """What the findings of each check share on objects of ``kind``, by check."""
        found = self._facts.get((api_version, kind))
        if found is None:
            found = {
                ident: _Facts(
                    static.title,
                    static.controls,
                    static.message,
                    _real_path(static, api_version, kind),
                    static.fix_risk,
                )
                for ident, static in self.static.items()
            }
            if len(self._facts) < _KINDS_KEPT:
                self._facts[api_version, kind] = found
        return found

    def unmask(self, bits: int) -> tuple[tuple[str, str], ...]:
        """The passing checks of a bitmask (shared tuples: objects of a kind pass alike)."""
        found = self._passed.get(bits)
        if found is None:
            found = tuple(i for n, i in enumerate(self.idents) if bits >> n & 1)
            if len(self._passed) < _OUTCOMES_KEPT:
                self._passed[bits] = found
        return found


_CODEBOOKS: collections.OrderedDict[str, Codebook] = collections.OrderedDict()


def register(fingerprint: str, rules: Iterable[Any]) -> None:
    """Remember the codebook of a policy (``engine.Engine``'s ``policies``' rules).

    ``rules`` are ``(baseline, rule)`` pairs. A process-wide cache rather than a parameter
    because ``decode_state`` is called from places (sweeps, tests) that hold no policy.
    """
    if fingerprint in _CODEBOOKS:
        _CODEBOOKS.move_to_end(fingerprint)
        return
    entries = []
    for baseline, rule in rules:
        check = rule.check
        static = _Static(
            title=check.title,
            controls=tuple(check.controls),
            message=rule.message,
            path=check.path,
            pod_spec=str(check.target) == "podSpec",
            fix_risk=check.fix.risk if check.fix is not None else None,
        )
        entries.append(((baseline, check.id), static))
    _CODEBOOKS[fingerprint] = Codebook(fingerprint, entries)
    while len(_CODEBOOKS) > _CODEBOOKS_KEPT:
        _CODEBOOKS.popitem(last=False)


# A finding as stored: (baseline, check, baseline_version, severity, result, message or None,
# path or None, priority, first_seen, waiver); None means "the check's static one".
_Compact = tuple[
    str,
    str,
    str,
    common.Severity,
    common.Result,
    str | None,
    str | None,
    int,
    common.Timestamp,
    findings.Waiver | None,
]


class _Stored(msgspec.Struct, array_like=True):
    cluster: str
    ref: tuple[str, str, str, str, str, str]
    partition: int
    digest: str
    # ``str | bytes`` (bytes: a hex digest packed by ``_pack``), which msgspec can only decode
    # untyped: msgpack tells a str from bytes.
    fingerprint: Any
    observed_at: common.Timestamp
    object: bytes
    source_digest: Any
    passed: int | None  # bitmask over the codebook; None: listed in ``passed_list``
    passed_list: tuple[tuple[str, str], ...]
    open: tuple[_Compact, ...]
    identity: int = 0  # appended later: states written before it decode with 0


class _Head(msgspec.Struct, array_like=True):
    # The leading fields of ``_Stored``: msgspec ignores the trailing ones, so a sweep can tell
    # which partition a state belongs to without decoding its findings and passes.
    cluster: str
    ref: tuple[str, str, str, str, str, str]
    partition: int


_ENCODER = msgspec.msgpack.Encoder()
_STORED_DECODER = msgspec.msgpack.Decoder(_Stored)
_HEAD_DECODER = msgspec.msgpack.Decoder(_Head)
_OBJECT_DECODER = msgspec.msgpack.Decoder(dict[str, Any])


def encode_object(obj: Mapping[str, Any], ref: common.ObjectRef) -> StoredObject:
    """The stored copy of an object: msgpack, without its status or what ``ref`` holds.

    Status is left out: ingest's digest ignores it, so a status-only change is never
    re-evaluated and no check may depend on it. So are the metadata's name, namespace, uid
    and resourceVersion where they equal ``ref``'s (about 100 bytes of a typical object):
    ``identity`` says which, and ``ObjectState.load_object`` puts them back. Not compressed:
    zlib costs ~20 us per object (more than evaluating most kinds) and saves only ~300 bytes
    of a typical one.
    """
    metadata = obj.get("metadata")
    identity = 0
    if type(metadata) is dict:
        # Unrolled: this runs for every changed object.
        get = metadata.get
        if ref.name and get("name") == ref.name:
            identity = 1
        if ref.namespace and get("namespace") == ref.namespace:
            identity |= 2
        if ref.uid and get("uid") == ref.uid:
            identity |= 4
        if ref.resource_version and get("resourceVersion") == ref.resource_version:
            identity |= 8
    if not identity and "status" not in obj:
        return StoredObject(_ENCODER.encode(obj), 0)
    stored = dict(obj)  # a copy: the caller's object is left alone
    stored.pop("status", None)
    if identity:
        kept = dict(stored["metadata"])
        for bit, field in enumerate(_IDENTITY_FIELDS):
            if identity >> bit & 1:
                del kept[field]
        stored["metadata"] = kept
    return StoredObject(_ENCODER.encode(stored), identity)


_IDENTITY_FIELDS = ("name", "namespace", "uid", "resourceVersion")  # bit n: field n


def _ref_value(ref: common.ObjectRef, field: str) -> str:
    if field == "name":
        return ref.name
    if field == "namespace":
        return ref.namespace
    if field == "uid":
        return ref.uid
    return ref.resource_version


def encode(state: ObjectState) -> bytes:
    """The table value of a state."""
    book = _CODEBOOKS.get(state.fingerprint)
    bits = book.mask(state.passed) if book is not None else None
    ref = state.ref
    stored = _Stored(
        cluster=state.cluster,
        ref=(ref.api_version, ref.kind, ref.name, ref.uid, ref.namespace, ref.resource_version),
        partition=state.partition,
        digest=state.digest,
        fingerprint=_fingerprint_packed(state.fingerprint),
        observed_at=state.observed_at,
        object=state.object,
        source_digest=_pack(state.source_digest),
        passed=bits,
        passed_list=state.passed if bits is None else (),
        open=_compact_all(state.open, book, ref.api_version, ref.kind) if state.open else (),
        identity=state.identity,
    )
    return _ENCODER.encode(stored)


def scope_of(data: bytes) -> tuple[int, str, str]:
    """The source partition, cluster and namespace of an encoded state (cheaper than
    ``decode``)."""
    head = _HEAD_DECODER.decode(data)
    return head.partition, head.cluster, head.ref[4]


def decode(data: bytes) -> ObjectState:
    """A state from its table value."""
    return load(data).state()


class Loaded:
    """A table value decoded without expanding its findings: what tells an unchanged event
    (``source_digest``, ``fingerprint``, ``digest``, how many findings are open and whether
    one carries an exception), and ``state()`` for the whole state.

    An object with open findings keeps about a dozen; expanding them costs 20 us of the 26 us
    that decoding such a state takes, and an event that changes nothing needs none of it.
    """

    __slots__ = ("_stored", "digest", "fingerprint", "open", "source_digest", "waived")

    def __init__(self, stored: _Stored) -> None:
        self._stored = stored
        self.digest: str = stored.digest
        self.fingerprint: str = _fingerprint_unpacked(stored.fingerprint)
        self.source_digest: str = _unpack(stored.source_digest)
        self.open: int = len(stored.open)
        # Most states have no finding: no scan on every event's path for them.
        self.waived: bool = bool(stored.open) and any(c[9] is not None for c in stored.open)

    def state(self) -> ObjectState:
        """The whole state (findings expanded against the codebook of its policy)."""
        stored = self._stored
        book = _CODEBOOKS.get(self.fingerprint)
        api_version, kind = stored.ref[0], stored.ref[1]
        if stored.passed is None:
            passed = stored.passed_list
        else:
            passed = book.unmask(stored.passed) if book is not None else ()
        return ObjectState(
            cluster=stored.cluster,
            ref=common.ObjectRef(*stored.ref),
            partition=stored.partition,
            digest=stored.digest,
            fingerprint=self.fingerprint,
            observed_at=stored.observed_at,
            object=stored.object,
            source_digest=self.source_digest,
            passed=passed,
            open=_expand_all(stored.open, book, api_version, kind) if stored.open else (),
            identity=stored.identity,
        )


def load(data: bytes) -> Loaded:
    """A table value decoded as far as telling an unchanged event needs (``Loaded``)."""
    return Loaded(_STORED_DECODER.decode(data))


def _pack(text: str) -> str | bytes:
    # A lowercase hex digest as its bytes, half the size; anything else as it is.
    try:
        packed = bytes.fromhex(text)
    except ValueError:
        return text
    return packed if packed.hex() == text else text


def _unpack(value: Any) -> str:
    return value.hex() if type(value) is bytes else str(value)


# A process sees a few policies: their fingerprints' forms are remembered both ways.
_fingerprint_packed = functools.lru_cache(maxsize=_CODEBOOKS_KEPT)(_pack)
_fingerprint_unpacked = functools.lru_cache(maxsize=_CODEBOOKS_KEPT)(_unpack)


def _real_path(static: _Static, api_version: str, kind: str) -> str:
    if not static.pod_spec:
        return static.path
    template = workloads.TEMPLATE_PATHS.get((workloads.group_of(api_version), kind), ())
    return workloads.real_path(static.path, template)


def _compact_all(
    open_findings: Iterable[tracking.OpenFinding],
    book: Codebook | None,
    api_version: str,
    kind: str,
) -> tuple[_Compact, ...]:
    facts = book.facts(api_version, kind) if book is not None else {}
    return tuple(_compact(finding, facts) for finding in open_findings)


def _compact(finding: tracking.OpenFinding, facts: Mapping[tuple[str, str], _Facts]) -> _Compact:
    shared = facts.get((finding.baseline, finding.check))
    message: str | None = finding.message
    path: str | None = finding.path
    if shared is not None and (
        shared.title == finding.title
        and shared.controls == finding.controls
        and shared.fix_risk == finding.fix_risk
    ):
        if message == shared.message:
            message = None
        if path == shared.path:
            path = None
    # Otherwise (not from this codebook, which cannot happen for states the processor built)
    # the texts that are not otherwise stored are kept, losing only title and controls.
    return (
        finding.baseline,
        finding.check,
        finding.baseline_version,
        finding.severity,
        finding.result,
        message,
        path,
        finding.priority,
        finding.first_seen,
        finding.waiver,
    )


def _expand_all(
    compacts: Iterable[_Compact], book: Codebook | None, api_version: str, kind: str
) -> tuple[tracking.OpenFinding, ...]:
    facts = book.facts(api_version, kind) if book is not None else {}
    return tuple(_expand(compact, facts) for compact in compacts)


def _expand(compact: _Compact, facts: Mapping[tuple[str, str], _Facts]) -> tracking.OpenFinding:
    baseline, check, version, severity, result, message, path, priority, first_seen, waiver = (
        compact
    )
    title, controls, shared_message, shared_path, fix_risk = facts.get((baseline, check), _NO_FACTS)
    return tracking.OpenFinding(
        baseline=baseline,
        check=check,
        baseline_version=version,
        title=title,
        controls=controls,
        severity=severity,
        result=result,
        message=shared_message if message is None else message,
        path=shared_path if path is None else path,
        priority=priority,
        first_seen=first_seen,
        waiver=waiver,
        fix_risk=fix_risk,
    )
