"""``kposture baseline publish`` and ``kposture evaluate`` as commands, on the real broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from evaluate_harness import Bus
from typer.testing import CliRunner

from kposture.cli import evaluate_cmd
from kposture.cli.devenv import processes
from kposture.runtime import settings as settings_mod
from kposture.schemas import findings, policy, resources, topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BASELINE = """\
apiVersion: kposture.io/v1
kind: Baseline
name: cli-test
version: v1.3
checks:
  - id: noLatest
    title: Images must be pinned
    severity: low
    controls: ["cli:pinned"]
    target: podSpec
    message: image uses latest
    validation: "object.spec.containers.all(c, !c.image.endsWith(':latest'))"
"""


def cli() -> typer.Typer:
    """The root application with the evaluate commands registered, as main.py does."""
    root = typer.Typer()
    evaluate_cmd.register(root)
    root.add_typer(evaluate_cmd.baseline_app, name="baseline")
    return root


def write_config(path: Path, settings: settings_mod.Settings, **evaluate: Any) -> Path:
    """A config file for ``settings``' broker and prefix."""
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": settings.kafka.bootstrap_servers,
                    "topic_prefix": settings.kafka.topic_prefix,
                    "partitions": settings.kafka.partitions,
                },
                "evaluate": {"app_id": settings.evaluate.app_id, **evaluate},
                "telemetry": {"log_format": "text", "log_level": "WARNING"},
            }
        )
    )
    return path


async def test_publish_validates_and_publishes_documents(
    settings: settings_mod.Settings, bus: Bus, reader: Any, tmp_path: Path
) -> None:
    """A valid file becomes a PolicyDocument; an invalid one exits 2 naming file and line."""
    config = write_config(tmp_path / "config.yaml", settings)
    good = tmp_path / "cli-test.yaml"
    good.write_text(BASELINE)
    result = await asyncio.to_thread(
        CliRunner().invoke, cli(), ["baseline", "publish", str(good), "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "published baseline/cli-test v1.3" in result.output
    documents = await (await reader(topics.Topic.BASELINES)).until(lambda rs: len(rs) >= 1)
    key, document = documents[0]
    assert key == "baseline/cli-test"
    assert isinstance(document, policy.PolicyDocument)
    assert document.source == BASELINE
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASELINE.replace("severity: low", "severity: dire"))
    result = await asyncio.to_thread(
        CliRunner().invoke, cli(), ["baseline", "publish", str(bad), "--config", str(config)]
    )
    assert result.exit_code == 2
    assert "bad.yaml:8: check 'noLatest'" in result.output


async def test_evaluate_runs_the_built_in_baselines_until_terminated(
    settings: settings_mod.Settings, bus: Bus, reader: Any, tmp_path: Path
) -> None:
    """With nothing published, the built-ins apply; /readyz turns 200; SIGTERM stops it."""
    port = processes.free_port()
    config = write_config(
        tmp_path / "config.yaml",
        settings,
        baselines=["pss-restricted"],
        data_dir=str(tmp_path / "data"),
        http={"host": "127.0.0.1", "port": port},
    )
    code = (
        "import sys, typer; from kposture.cli import evaluate_cmd; root = typer.Typer();"
        " evaluate_cmd.register(root); root.add_typer(typer.Typer(), name='x');"
        " root(sys.argv[1:])"
    )
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter; polled, not awaited
        [sys.executable, "-c", code, "evaluate", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = await _until_ready(port, proc)
        print(f"kposture evaluate ready after {ready - started:.1f} s")
        out = await reader(topics.Topic.FINDINGS)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {
                "containers": [
                    {"name": "a", "image": "a:1", "securityContext": {"privileged": True}}
                ]
            },
        }
        await bus.resource(resources.Change.ADDED, "p", pod)
        records = await out.until(
            lambda rs: any(f.check == "privileged" for _, f in rs), timeout_s=60
        )
        finding = next(f for _, f in records if f.check == "privileged")
        assert finding.baseline == "pss-restricted"
        assert finding.state is findings.Transition.OPENED
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, output.decode(errors="replace")[-3000:]


async def _until_ready(port: int, proc: subprocess.Popen[bytes]) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"kposture evaluate exited with {proc.returncode}: {output[-3000:]}")
        try:
            with await asyncio.to_thread(
                urllib.request.urlopen, f"http://127.0.0.1:{port}/readyz", timeout=2
            ) as response:
                if response.status == 200:
                    return time.monotonic()
        except OSError:
            pass
        await asyncio.sleep(0.2)
    pytest.fail("kposture evaluate did not become ready within 60 s")
