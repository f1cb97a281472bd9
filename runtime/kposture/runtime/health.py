"""The HTTP endpoint of each service: ``/livez``, ``/readyz`` (with details) and ``/metrics``.

Readiness is the conjunction of named checks that the service registers (a cluster connected,
Kafka reachable, state restored); ``/readyz`` answers 200 or 503 with the state of each check,
so one broken cluster is visible without making the whole service unready if it chooses so.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import orjson
import prometheus_client
from aiohttp import web


@dataclasses.dataclass
class Check:
    """One named readiness condition and its last reported state."""

    ok: bool = False
    detail: str = "not reported yet"
    critical: bool = True  # a non-critical check shows in the details but does not fail /readyz
    changed_at: float = dataclasses.field(default_factory=time.time)


class Readiness:
    """The readiness checks of one service, reported by its tasks as they run."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def report(self, name: str, *, ok: bool, detail: str = "", critical: bool = True) -> None:
        """Record the state of check ``name``."""
        current = self._checks.get(name)
        if current is None or current.ok != ok or current.detail != detail:
            self._checks[name] = Check(ok=ok, detail=detail, critical=critical)

    def ready(self) -> bool:
        """Whether every critical check is ok (and at least one was reported)."""
        return bool(self._checks) and all(c.ok for c in self._checks.values() if c.critical)

    def details(self) -> dict[str, dict[str, object]]:
        """Every check with its state, for ``/readyz``."""
        return {
            name: {"ok": c.ok, "detail": c.detail, "critical": c.critical, "since": c.changed_at}
            for name, c in sorted(self._checks.items())
        }


def make_app(
    readiness: Readiness,
    *,
    registry: prometheus_client.CollectorRegistry = prometheus_client.REGISTRY,
    alive: Callable[[], bool] = lambda: True,
) -> web.Application:
    """The aiohttp application serving the three endpoints."""

    async def livez(_: web.Request) -> web.Response:
        return web.Response(status=200 if alive() else 503, text="ok" if alive() else "dead")

    async def readyz(_: web.Request) -> web.Response:
        body = orjson.dumps({"ready": readiness.ready(), "checks": readiness.details()})
        return web.Response(
            status=200 if readiness.ready() else 503, body=body, content_type="application/json"
        )

    async def metrics(_: web.Request) -> web.Response:
        data = prometheus_client.generate_latest(registry)
        return web.Response(
            body=data, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(app: web.Application, *, host: str, port: int) -> web.AppRunner:
    """Start serving ``app``; the caller cleans up the returned runner on shutdown."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
