"""The console script: its help, its version, and clear errors for bad configuration."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from typer.testing import CliRunner

from kposture.cli import main

runner = CliRunner()


def test_help_lists_the_subcommands() -> None:
    """`kposture --help` names every top-level command group."""
    result = runner.invoke(main.app, ["--help"])
    assert result.exit_code == 0
    for name in ("dev", "topics"):
        assert name in result.output


def test_version_prints_the_installed_version() -> None:
    """`kposture --version` prints the distribution's version."""
    result = runner.invoke(main.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kposture {importlib.metadata.version('kposture')}"


def test_an_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    """A config with a wrong type is rejected before anything connects anywhere."""
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  partitions: lots\n")
    result = runner.invoke(main.app, ["topics", "list", "--config", str(path)])
    assert result.exit_code == 2
    assert "kafka.partitions" in result.output
