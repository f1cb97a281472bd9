"""The ``kposture ingest`` command refuses configurations it cannot run, with a clear reason."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from kposture.cli import ingest_cmd


def _app() -> typer.Typer:
    app = typer.Typer()
    ingest_cmd.register(app)
    return app


def test_ingest_without_clusters_exits_2_with_the_reason(tmp_path: Path) -> None:
    """No configured cluster is a configuration error, not a silent idle service."""
    config = tmp_path / "c.yaml"
    config.write_text("clusters: []\n")
    result = CliRunner().invoke(_app(), ["ingest", "--config", str(config)])
    assert result.exit_code == 2
    assert "no clusters configured" in result.output


def test_ingest_with_a_malformed_kind_exits_2_naming_it(tmp_path: Path) -> None:
    """A kind that is not group/version/Kind is named in the error."""
    config = tmp_path / "c.yaml"
    config.write_text("clusters: [{name: a, context: x}]\ningest: {kinds: [Pod]}\n")
    result = CliRunner().invoke(_app(), ["ingest", "--config", str(config)])
    assert result.exit_code == 2
    assert "'Pod'" in result.output
