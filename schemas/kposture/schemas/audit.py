"""``AuditEvent``: a tamper-evident record of every remediation decision (topic ``audit``).

Events form a hash chain: each carries its sequence number, the hash of its predecessor and its
own hash, a SHA-256 over the canonical JSON of every other field. Changing, dropping or
reordering a record breaks the chain at that point, which ``kposture audit verify`` reports.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any

import msgspec

from kposture.schemas import common

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first event of a chain."""


class Action(enum.StrEnum):
    """What the remediator did or decided."""

    SKIPPED = "skipped"
    PLANNED = "planned"
    DRY_RUN = "dry-run"
    APPLIED = "applied"
    VERIFIED = "verified"
    ROLLED_BACK = "rolled-back"
    ESCALATED = "escalated"
    APPROVED = "approved"
    NO_OP = "no-op"
    FAILED = "failed"


class Outcome(enum.StrEnum):
    """Whether the action achieved what it set out to do."""

    SUCCESS = "success"
    FAILURE = "failure"
    NONE = "none"  # a decision that changes nothing (skipped, planned, escalated)


class AuditEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One audited decision, linked into the hash chain.

    ``pre_image`` holds the values of the fields the patch changes as they were before, so the
    action can be rolled back from this event alone. ``seq``, ``prev_hash`` and ``hash`` are set
    by :func:`seal`.
    """

    audit_id: str
    actor: str
    action: Action
    outcome: Outcome
    rationale: str
    cluster: str
    ref: common.ObjectRef
    finding_key: str
    check: str
    action_id: str
    pre_image: dict[str, Any]
    patch: dict[str, Any]
    dry_run_result: str
    started_at: common.Timestamp
    finished_at: common.Timestamp
    seq: int = 0
    prev_hash: str = GENESIS_HASH
    hash: str = ""


def canonical_bytes(event: AuditEvent) -> bytes:
    """The bytes that the hash covers: canonical JSON (sorted keys) of all fields but ``hash``."""
    fields = msgspec.to_builtins(event)
    fields.pop("hash", None)
    return msgspec.json.encode(_sorted(fields))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def compute_hash(event: AuditEvent) -> str:
    """The SHA-256 hex digest of the event's canonical bytes."""
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


def seal(event: AuditEvent, *, previous: AuditEvent | None) -> AuditEvent:
    """Link ``event`` after ``previous`` (None for the first event) and compute its hash."""
    seq = 0 if previous is None else previous.seq + 1
    prev_hash = GENESIS_HASH if previous is None else previous.hash
    linked = msgspec.structs.replace(event, seq=seq, prev_hash=prev_hash, hash="")
    return msgspec.structs.replace(linked, hash=compute_hash(linked))


class ChainBreak(msgspec.Struct, frozen=True):
    """Where and why a chain does not verify."""

    index: int
    seq: int
    audit_id: str
    reason: str


def verify_chain(events: list[AuditEvent]) -> ChainBreak | None:
    """The first break in ``events`` (in topic order), or None if the chain is intact.

    A break is an altered record (its hash does not match its content), a missing or reordered
    record (its ``seq`` is not the next one) or a record whose ``prev_hash`` does not name its
    predecessor's hash.
    """
    previous: AuditEvent | None = None
    for index, event in enumerate(events):
        expected_seq = 0 if previous is None else previous.seq + 1
        if compute_hash(event) != event.hash:
            return ChainBreak(index, event.seq, event.audit_id, "altered: hash does not match")
        if event.seq != expected_seq:
            why = "missing record(s) before it" if event.seq > expected_seq else "reordered"
            return ChainBreak(
                index, event.seq, event.audit_id, f"{why}: seq {event.seq}, expected {expected_seq}"
            )
        expected_prev = GENESIS_HASH if previous is None else previous.hash
        if event.prev_hash != expected_prev:
            return ChainBreak(index, event.seq, event.audit_id, "prev_hash does not match")
        previous = event
    return None
