"""``kposture run`` starts on fresh topics and gets findings flowing, again and again.

A first start used to race faust's partition assignor against the changelogs it had just
created and then hang. Each start here runs the console script, as users do, on a fresh topic
prefix with two busy processes taking the machine's cores, and waits until its first finding
is committed on the findings topic (the clusters' own kube-system pods fail restricted
checks), then stops it and requires a clean exit.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import msgspec
import pytest
from aiokafka.structs import TopicPartition

from kposture.cli.devenv import environment
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import topics

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Two processes that spin on the CPU for as long as the test runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def _config(env: environment.Environment, directory: pathlib.Path) -> pathlib.Path:
    base = settings_mod.load(None, environ={})
    prefix = f"t{uuid.uuid4().hex[:10]}"
    no_http = settings_mod.HttpSettings(port=0)
    settings = msgspec.structs.replace(
        base,
        kafka=msgspec.structs.replace(
            base.kafka, bootstrap_servers=env.kafka_bootstrap, topic_prefix=prefix, partitions=3
        ),
        clusters=[
            settings_mod.ClusterSettings(name=c, kubeconfig=str(env.kubeconfig), context=c)
            for c in env.contexts
        ],
        ingest=msgspec.structs.replace(base.ingest, http=no_http),
        evaluate=msgspec.structs.replace(base.evaluate, app_id=f"{prefix}-evaluate", http=no_http),
        remediate=msgspec.structs.replace(
            base.remediate, group_id=f"{prefix}-remediate", http=no_http
        ),
    )
    path = directory / f"{prefix}.yaml"
    path.write_text(settings_mod.dump(settings), encoding="utf-8")
    return path


async def _first_finding(settings: settings_mod.Settings, log: pathlib.Path) -> None:
    consumer = kafka.consumer(settings.kafka, group_id=None, client_id="test-findings")
    await consumer.start()
    name = kafka.topic_name(settings.kafka, topics.Topic.FINDINGS)
    try:
        # The topics may not exist yet: ``kposture run`` creates them.
        for _ in range(1200):  # polls the broker; the test's timeout bounds the whole wait
            partitions = [TopicPartition(name, p) for p in range(settings.kafka.partitions)]
            if name in await consumer.topics():
                ends = await consumer.end_offsets(partitions)
                if any(ends.values()):
                    return
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
    pytest.fail(f"no finding was committed; the run's log ends:\n{_tail(log)}")


def _tail(log: pathlib.Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _start(config: pathlib.Path) -> subprocess.Popen[bytes]:
    script = pathlib.Path(sys.executable).with_name("kposture")
    with config.with_suffix(".log").open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own console script and config
            [str(script), "run", "--config", str(config)], stdout=out, stderr=out
        )


async def _starts(env: environment.Environment, directory: pathlib.Path, count: int) -> None:
    for _ in range(count):
        config = _config(env, directory)
        log = config.with_suffix(".log")
        run = _start(config)
        try:
            await _first_finding(settings_mod.load(config, environ={}), log)
        finally:
            run.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(run.wait, 120)
        assert code == 0, f"kposture run exited with {code}:\n{_tail(log)}"


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("busy_cores")
async def test_three_starts_under_cpu_load_each_get_findings_flowing(
    local_env: environment.Environment, tmp_path: pathlib.Path
) -> None:
    """Three back-to-back starts on fresh topics, both cores busy: each commits a finding."""
    await _starts(local_env, tmp_path, 3)


@pytest.mark.faults
@pytest.mark.timeout(2400)
@pytest.mark.usefixtures("busy_cores")
async def test_twenty_starts_under_cpu_load_each_get_findings_flowing(
    local_env: environment.Environment, tmp_path: pathlib.Path
) -> None:
    """Twenty back-to-back starts on fresh topics, both cores busy: each commits a finding."""
    await _starts(local_env, tmp_path, 20)
