"""Encoding and strict decoding of payloads, and the catalogue of CloudEvent types.

Decoding is strict: unknown fields, wrong types, missing fields and invalid enum values are all
rejected with one typed error, :class:`DecodeError`, that says why. Services route such records
to the dead-letter topic with that reason.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from kposture.schemas import audit, deadletter, findings, policy, posture, remediation, resources

Model = (
    resources.ResourceEvent
    | findings.Finding
    | posture.PostureSnapshot
    | posture.Contribution
    | remediation.RemediationAction
    | audit.AuditEvent
    | deadletter.DeadLetter
    | policy.PolicyDocument
)
T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()
_CANONICAL = msgspec.json.Encoder(order="sorted")


class DecodeError(ValueError):
    """A record could not be decoded; ``reason`` says why (safe to log: it holds no values)."""

    retriable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(model: Any) -> bytes:
    """Serialise a model to compact JSON bytes."""
    return _ENCODER.encode(model)


def canonical(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal values encode to equal bytes.

    For bytes that are kept (table keys and values, cache entries). msgspec rather than
    orjson: orjson 3.13 hands back a bytes object that keeps its 4 KiB write buffer, so every
    kept value cost 4 KiB of memory whatever its length.
    """
    return _CANONICAL.encode(value)


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode(data: bytes, model_type: type[T], *, name: str = "") -> T:
    """Decode JSON bytes into ``model_type``, strictly; raise :class:`DecodeError` otherwise.

    ``name``: the model the errors name, when ``model_type`` is a variant of it.
    """
    decoder = _DECODERS.get(model_type)
    if decoder is None:
        decoder = _DECODERS[model_type] = msgspec.json.Decoder(model_type, strict=True)
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {name or model_type.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(f"malformed JSON for {name or model_type.__name__}: {exc}") from exc
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"undecodable {name or model_type.__name__}: {exc}") from exc


def resource_type(change: resources.Change) -> str:
    """The CloudEvent type of a resource change, e.g. ``io.kposture.resource.added.v1``."""
    return f"io.kposture.resource.{change}.v1"


def finding_type(state: findings.Transition) -> str:
    """The CloudEvent type of a finding transition, e.g. ``io.kposture.finding.opened.v1``."""
    return f"io.kposture.finding.{state}.v1"


POSTURE_TYPE = "io.kposture.posture.snapshot.v1"
CONTRIBUTION_TYPE = "io.kposture.posture.contribution.v1"
REMEDIATION_TYPE = "io.kposture.remediation.decision.v1"
AUDIT_TYPE = "io.kposture.audit.event.v1"
DEADLETTER_TYPE = "io.kposture.deadletter.v1"
POLICY_TYPE = "io.kposture.policy.published.v1"

EVENT_TYPES: dict[str, type[Any]] = {
    **{resource_type(c): resources.ResourceEvent for c in resources.Change},
    **{finding_type(s): findings.Finding for s in findings.Transition},
    POSTURE_TYPE: posture.PostureSnapshot,
    CONTRIBUTION_TYPE: posture.Contribution,
    REMEDIATION_TYPE: remediation.RemediationAction,
    AUDIT_TYPE: audit.AuditEvent,
    DEADLETTER_TYPE: deadletter.DeadLetter,
    POLICY_TYPE: policy.PolicyDocument,
}
"""Every CloudEvent type we publish, mapped to the model of its data."""


def model_for(event_type: str) -> type[Any]:
    """The model class of a CloudEvent type; :class:`DecodeError` if the type is unknown."""
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise DecodeError(f"unknown event type {event_type!r}") from None
