"""docker-compose.yml cannot run here (no Docker engine), so its wiring is checked statically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import typer.core
import yaml

from kposture.cli import main
from kposture.runtime import settings as settings_mod

REPO = Path(__file__).resolve().parents[3]
CONTAINER_CONFIG = "/etc/kposture/config.yaml"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _kposture_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {n: s for n, s in services.items() if s.get("image", "").startswith("kposture")}


def _host_mounts(service: dict[str, Any]) -> dict[str, str]:
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            mounts[container] = host
    return mounts


def test_every_service_command_is_a_real_kposture_subcommand() -> None:
    """Each container's command resolves to a command of the `kposture` CLI, options included."""
    root = typer.main.get_command(main.app)
    services = _kposture_services()
    assert {"ingest", "evaluate", "remediate"} <= set(services)
    for name, service in services.items():
        args = list(service["command"])
        ctx = root.make_context("kposture", list(args), resilient_parsing=True)
        command: Any = root
        while isinstance(command, typer.core.TyperGroup) and args and not args[0].startswith("-"):
            sub = command.get_command(ctx, args[0])
            assert sub is not None, f"service {name}: {args[0]!r} is not a kposture command"
            command, args = sub, args[1:]
        runnable = not isinstance(command, typer.core.TyperGroup) or command.invoke_without_command
        assert runnable, f"service {name}: command is incomplete"
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for arg in args:
            if arg.startswith("--"):
                assert arg in known, f"service {name}: {command.name} has no option {arg}"


def test_every_mounted_config_file_exists_in_the_repository() -> None:
    """Files bind-mounted from the repository are there, so `docker compose up` finds them."""
    for name, service in _compose()["services"].items():
        for host in _host_mounts(service).values():
            assert (REPO / host).is_file(), f"service {name} mounts missing {host}"


def test_published_ports_match_each_services_settings() -> None:
    """The port a service publishes is the port its mounted config tells it to serve on."""
    for name, service in _kposture_services().items():
        ports = service.get("ports", [])
        if not ports:
            continue
        config = REPO / _host_mounts(service)[CONTAINER_CONFIG]
        loaded = settings_mod.load(config, environ=service.get("environment") or {})
        http = getattr(loaded, name).http
        container_ports = {int(str(p).split(":")[-1]) for p in ports}
        assert container_ports == {http.port}, (
            f"service {name} publishes {ports}, serves {http.port}"
        )
        assert http.host == "0.0.0.0", f"service {name} listens on {http.host}, unreachable"  # noqa: S104


def test_the_image_runs_as_a_non_root_user() -> None:
    """The Dockerfile drops root before the entrypoint, as a security product must."""
    lines = (REPO / "deploy" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"0", "root"}
