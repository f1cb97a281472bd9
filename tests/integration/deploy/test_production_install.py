"""The production install: the wheel, installed without extras into a clean virtualenv.

The wheel is built from this repository and installed with its dependencies from PyPI, pinned
by constraints.txt, as the Dockerfile does. Every command runs from an empty working directory
with nothing of the repository on the path; dev, bench and demo say they need the dev extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import typer

from kposture.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

PRIVILEGED_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
spec:
  containers:
    - name: web
      image: nginx:1.27
      securityContext:
        privileged: true
"""

RESTRICTED_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
spec:
  securityContext:
    runAsNonRoot: true
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: web
      image: nginx:1.27
      securityContext:
        allowPrivilegeEscalation: false
        capabilities:
          drop: ["ALL"]
"""


class Install(NamedTuple):
    """A virtualenv holding the kposture wheel and its dependencies, no extras."""

    root: Path
    env: dict[str, str]  # the environment a user of that virtualenv has
    workdir: Path  # empty, and must stay so


def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 300) -> None:
    subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        argv, cwd=cwd, check=True, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Build the wheel and install it without extras; once per session (about 30 s)."""
    base = tmp_path_factory.mktemp("production-install")
    wheels = base / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)])
    (wheel,) = wheels.glob("kposture-*.whl")
    root = base / "venv"
    venv.create(root, with_pip=True)
    python = str(root / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "-c", str(REPO / "constraints.txt"), str(wheel)])
    # Nothing of the development environment may leak in: no source tree on the path, no
    # settings, no other virtualenv.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KPOSTURE_", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    env |= {"PATH": f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(root)}
    workdir = base / "empty"
    workdir.mkdir()
    return Install(root=root, env=env, workdir=workdir)


def kposture(install: Install, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script from the empty working directory."""
    return subprocess.run(  # noqa: S603 - the installed console script, fixed arguments
        [str(install.root / "bin" / "kposture"), *args],
        cwd=install.workdir,
        env=install.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _command_paths() -> Iterator[tuple[str, ...]]:
    """Every command and sub-command of the CLI, as the development install builds them."""
    for name in main.COMMANDS:
        yield (name,)
        command = main.load(name)
        if isinstance(command, typer.core.TyperGroup):
            for sub in command.list_commands(typer.Context(command)):
                yield (name, sub)


def _needs_dev_extra(path: tuple[str, ...]) -> bool:
    return main.COMMANDS[path[0]].needs_dev_extra


def test_the_install_holds_the_wheel_and_no_dev_dependency(install: Install) -> None:
    """kposture is imported from the virtualenv itself, and matplotlib is not there at all."""
    probe = (
        "import importlib.util, kposture.cli.main as m; "
        "print(m.__file__); print(importlib.util.find_spec('matplotlib'))"
    )
    done = subprocess.run(  # noqa: S603 - the virtualenv's interpreter, a constant probe
        [str(install.root / "bin" / "python"), "-c", probe],
        cwd=install.workdir,
        env=install.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    location, matplotlib = done.stdout.split()
    assert Path(location).is_relative_to(install.root)
    assert matplotlib == "None"


def test_version_prints_the_projects_version(install: Install) -> None:
    """`kposture --version` prints the version of pyproject.toml."""
    done = kposture(install, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"kposture {VERSION}\n", "")


def test_root_help_lists_every_command(install: Install) -> None:
    """`kposture --help` lists every top-level command, dev, bench and demo included."""
    done = kposture(install, "--help")
    assert done.returncode == 0, done.stderr
    for name in main.COMMANDS:
        assert f" {name} " in done.stdout


@pytest.mark.parametrize(
    "path", [p for p in _command_paths() if not _needs_dev_extra(p)], ids=" ".join
)
def test_every_production_command_prints_its_help(install: Install, path: tuple[str, ...]) -> None:
    """Each command outside dev, bench and demo has working `--help` without any extra."""
    done = kposture(install, *path, "--help")
    assert done.returncode == 0, done.stderr
    assert f"Usage: kposture {' '.join(path)}" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("path", [p for p in _command_paths() if _needs_dev_extra(p)], ids=" ".join)
def test_dev_commands_name_the_extra_they_need(install: Install, path: tuple[str, ...]) -> None:
    """dev, bench and demo (and their sub-commands) print one line naming the dev extra."""
    done = kposture(install, *path, "--help")
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: kposture {path[0]} needs the dev extra (missing: ")
    assert line.endswith("install it with: pip install 'kposture[dev]'")


def test_bench_without_the_extra_fails_with_one_line_not_a_traceback(install: Install) -> None:
    """`kposture bench`, run, stops before doing anything, naming the extra."""
    done = kposture(install, "bench")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "needs the dev extra" in done.stderr


def test_scan_reports_the_failures_of_a_privileged_pod(install: Install, tmp_path: Path) -> None:
    """`kposture scan` evaluates a manifest file with the built-in baselines and exits 1."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(PRIVILEGED_POD)
    done = kposture(install, "scan", str(manifest), "-b", "pss-restricted", "-o", "json")
    assert done.returncode == 1, done.stderr
    failed = {r["check"] for r in json.loads(done.stdout)["results"] if r["result"] == "fail"}
    assert {"privileged", "runAsNonRoot", "allowPrivilegeEscalation"} <= failed


def test_scan_passes_a_restricted_pod(install: Install, tmp_path: Path) -> None:
    """A pod that meets Pod Security restricted passes the scan with exit 0."""
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(RESTRICTED_POD)
    done = kposture(install, "scan", str(manifest), "-b", "pss-restricted")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failed, 0 errors" in done.stdout


def test_topics_list_prints_the_catalogue(install: Install) -> None:
    """A Kafka-side command imports and runs without extras (it needs no broker)."""
    done = kposture(install, "topics", "list")
    assert done.returncode == 0, done.stderr
    assert "kposture.findings.v1" in {t["name"] for t in json.loads(done.stdout)}


def test_the_working_directory_stays_empty(install: Install) -> None:
    """No command run above wrote anything where it was started."""
    kposture(install, "--help")
    assert list(install.workdir.iterdir()) == []
