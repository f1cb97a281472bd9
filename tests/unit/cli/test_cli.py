"""The console script: its help, its version, and clear errors for bad configuration."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
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


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run(  # noqa: S603 - our own interpreter and our own probe
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


HEAVY = ("matplotlib", "faust", "kubernetes_asyncio", "aiokafka", "numpy")


def test_the_entry_module_imports_no_heavy_library() -> None:
    """Importing the console script's module loads no command, so `--version` starts fast."""
    loaded = _modules_after("import kposture.cli.main")
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)
    assert not {m for m in loaded if m.startswith("kposture.") and m != "kposture.cli.main"} - {
        "kposture.cli"
    }


def test_scan_help_imports_no_io_or_plotting_library() -> None:
    """`kposture scan --help` imports the scan command only, none of Kafka, Kubernetes, plots."""
    loaded = _modules_after(
        "from kposture.cli import main\n"
        "sys.argv = ['kposture', 'scan', '--help']\n"
        "try:\n    main.main()\nexcept SystemExit:\n    pass"
    )
    assert "kposture.cli.scan_cmd" in loaded
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)


@pytest.mark.parametrize("name", list(main.COMMANDS))
def test_each_listed_summary_is_the_first_line_of_the_commands_help(name: str) -> None:
    """The line `kposture --help` shows without importing a command is that command's own."""
    command = main.load(name)
    assert (command.help or "").strip().splitlines()[0] == main.COMMANDS[name].summary


def test_root_help_imports_no_command_module() -> None:
    """`kposture --help` lists every command from its summary, without importing any."""
    loaded = _modules_after(
        "from kposture.cli import main\n"
        "sys.argv = ['kposture', '--help']\n"
        "try:\n    main.main()\nexcept SystemExit:\n    pass"
    )
    assert not {m for m in loaded if m.startswith("kposture.cli.") and m != "kposture.cli.main"}


@pytest.mark.parametrize("args", [["bench", "--help"], ["dev", "up"], ["demo"]])
def test_a_dev_command_without_the_dev_extra_says_which_extra_it_needs(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the dev extra, dev, bench and demo print one line naming it and exit 2."""
    monkeypatch.setattr(main, "missing_dev_extra", lambda: ["matplotlib"])
    result = runner.invoke(main.app, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: kposture {args[0]} needs the dev extra (missing: matplotlib); "
        "install it with: pip install 'kposture[dev]'"
    ]


def test_the_dev_extra_of_this_environment_is_complete() -> None:
    """The development install has every requirement of the dev extra, as the wheel lists them."""
    assert main.missing_dev_extra() == []


def test_an_unknown_command_is_a_usage_error() -> None:
    """A name that is not a command exits 2 and names it, as before commands were lazy."""
    result = runner.invoke(main.app, ["nosuch"])
    assert result.exit_code == 2
    assert "No such command 'nosuch'" in result.output
