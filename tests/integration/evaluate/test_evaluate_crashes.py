"""Exactly once across crashes: a worker killed with SIGKILL mid-stream, then restarted.

A reference worker handles a synthetic fleet's stream without interruption; a second one, in
a child process (``kposture evaluate``), handles the same stream under another topic prefix
and is killed at several points while transactions are in flight, and restarted each time.
The committed findings of both runs must hold, for every key, the same life cycle (opened,
resolved, waived) in the same order and the same final content, and the crashed run no record
twice: nothing lost, nothing repeated. (``updated`` records that only move a priority depend on
when a cross-object re-evaluation runs, in either run, so only their result is compared.)
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import pathlib
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from evaluate_harness import running

from kposture.cli.benching import bursting
from kposture.cli.devenv import environment
from kposture.cli.devenv import kafka as devkafka
from kposture.evaluate import synthetic
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import envelope, findings, topics

pytestmark = [pytest.mark.integration]

PARTITIONS = 3
BASELINES = ["pss-restricted"]  # per-object checks: each key's transitions follow its events


def _settings(bootstrap: str) -> settings_mod.Settings:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(
            bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS
        ),
        evaluate=settings_mod.EvaluateSettings(
            baselines=BASELINES,
            app_id=f"{prefix}-evaluate",
            posture_interval_s=3600.0,
            session_timeout_s=6.0,
            http=settings_mod.HttpSettings(port=0),
        ),
    )


def _stream(objects: int, events: int) -> list[Any]:
    fleet = synthetic.fleet(objects, seed=7)
    return synthetic.added(fleet) + [e for _, e in synthetic.updates(fleet, events, seed=8)]


async def _progress(settings: settings_mod.Settings) -> int:
    """Records of the resources topic whose offsets the group has committed."""
    consumer = kafka.consumer(
        settings.kafka, group_id=settings.evaluate.app_id, client_id="test-progress"
    )
    await consumer.start()
    try:
        name = kafka.topic_name(settings.kafka, topics.Topic.RESOURCES)
        done = 0
        for partition in range(PARTITIONS):
            done += await consumer.committed(TopicPartition(name, partition)) or 0
        return done
    finally:
        await consumer.stop()


Seen = tuple[str, str, str]  # (transition, priority, message)


async def _transitions(settings: settings_mod.Settings) -> dict[str, list[Seen]]:
    """Every committed finding transition, per finding key, in log order."""
    consumer = kafka.consumer(settings.kafka, group_id=None, client_id="test-findings")
    await consumer.start()
    per_key: dict[str, list[Seen]] = collections.defaultdict(list)

    def take(records: Any) -> None:
        for record in records:
            _, model = envelope.decode_record(record.headers, record.value)
            assert isinstance(model, findings.Finding)
            seen = (str(model.state), str(model.priority), model.message)
            per_key[record.key.decode()].append(seen)

    try:
        name = kafka.topic_name(settings.kafka, topics.Topic.FINDINGS)
        await kafka.read_to_end(
            consumer, [TopicPartition(name, p) for p in range(PARTITIONS)], take
        )
    finally:
        await consumer.stop()
    return dict(per_key)


def _child(settings: settings_mod.Settings, config: pathlib.Path) -> subprocess.Popen[bytes]:
    config.write_text(settings_mod.dump(settings), encoding="utf-8")
    command = pathlib.Path(sys.executable).with_name("kposture")
    with (config.parent / "evaluate.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own CLI, with a config this test wrote
            [str(command), "evaluate", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("KPOSTURE_")},
        )


async def _wait_for(
    condition: Any, *, what: str, log: pathlib.Path | None = None, limit: int = 2400
) -> None:
    # Polls broker state (no event tells it); the test's timeout bounds the whole wait.
    for _ in range(limit):
        if await condition():
            return
        await asyncio.sleep(0.05)
    told = _tail(log) if log is not None else ""
    pytest.fail(f"gave up waiting for {what}; the worker's log ends:\n{told}")


def _tail(log: pathlib.Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def _crash_run(
    kafka_bootstrap: str, tmp_path: pathlib.Path, *, objects: int, events: int, kills: int
) -> None:
    crashed, total, expected = await _reference_run(kafka_bootstrap, _stream(objects, events))

    config = tmp_path / "evaluate.yaml"
    killed = 0
    for point in range(1, kills + 1):
        child = _child(crashed, config)
        try:
            threshold = total * point // (kills + 1)
            await _wait_for(
                lambda t=threshold: _reached(crashed, t),
                what=f"{threshold} records",
                log=tmp_path / "evaluate.log",
            )
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        killed += 1
    child = _child(crashed, config)
    try:
        await _wait_for(
            lambda: _reached(crashed, total),
            what="the crashed run's end",
            log=tmp_path / "evaluate.log",
        )
    finally:
        child.terminate()
        child.wait()
    got = await _transitions(crashed)

    assert killed == kills
    assert sum(map(len, expected.values())) > 0

    _assert_same_findings(expected, got)


def _assert_same_findings(expected: dict[str, list[Seen]], got: dict[str, list[Seen]]) -> None:
    """Same life cycle and last message per key as the reference, and no record twice."""
    assert sum(map(len, expected.values())) > 0

    def life(seen: list[Seen]) -> list[str]:
        return [state for state, _, _ in seen if state != "updated"]

    assert set(got) == set(expected)
    differ = collections.Counter(
        (tuple(life(v)), tuple(life(got[k])))
        for k, v in expected.items()
        if life(got[k]) != life(v)
    )
    assert not differ, f"life cycles that differ, (expected, got): count: {dict(differ)}"
    # The last record's message; its priority follows re-evaluations that a run may still
    # have queued when its input ends.
    ends = [k for k, v in expected.items() if got[k][-1][2] != v[-1][2]]
    assert not ends, f"{len(ends)} keys end differently, e.g. {expected[ends[0]]} vs {got[ends[0]]}"
    twice = [k for k, v in got.items() if any(a == b for a, b in itertools.pairwise(v))]
    assert not twice, f"{len(twice)} keys got a record twice, e.g. {got[twice[0]]}"


async def _reference_run(
    kafka_bootstrap: str, stream: list[Any]
) -> tuple[settings_mod.Settings, int, dict[str, list[Seen]]]:
    """``stream`` on two fresh prefixes; one handled by an uninterrupted in-process worker.

    Returns the other prefix's settings, the stream's length and the reference's findings.
    """
    reference, tested = _settings(kafka_bootstrap), _settings(kafka_bootstrap)
    for settings in (reference, tested):
        await kafka.create_topics(settings.kafka)
        await bursting.produce(settings, stream)
    total = len(stream)
    async with running(reference):
        await _wait_for(lambda: _reached(reference, total), what="the reference run's end")
    return tested, total, await _transitions(reference)


async def _reached(settings: settings_mod.Settings, count: int) -> bool:
    return await _progress(settings) >= count


async def _restart_run(kafka_bootstrap: str, *, objects: int, events: int, restarts: int) -> None:
    restarted, total, expected = await _reference_run(kafka_bootstrap, _stream(objects, events))

    state, jars = environment.kafka_state(), devkafka.ensure_jars()
    async with running(restarted):
        for point in range(1, restarts + 1):
            threshold = total * point // (restarts + 1)
            await _wait_for(lambda t=threshold: _reached(restarted, t), what=f"{threshold} records")
            await asyncio.to_thread(devkafka.stop_broker, state_dir=state)
            await asyncio.to_thread(devkafka.start_broker, state_dir=state, jar_dir=jars)
        await _wait_for(lambda: _reached(restarted, total), what="the restarted run's end")
    _assert_same_findings(expected, await _transitions(restarted))


@pytest.mark.timeout(600)
async def test_a_broker_restart_mid_stream_loses_and_repeats_no_transition(
    kafka_bootstrap: str,
) -> None:
    """The broker stops and starts again under a running worker: the reference's findings."""
    await _restart_run(kafka_bootstrap, objects=500, events=2000, restarts=1)


@pytest.mark.faults
@pytest.mark.timeout(1800)
async def test_two_broker_restarts_in_a_20000_event_stream_lose_and_repeat_no_transition(
    kafka_bootstrap: str,
) -> None:
    """Two broker restarts during a 20,000-event stream: the reference run's findings."""
    await _restart_run(kafka_bootstrap, objects=5000, events=20000, restarts=2)


@pytest.mark.timeout(600)
async def test_a_paused_worker_that_resumes_after_losing_its_partitions_writes_nothing(
    kafka_bootstrap: str, tmp_path: pathlib.Path
) -> None:
    """SIGSTOP one worker mid-stream, let another take over, SIGCONT it: no record twice."""
    paused, total, expected = await _reference_run(kafka_bootstrap, _stream(500, 2000))

    log = tmp_path / "evaluate.log"
    first = _child(paused, tmp_path / "first.yaml")
    second = None
    try:
        await _wait_for(lambda: _reached(paused, total // 3), what="a third", log=log)
        first.send_signal(signal.SIGSTOP)  # a long pause: its session times out
        second = _child(paused, tmp_path / "second.yaml")
        await _wait_for(lambda: _reached(paused, 2 * total // 3), what="two thirds", log=log)
        first.send_signal(signal.SIGCONT)  # it wakes up with its transactions still open
        await _wait_for(lambda: _reached(paused, total), what="the end", log=log)
    finally:
        for child in (first, second):
            if child is not None:
                child.send_signal(signal.SIGCONT)
                child.terminate()
                child.wait()
    _assert_same_findings(expected, await _transitions(paused))


@pytest.mark.timeout(600)
async def test_two_kills_mid_stream_lose_and_repeat_no_transition(
    kafka_bootstrap: str, tmp_path: pathlib.Path
) -> None:
    """SIGKILL twice while transactions are in flight: the findings are the reference run's."""
    await _crash_run(kafka_bootstrap, tmp_path, objects=500, events=2000, kills=2)


@pytest.mark.faults
@pytest.mark.timeout(1800)
async def test_ten_kills_in_a_20000_event_stream_lose_and_repeat_no_transition(
    kafka_bootstrap: str, tmp_path: pathlib.Path
) -> None:
    """SIGKILL at ten points of a 20,000-event stream: the findings are the reference run's."""
    await _crash_run(kafka_bootstrap, tmp_path, objects=5000, events=20000, kills=10)
