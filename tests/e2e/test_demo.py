"""``kposture demo`` end to end: the real environment, the real pipeline, the real report.

The demo runs as users run it (the console script, in a scratch directory) against the local
environment that ``local_env`` starts. Nothing is mocked: the assertions read the
``demo-report.json`` it writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kposture.cli.devenv import environment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SCENARIOS = {
    "privileged-container",
    "hostpath-volume",
    "secret-in-env",
    "cluster-admin-binding",
    "namespace-without-networkpolicy",
    "wildcard-role",
    "seccomp-unconfined",
}
DEMO_TIMEOUT_S = 840


@pytest.fixture(scope="module")
def demo_run(
    local_env: environment.Environment, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One demo run (slow: minutes), shared by the tests of this module."""
    workdir = tmp_path_factory.mktemp("demo")
    script = Path(sys.executable).with_name("kposture")
    completed = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(script), "demo"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    report_path = workdir / "demo-report.json"
    assert report_path.is_file(), f"no report; output:\n{completed.stdout}\n{completed.stderr}"
    return completed, json.loads(report_path.read_text())


def test_demo_exits_zero_and_says_how_to_stop_the_environment(
    demo_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """The demo passes, and tells the user how to stop what it left running."""
    completed, report = demo_run
    assert completed.returncode == 0, (
        f"failures: {report.get('failures')}\n{completed.stdout[-4000:]}\n{completed.stderr}"
    )
    assert report["ok"] is True
    assert report["failures"] == []
    assert "kposture dev down" in completed.stdout


def test_every_scenario_is_detected_with_its_latency(
    demo_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """Each of the seven drifts opened a finding of one of its checks, timed from the write."""
    _, report = demo_run
    scenarios = {s["id"]: s for s in report["scenarios"]}
    assert set(scenarios) == SCENARIOS
    for scenario in scenarios.values():
        assert scenario["detected"] is True, scenario
        assert scenario["detected_by"]["check"] in scenario["checks"]
        assert 0 < scenario["time_to_detect_ms"] < 60_000
        assert scenario["ok"] is True, scenario


def test_every_enforce_scenario_with_a_fix_is_fixed(
    demo_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """The privileged container and the Unconfined seccomp profile are undone by remediate."""
    _, report = demo_run
    fixed = [s for s in report["scenarios"] if s["expected"] == "fixed"]
    assert {s["id"] for s in fixed} == {"privileged-container", "seccomp-unconfined"}
    for scenario in fixed:
        assert scenario["mode"] == "enforce"
        assert scenario["fixed"] is True, scenario
        assert scenario["time_to_detect_ms"] <= scenario["time_to_remediate_ms"] < 60_000
        assert any(step.startswith(("applied:", "verified:")) for step in scenario["audit_trail"])


def test_dry_run_and_approval_scenarios_change_nothing_but_are_recorded(
    demo_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """A dry-run namespace gets an audited dry run; a cluster-admin binding waits for a human."""
    _, report = demo_run
    scenarios = {s["id"]: s for s in report["scenarios"]}
    dry_run = scenarios["namespace-without-networkpolicy"]
    assert dry_run["outcome"] == "dry-run audited"
    assert dry_run["fixed"] is False
    assert any(step.startswith("dry-run:") for step in dry_run["audit_trail"])
    approval = scenarios["cluster-admin-binding"]
    assert approval["outcome"] == "awaiting approval"
    waiting = {a["action_id"] for a in report["approvals_waiting"]}
    assert approval["action_id"] in waiting


def test_audit_chain_posture_and_findings_are_reported(
    demo_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """The audit chain read back from Kafka verifies; posture and severities are counted."""
    _, report = demo_run
    assert report["audit"]["chain_verified"] is True
    assert report["audit"]["records"] > 0
    assert report["audit"]["break"] is None
    severities = report["findings"]["opened_by_severity"]
    assert set(severities) == {"critical", "high", "medium", "low", "info"}
    assert severities["critical"] >= 1  # the privileged container
    assert sum(severities.values()) == report["findings"]["opened_total"]
    assert set(report["posture"]) == set(report["run"]["clusters"])
    for scores in report["posture"].values():
        assert scores["snapshots"] > 0
        assert 0 <= scores["lowest"] <= scores["final"] <= 100
