"""The audit chain and the kill switch on the real broker (no cluster needed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import msgspec
import pytest
from remediate_it_support import append_raw, audit_records
from typer.testing import CliRunner

from kposture.cli import audit_cmd, remediate_cmd
from kposture.remediate import auditing, recording, throttling
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import audit, common

pytestmark = pytest.mark.integration

REF = common.ObjectRef("apps/v1", "Deployment", "web", "u1", "shop", "7")


def _settings(bootstrap: str, prefix: str) -> settings_mod.Settings:
    return settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(
            bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=3
        )
    )


def _event(n: int) -> audit.AuditEvent:
    return auditing.new_event(
        audit.Action.PLANNED,
        audit.Outcome.NONE,
        rationale=f"event {n}",
        cluster="c1",
        ref=REF,
        finding_key="c1/u1/pss-baseline/privileged",
        check="privileged",
        action_id="a1",
        started_at=common.utcnow(),
    )


async def _until(condition: Callable[[], bool], *, timeout_s: float) -> float | None:
    """The monotonic time at which ``condition`` first held, or None after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return time.monotonic()
        await asyncio.sleep(0.01)
    return None


def _verify(bootstrap: str, prefix: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        audit_cmd.app,
        ["verify"],
        env={"KPOSTURE_KAFKA_BOOTSTRAP": bootstrap, "KPOSTURE_KAFKA__TOPIC_PREFIX": prefix},
    )
    return result.exit_code, result.output


async def test_audit_verify_passes_then_names_a_tampered_record(
    bootstrap: str, topic_prefix: str
) -> None:
    """A chain written across an auditor restart verifies; an appended forgery is named."""
    settings = _settings(bootstrap, topic_prefix)
    await kafka.create_topics(settings.kafka)
    producer = kafka.producer(settings.kafka, client_id="it-audit")
    await producer.start()
    try:
        first = await auditing.KafkaAuditor.resume(settings.kafka, producer)
        for n in range(3):
            await first.record(_event(n))
        restarted = await auditing.KafkaAuditor.resume(settings.kafka, producer)
        assert restarted.chain.last is not None
        assert restarted.chain.last.seq == 2
        last = await restarted.record(_event(3))
        assert last.seq == 3
    finally:
        await producer.stop()
    code, output = await asyncio.to_thread(_verify, bootstrap, topic_prefix)
    assert code == 0, output
    assert "4 record(s), chain intact" in output

    # A forged copy of the last event with another rationale: linked, but its hash is wrong.
    forged = msgspec.structs.replace(last, seq=4, prev_hash=last.hash, rationale="forged")
    await append_raw(settings, forged)
    code, output = await asyncio.to_thread(_verify, bootstrap, topic_prefix)
    assert code == 1
    assert f"audit_id {forged.audit_id}" in output
    assert "altered" in output
    assert len(await audit_records(settings)) == 5


async def test_a_pause_reaches_another_replica_within_five_seconds(
    bootstrap: str, topic_prefix: str
) -> None:
    """One process pauses; another's kill switch blocks writes well within 5 s."""
    settings = _settings(bootstrap, topic_prefix)
    await kafka.create_topics(settings.kafka)
    switch = throttling.KillSwitch()
    producer = kafka.producer(settings.kafka, client_id="it-replica")
    await producer.start()
    replica = recording.KafkaLedger(settings.kafka, producer, kill_switch=switch)
    await replica.start()
    reader = asyncio.create_task(replica.run())
    try:
        current = await _until(lambda: switch.blocked(time.monotonic()) is None, timeout_s=10)
        assert current is not None, "the replica never became current"
        async with recording.opened(settings.kafka, client_id="it-operator") as operator:
            started = time.monotonic()
            await operator.set_paused(paused=True, actor="it", reason="drill")
            seen = await _until(lambda: switch.blocked(time.monotonic()) is not None, timeout_s=5)
            assert seen is not None, "the pause was not seen within 5 s"
            print(f"pause seen by the other replica after {(seen - started) * 1000:.0f} ms")
            await operator.set_paused(paused=False, actor="it", reason="over")
            assert await _until(lambda: not switch.paused, timeout_s=5) is not None
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await replica.stop()
        await producer.stop()


def _cli(bootstrap: str, prefix: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        remediate_cmd.app,
        list(args),
        env={"KPOSTURE_KAFKA_BOOTSTRAP": bootstrap, "KPOSTURE_KAFKA__TOPIC_PREFIX": prefix},
    )
    return result.exit_code, result.output


async def test_the_cli_pauses_resumes_lists_and_refuses_unknown_approvals(
    bootstrap: str, topic_prefix: str
) -> None:
    """pause and resume land on the control record; approving an unknown id exits 1."""
    settings = _settings(bootstrap, topic_prefix)
    await kafka.create_topics(settings.kafka)
    assert await asyncio.to_thread(_cli, bootstrap, topic_prefix, "pause", "--reason", "drill") == (
        0,
        "paused\n",
    )
    async with recording.opened(settings.kafka, client_id="it-check") as ledger:
        assert ledger.ledger.paused
        assert ledger.ledger.control is not None
        assert ledger.ledger.control.reason == "drill"
    assert (await asyncio.to_thread(_cli, bootstrap, topic_prefix, "resume"))[0] == 0
    async with recording.opened(settings.kafka, client_id="it-check") as ledger:
        assert not ledger.ledger.paused
    code, output = await asyncio.to_thread(_cli, bootstrap, topic_prefix, "approve", "nope")
    assert code == 1
    assert "no action nope" in output
    assert await asyncio.to_thread(_cli, bootstrap, topic_prefix, "list", "--pending") == (0, "")
