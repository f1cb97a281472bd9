"""The local Kafka broker of ``kposture.cli.devenv.kafka`` against real clients.

A real Kafka 4 broker is started from the Maven-resolved jars in a temporary state directory;
aiokafka creates a topic, produces with an idempotent producer and consumes the records back,
before and after a graceful restart and after a crash. The tests share one broker and each
leaves it running, so they pass in any order. Nothing is skipped: if the broker cannot be
provisioned, the tests fail with the reason.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from kposture.cli.devenv import kafka, processes, pruning

TOPIC = "devenv-check"
PARTITIONS = 3
RECORDS = 100

# (partition, key, value, headers) in the order the broker acknowledged them per partition.
Record = tuple[int, bytes, bytes, tuple[tuple[str, bytes], ...]]

# Generous: on a busy two-core machine a JVM start takes 10-20 s, and the first graceful stop
# also writes the broker's class-data archive.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def jar_dir() -> Path:
    """The Kafka jars, resolved from Maven Central on the first run and cached after."""
    try:
        return kafka.ensure_jars()
    except processes.DevEnvError as exc:
        pytest.fail(f"cannot provision the Kafka jars: {exc}")


@pytest.fixture(scope="module")
def broker(
    jar_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[kafka.BrokerEndpoint]:
    """A broker in a fresh state directory on free ports; stopped afterwards."""
    state_dir = tmp_path_factory.mktemp("kafka-state")
    try:
        port = processes.free_port_pair()  # clients on it, the controller on the next
        endpoint = kafka.start_broker(state_dir=state_dir, jar_dir=jar_dir, port=port)
    except processes.DevEnvError as exc:
        kafka.kill_broker(state_dir=state_dir)
        pytest.fail(f"cannot start the Kafka broker: {exc}")
    try:
        yield endpoint
    finally:
        kafka.stop_broker(state_dir=state_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def produced(broker: kafka.BrokerEndpoint) -> list[Record]:
    """The records written to the test topic, as the producer saw them acknowledged."""
    return await _create_and_produce(broker.bootstrap)


async def _restart(endpoint: kafka.BrokerEndpoint, jar_dir: Path) -> kafka.BrokerEndpoint:
    # start_broker blocks for seconds while the JVM starts; keep the event loop free meanwhile.
    try:
        return await asyncio.to_thread(
            kafka.start_broker, state_dir=endpoint.state_dir, jar_dir=jar_dir, port=endpoint.port
        )
    except processes.DevEnvError as exc:
        pytest.fail(f"cannot restart the Kafka broker: {exc}")


async def _create_and_produce(bootstrap: str) -> list[Record]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=TOPIC, num_partitions=PARTITIONS, replication_factor=1)]
        )
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    records: list[Record] = []
    try:
        for i in range(RECORDS):
            key = f"key-{i % 10}".encode()
            value = f"value-{i:03d}".encode()
            headers = (("seq", str(i).encode()), ("origin", b"kposture-test"))
            # One at a time, so that the acknowledged order is the order we sent in.
            meta = await producer.send_and_wait(TOPIC, value, key=key, headers=list(headers))
            records.append((meta.partition, key, value, headers))
    finally:
        await producer.stop()
    return records


async def _consume_all(bootstrap: str, *, group_id: str) -> list[Record]:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[Record] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(received) < RECORDS and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                received.extend(
                    (m.partition, m.key or b"", m.value or b"", tuple(m.headers)) for m in messages
                )
    finally:
        await consumer.stop()
    return received


def _by_partition(records: list[Record]) -> dict[int, list[Record]]:
    grouped: dict[int, list[Record]] = {}
    for record in records:
        grouped.setdefault(record[0], []).append(record)
    return grouped


def test_start_reuses_a_running_broker(broker: kafka.BrokerEndpoint, jar_dir: Path) -> None:
    """Starting a broker in a state directory where one runs returns the running one."""
    pid_before = kafka.broker_status(state_dir=broker.state_dir)["pid"]

    again = kafka.start_broker(state_dir=broker.state_dir, jar_dir=jar_dir, port=broker.port)

    assert again == broker
    assert kafka.broker_status(state_dir=broker.state_dir)["pid"] == pid_before


def test_status_reports_a_serving_broker(broker: kafka.BrokerEndpoint) -> None:
    """The status of a started broker says it runs, serves and where."""
    status = kafka.broker_status(state_dir=broker.state_dir)

    assert status["running"] is True
    assert status["serving"] is True
    assert status["formatted"] is True
    assert status["bootstrap"] == f"127.0.0.1:{broker.port}"


@pytest.mark.asyncio(loop_scope="session")
async def test_consumer_reads_back_what_the_idempotent_producer_wrote(
    broker: kafka.BrokerEndpoint, produced: list[Record]
) -> None:
    """Keys, values, headers and the per-partition order survive the round trip."""
    received = await _consume_all(broker.bootstrap, group_id="devenv-check-first")

    assert len(received) == RECORDS
    assert _by_partition(received) == _by_partition(produced)
    assert len(_by_partition(received)) == PARTITIONS  # ten keys spread over every partition


@pytest.mark.asyncio(loop_scope="session")
async def test_records_survive_a_graceful_restart(
    broker: kafka.BrokerEndpoint, produced: list[Record], jar_dir: Path
) -> None:
    """A broker stopped and started again in the same state directory keeps its records."""
    await asyncio.to_thread(kafka.stop_broker, state_dir=broker.state_dir)
    assert kafka.broker_status(state_dir=broker.state_dir)["running"] is False

    restarted = await _restart(broker, jar_dir)
    received = await _consume_all(restarted.bootstrap, group_id="devenv-check-restart")

    assert restarted == broker
    assert _by_partition(received) == _by_partition(produced)


@pytest.mark.asyncio(loop_scope="session")
async def test_records_survive_a_crash(
    broker: kafka.BrokerEndpoint, produced: list[Record], jar_dir: Path
) -> None:
    """A broker killed with SIGKILL recovers its log on the next start and loses no record."""
    kafka.kill_broker(state_dir=broker.state_dir)
    assert kafka.broker_status(state_dir=broker.state_dir)["running"] is False

    restarted = await _restart(broker, jar_dir)
    received = await _consume_all(restarted.bootstrap, group_id="devenv-check-crash")

    assert _by_partition(received) == _by_partition(produced)


async def test_prune_deletes_only_idle_topics_of_earlier_runs(
    broker: kafka.BrokerEndpoint,
) -> None:
    idle_run = "t0123456789.resources.v1"
    idle_changelog = "t0123456789-evaluate-objects-changelog"
    busy_run = "tabcdefabcd.resources.v1"
    foreign = "payments.orders"  # not a name our runs generate: never deleted, however idle
    names = [idle_run, idle_changelog, busy_run, foreign]
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=n, num_partitions=2, replication_factor=1) for n in names]
        )
        data_dir = broker.state_dir / "data"
        deadline = asyncio.get_running_loop().time() + 30
        while not all((data_dir / f"{n}-1").is_dir() for n in names):
            assert asyncio.get_running_loop().time() < deadline, "partition dirs never appeared"
            await asyncio.sleep(0.2)
        two_hours_ago = time.time() - 7200
        for name in (idle_run, idle_changelog, foreign):
            for partition_dir in data_dir.glob(f"{name}-*"):
                for path in [partition_dir, *partition_dir.iterdir()]:
                    os.utime(path, (two_hours_ago, two_hours_ago))

        deleted = await asyncio.to_thread(pruning.prune, broker.bootstrap, data_dir)

        assert sorted(deleted) == sorted([idle_run, idle_changelog])
        # The broker deletes in the background; wait until it no longer lists them.
        deadline = asyncio.get_running_loop().time() + 60
        remaining = set(await admin.list_topics())
        while {idle_run, idle_changelog} & remaining:
            assert asyncio.get_running_loop().time() < deadline, f"still listed: {remaining}"
            await asyncio.sleep(0.5)
            remaining = set(await admin.list_topics())
        assert idle_run not in remaining
        assert idle_changelog not in remaining
        assert {busy_run, foreign, TOPIC} <= remaining
    finally:
        await admin.close()
