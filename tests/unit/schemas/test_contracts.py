"""Contract tests: round trips, strict decoding, CloudEvents envelope, stale JSON Schemas."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kposture.schemas import (
    audit,
    codec,
    common,
    envelope,
    findings,
    jsonschemas,
    resources,
    topics,
)

REPO = Path(__file__).resolve().parents[3]

# Aware datetimes only: the contracts reject naive times, on purpose.
# Bounds must be naive for hypothesis; the strategy then attaches UTC.
_START = dt.datetime(2000, 1, 1)  # noqa: DTZ001
_END = dt.datetime(2100, 1, 1)  # noqa: DTZ001
aware_times = st.datetimes(min_value=_START, max_value=_END, timezones=st.just(dt.UTC))
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
st.register_type_strategy(dt.datetime, aware_times)
# JSON has no NaN or infinity; the models never carry them (scores are computed ratios).
st.register_type_strategy(float, st.floats(allow_nan=False, allow_infinity=False))


def _model_strategy(model: type[Any]) -> st.SearchStrategy[Any]:
    overrides: dict[str, st.SearchStrategy[Any]] = {}
    for field in msgspec.structs.fields(model):
        if field.type == dict[str, Any]:
            overrides[field.name] = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    return st.builds(model, **overrides)


@pytest.mark.parametrize("model", list(jsonschemas.MODELS.values()), ids=list(jsonschemas.MODELS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_model_round_trips_through_encode_and_decode(
    model: type[Any], data: st.DataObject
) -> None:
    """Encoding then decoding any instance of a contract model gives it back unchanged."""
    instance = data.draw(_model_strategy(model))
    assert codec.decode(codec.encode(instance), model) == instance


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_the_typed_decoding_error(raw: bytes) -> None:
    """Garbage never escapes as anything but DecodeError, whatever model it is decoded as."""
    for model in jsonschemas.MODELS.values():
        try:
            codec.decode(raw, model)
        except codec.DecodeError as exc:
            reason = exc.reason
        else:
            reason = "decoded"
        assert reason
    with pytest.raises(codec.DecodeError):
        envelope.decode_record([("ce_type", raw)], raw)


def _ref() -> common.ObjectRef:
    return common.ObjectRef(api_version="v1", kind="Pod", name="web", uid="u-1", namespace="shop")


def _resource_event() -> resources.ResourceEvent:
    return resources.ResourceEvent(
        cluster="kposture-1",
        change=resources.Change.ADDED,
        ref=_ref(),
        object={"metadata": {"name": "web"}},
        digest="abc",
        observed_at=common.utcnow(),
    )


def test_cloudevent_binary_mode_headers_carry_the_attributes() -> None:
    """A wrapped model travels as ce_* headers plus a plain JSON value, and decodes back."""
    model = _resource_event()
    event = envelope.wrap(
        model,
        event_type=codec.resource_type(model.change),
        source="kposture://kposture-1/ingest",
        subject=model.ref.subject,
    )
    headers = dict(event.headers())
    assert headers["ce_type"] == b"io.kposture.resource.added.v1"
    assert headers["ce_subject"] == b"shop/Pod/web"
    assert headers["content-type"] == b"application/json"
    assert msgspec.json.decode(event.data)["cluster"] == "kposture-1"
    decoded_event, decoded = envelope.decode_record(event.headers(), event.data)
    assert decoded == model
    assert decoded_event.id == event.id
    assert envelope.decode_data(event.headers(), event.data) == model


def test_a_model_cannot_be_sent_under_another_models_event_type() -> None:
    """Wrapping a ResourceEvent as a finding type is a programming error caught at once."""
    with pytest.raises(ValueError, match="cannot be sent"):
        envelope.wrap(_resource_event(), event_type="io.kposture.finding.opened.v1", source="x")


_GOOD_HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"1"),
    ("ce_source", b"s"),
    ("ce_type", b"io.kposture.resource.added.v1"),
]


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([], b"{}", "missing header"),
        (
            [*_GOOD_HEADERS, ("ce_time", b"yesterday")],
            b"{}",
            "ce_time is not RFC 3339",
        ),
        ([*_GOOD_HEADERS, ("content-type", b"text/plain")], b"{}", "unsupported content-type"),
        ([*_GOOD_HEADERS, ("ce_traceid", b"\xff\xfe")], b"{}", "not UTF-8"),
        (
            [("ce_specversion", b"0.3"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t")],
            b"{}",
            "specversion",
        ),
        (
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"s"),
                ("ce_type", b"nope"),
            ],
            b"{}",
            "unknown event type",
        ),
        (
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"s"),
                ("ce_type", b"io.kposture.resource.added.v1"),
            ],
            None,
            "tombstone",
        ),
        (
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"s"),
                ("ce_type", b"io.kposture.resource.added.v1"),
            ],
            b'{"cluster": 1}',
            "invalid ResourceEvent",
        ),
        (
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"s"),
                ("ce_type", b"io.kposture.resource.added.v1"),
            ],
            b"{not json",
            "malformed JSON",
        ),
    ],
)
def test_malformed_records_are_rejected_with_a_reason(
    headers: list[tuple[str, bytes]], value: bytes | None, reason: str
) -> None:
    """Each kind of malformed record raises DecodeError whose reason says what is wrong.

    ``decode_data`` (the model alone, without the CloudEvent) is exactly as strict.
    """
    with pytest.raises(codec.DecodeError, match=reason):
        envelope.decode_record(headers, value)
    with pytest.raises(codec.DecodeError, match=reason):
        envelope.decode_data(headers, value)


def test_naive_timestamps_are_rejected() -> None:
    """A time without an offset is ambiguous across regions, so decoding refuses it."""
    data = msgspec.json.decode(codec.encode(_resource_event()))
    data["observed_at"] = "2026-01-01T00:00:00"
    with pytest.raises(codec.DecodeError, match="timezone"):
        codec.decode(msgspec.json.encode(data), resources.ResourceEvent)


def test_committed_json_schemas_match_the_models() -> None:
    """schemas/json/ is regenerated in memory; a difference means the committed files are stale."""
    directory = REPO / "schemas" / "json"
    generated = jsonschemas.generate()
    committed = {p.name: p.read_bytes() for p in directory.glob("*.json")}
    stale = sorted(n for n in generated if committed.get(n) != generated[n])
    extra = sorted(set(committed) - set(generated))
    fix = "run `python -m kposture.schemas.jsonschemas schemas/json` and commit"
    assert not stale, f"stale schemas {stale}: {fix}"
    assert not extra, f"unexpected schemas {extra}: {fix}"


def test_finding_key_names_cluster_uid_baseline_and_check() -> None:
    """The finding key is the stable identity that orders one finding's transitions."""
    now = common.utcnow()
    finding = findings.Finding(
        cluster="c1",
        ref=_ref(),
        baseline="pss-restricted",
        baseline_version="v1.37",
        check="runAsNonRoot",
        title="t",
        controls=["pss:restricted/runAsNonRoot"],
        severity=common.Severity.HIGH,
        result=common.Result.FAIL,
        state=findings.Transition.OPENED,
        message="m",
        path="spec.securityContext.runAsNonRoot",
        first_seen=now,
        observed_at=now,
        detected_at=now,
    )
    assert finding.key == "c1/u-1/pss-restricted/runAsNonRoot"


def _audit(n: int) -> list[audit.AuditEvent]:
    now = common.utcnow()
    chain: list[audit.AuditEvent] = []
    for i in range(n):
        event = audit.AuditEvent(
            audit_id=f"a{i}",
            actor="kposture",
            action=audit.Action.APPLIED,
            outcome=audit.Outcome.SUCCESS,
            rationale="r",
            cluster="c1",
            ref=_ref(),
            finding_key="k",
            check="privileged",
            action_id=f"x{i}",
            pre_image={"privileged": True},
            patch={"spec": {}},
            dry_run_result="ok",
            started_at=now,
            finished_at=now,
        )
        chain.append(audit.seal(event, previous=chain[-1] if chain else None))
    return chain


def test_audit_chain_verifies_and_names_the_first_break() -> None:
    """An intact chain verifies; an altered, dropped or swapped record is reported where it is."""
    chain = _audit(5)
    assert audit.verify_chain(chain) is None
    altered = [*chain[:2], msgspec.structs.replace(chain[2], rationale="forged"), *chain[3:]]
    assert audit.verify_chain(altered) == audit.ChainBreak(
        2, 2, "a2", "altered: hash does not match"
    )
    dropped = audit.verify_chain([*chain[:2], *chain[3:]])
    assert dropped is not None
    assert dropped.index == 2
    assert dropped.reason.startswith("missing")
    swapped = audit.verify_chain([chain[0], chain[2], chain[1], *chain[3:]])
    assert swapped is not None
    assert swapped.index == 1


def test_topic_catalogue_has_every_topic_with_the_right_cleanup_policy() -> None:
    """Inventory-like topics are compacted; event streams are deleted by retention."""
    specs = {s.topic: s for s in topics.catalogue(prefix="acme")}
    assert set(specs) == set(topics.Topic)
    assert specs[topics.Topic.RESOURCES].name == "acme.resources.v1"
    compacted = {t for t, s in specs.items() if s.cleanup_policy == "compact"}
    assert compacted == {
        topics.Topic.RESOURCES,
        topics.Topic.BASELINES,
        topics.Topic.REMEDIATIONS,
        topics.Topic.CONTRIBUTIONS,
    }
    assert specs[topics.Topic.AUDIT].partitions == 1


def test_event_ids_are_distinct_random_uuids_in_canonical_form() -> None:
    """``new_id`` makes what ``str(uuid.uuid4())`` makes: version 4, RFC 4122 variant."""
    ids = [envelope.new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
