"""Agreement with the upstream Pod Security Admission fixtures, at every level and version.

Each fixture is evaluated as a Pod and wrapped into the pod template of every workload kind
(as upstream does); every disagreement is collected and listed, so one run shows them all.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import loading
from kposture.schemas import common

CORPUS = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "corpora"
    / "pod-security-admission"
    / "testdata"
)
CHECK_IDS = (
    "allowPrivilegeEscalation", "appArmorProfile", "capabilities_baseline",
    "capabilities_restricted", "hostNamespaces", "hostPathVolumes", "hostPorts",
    "hostProbesAndHostLifecycle", "privileged", "procMount", "procMount_restricted",
    "restrictedVolumes", "runAsNonRoot", "runAsUser", "seLinuxOptions",
    "seccompProfile_baseline", "seccompProfile_restricted", "sysctls", "windowsHostProcess",
)  # fmt: skip
_BY_LOWER = {check_id.lower(): check_id for check_id in CHECK_IDS}
_MINOR = re.compile(r"^v1\.(\d+)$")


def _level_versions() -> list[tuple[str, str]]:
    if not CORPUS.is_dir():
        return [("missing", "missing")]
    pairs = [
        (level.name, version.name)
        for level in sorted(CORPUS.iterdir())
        for version in level.iterdir()
        if _MINOR.match(version.name)
    ]
    return sorted(pairs, key=lambda p: (p[0], int(p[1].split(".")[1])))


def _require_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.fail(f"the PSA corpus is missing: expected it at {CORPUS} (see shared/corpora)")


def wrap(pod: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The pod itself, then its spec in the template of every workload kind."""
    yield "Pod", dict(pod)
    template = {"metadata": pod.get("metadata", {}), "spec": pod["spec"]}
    meta = {"name": pod["metadata"]["name"], "namespace": "default"}
    for api_version, kind in (
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
    ):
        yield kind, {"apiVersion": api_version, "kind": kind, "metadata": meta,
                     "spec": {"template": template}}  # fmt: skip
    yield (
        "CronJob",
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta,
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
        },
    )


@functools.cache
def _engine(level: str, version: str) -> evaluating.Engine:
    return evaluating.Engine([loading.policy(f"pss-{level}@{version}")])


def _disagreements(level: str, version: str) -> tuple[int, list[str]]:
    evaluator = _engine(level, version)
    checked = 0
    problems: list[str] = []
    for verdict_dir in ("pass", "fail"):
        for path in sorted((CORPUS / level / version / verdict_dir).glob("*.yaml")):
            pod = yaml.safe_load(path.read_text(encoding="utf-8"))
            expected_check = _BY_LOWER.get(re.sub(r"\d+$", "", path.stem))
            for kind, obj in wrap(pod):
                checked += 1
                results = evaluator.evaluate(obj)
                by_id = {r.check_id: r for r in results}
                failing = sorted(r.check_id for r in results if r.result is common.Result.FAIL)
                errors = [f"{r.check_id}: {r.message}" for r in results
                          if r.result is common.Result.ERROR]  # fmt: skip
                where = f"{level}/{version}/{verdict_dir}/{path.name} as {kind}"
                if errors:
                    problems.append(f"{where}: errors {errors}")
                elif verdict_dir == "pass" and failing:
                    problems.append(f"{where}: expected no failure, got {failing}")
                elif verdict_dir == "fail" and expected_check is None and not failing:
                    problems.append(f"{where}: expected a failure, got none")
                elif verdict_dir == "fail" and expected_check is not None:
                    got = by_id.get(expected_check)
                    if got is None or got.result is not common.Result.FAIL:
                        problems.append(
                            f"{where}: expected {expected_check} to fail, got {failing}"
                        )
                    elif kind != "Pod" and got.path and not got.path.startswith("spec."):
                        problems.append(f"{where}: path {got.path!r} is not under the template")
    return checked, problems


@pytest.mark.parametrize(("level", "version"), _level_versions())
def test_every_fixture_agrees_with_upstream_as_pod_and_as_each_workload(
    level: str, version: str
) -> None:
    """Every fixture of one level and version gets the upstream verdict in all seven wrappings."""
    _require_corpus()
    checked, problems = _disagreements(level, version)
    assert checked > 0, f"no fixtures under {CORPUS / level / version}"
    assert not problems, f"{len(problems)} of {checked} disagree:\n" + "\n".join(problems)


def test_corpus_has_both_levels_at_every_version() -> None:
    """The corpus holds both levels from v1.0 to v1.37, so a truncated copy cannot pass."""
    _require_corpus()
    pairs = set(_level_versions())
    expected = {
        (level, f"v1.{minor}") for level in ("baseline", "restricted") for minor in range(38)
    }
    assert expected <= pairs, f"missing: {sorted(expected - pairs)}"
