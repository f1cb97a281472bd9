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
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from kposture.evaluate import tracking, workloads
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

    def load_object(self) -> dict[str, Any]:
        """The stored object (without its status)."""
        loaded: dict[str, Any] = _OBJECT_DECODER.decode(self.object)
        return loaded


class _Static(msgspec.Struct, frozen=True):
    """What a check's findings share: everything but the per-object values."""

    title: str
    controls: tuple[str, ...]
    message: str
    path: str  # as written against the Pod view for podSpec checks
    pod_spec: bool
    fix_risk: findings.Risk | None


class Codebook:
    """The checks of one policy, in a fixed order, with what their findings share."""

    def __init__(self, fingerprint: str, checks: Iterable[tuple[tuple[str, str], _Static]]):
        self.fingerprint = fingerprint
        entries = list(checks)
        self.idents = tuple(ident for ident, _ in entries)
        self.static = dict(entries)
        self.position = {ident: n for n, ident in enumerate(self.idents)}
        self._passed: dict[int, tuple[tuple[str, str], ...]] = {}

    def mask(self, passed: Iterable[tuple[str, str]]) -> int | None:
        """The bitmask of ``passed``; ``None`` if a check is not in this policy."""
        bits = 0
        for ident in passed:
            position = self.position.get(ident)
            if position is None:
                return None
            bits |= 1 << position
        return bits

    def unmask(self, bits: int) -> tuple[tuple[str, str], ...]:
        """The passing checks of a bitmask (shared tuples: objects of a kind pass alike)."""
        found = self._passed.get(bits)
        if found is None:
            found = tuple(i for n, i in enumerate(self.idents) if bits >> n & 1)
            if len(self._passed) < 4096:  # bounded: distinct outcomes, not objects
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
    fingerprint: str
    observed_at: common.Timestamp
    object: bytes
    source_digest: str
    passed: int | None  # bitmask over the codebook; None: listed in ``passed_list``
    passed_list: tuple[tuple[str, str], ...]
    open: tuple[_Compact, ...]


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


def encode_object(obj: Mapping[str, Any]) -> bytes:
    """The stored copy of an object: msgpack, without its status.

    Status is left out: ingest's digest ignores it, so a status-only change is never
    re-evaluated and no check may depend on it. Not compressed: zlib costs ~20 us per object
    (more than evaluating most kinds) and saves only ~300 bytes of a typical one.
    """
    if "status" in obj:
        obj = {key: value for key, value in obj.items() if key != "status"}
    return _ENCODER.encode(obj)


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
        fingerprint=state.fingerprint,
        observed_at=state.observed_at,
        object=state.object,
        source_digest=state.source_digest,
        passed=bits,
        passed_list=state.passed if bits is None else (),
        open=tuple(_compact(f, book, ref.api_version, ref.kind) for f in state.open),
    )
    return _ENCODER.encode(stored)


def partition_of(data: bytes) -> int:
    """The source partition of an encoded state (cheaper than ``decode``)."""
    return _HEAD_DECODER.decode(data).partition


def decode(data: bytes) -> ObjectState:
    """A state from its table value."""
    stored = _STORED_DECODER.decode(data)
    book = _CODEBOOKS.get(stored.fingerprint)
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
        fingerprint=stored.fingerprint,
        observed_at=stored.observed_at,
        object=stored.object,
        source_digest=stored.source_digest,
        passed=passed,
        open=tuple(_expand(c, book, api_version, kind) for c in stored.open),
    )


_REAL_PATHS: dict[tuple[str, str, str], str] = {}


def _real_path(static: _Static, api_version: str, kind: str) -> str:
    if not static.pod_spec:
        return static.path
    # Paths depend only on (check path, apiVersion, kind), and every finding of every event
    # needs one twice (encode and decode): remember them (bounded by checks x kinds).
    ident = (static.path, api_version, kind)
    found = _REAL_PATHS.get(ident)
    if found is None:
        template = workloads.TEMPLATE_PATHS.get((workloads.group_of(api_version), kind), ())
        found = workloads.real_path(static.path, template)
        if len(_REAL_PATHS) < 65_536:  # apiVersion and kind come from the stream: bound it
            _REAL_PATHS[ident] = found
    return found


def _compact(
    finding: tracking.OpenFinding, book: Codebook | None, api_version: str, kind: str
) -> _Compact:
    static = book.static.get(finding.ident) if book is not None else None
    message: str | None = finding.message
    path: str | None = finding.path
    if static is not None and (
        static.title == finding.title
        and static.controls == finding.controls
        and static.fix_risk == finding.fix_risk
    ):
        message = None if finding.message == static.message else message
        path = None if finding.path == _real_path(static, api_version, kind) else path
    else:
        # Not from this codebook (cannot happen for states the processor built): keep the
        # texts that are not otherwise stored in the message, losing only title and controls.
        message = finding.message
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


def _expand(
    compact: _Compact, book: Codebook | None, api_version: str, kind: str
) -> tracking.OpenFinding:
    baseline, check, version, severity, result, message, path, priority, first_seen, waiver = (
        compact
    )
    static = book.static.get((baseline, check)) if book is not None else None
    if static is None:
        static = _Static("", (), "", "", pod_spec=False, fix_risk=None)
    return tracking.OpenFinding(
        baseline=baseline,
        check=check,
        baseline_version=version,
        title=static.title,
        controls=static.controls,
        severity=severity,
        result=result,
        message=static.message if message is None else message,
        path=_real_path(static, api_version, kind) if path is None else path,
        priority=priority,
        first_seen=first_seen,
        waiver=waiver,
        fix_risk=static.fix_risk,
    )
