"""Start-up of a long-running service command: telemetry once, and a stop on SIGINT/SIGTERM.

``kposture ingest``, ``evaluate``, ``remediate`` and ``run`` all start the same way; this keeps
that in one place.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from kposture.runtime import logs, tracing
from kposture.runtime import settings as settings_mod


def setup_telemetry(settings: settings_mod.Settings, *, service: str) -> None:
    """Configure logging and (if enabled) tracing for this process, named ``service``."""
    logs.setup(level=settings.telemetry.log_level, fmt=settings.telemetry.log_format)
    if settings.telemetry.tracing:
        tracing.setup(service, console=settings.telemetry.trace_console_export)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` in a new event loop; SIGINT or SIGTERM sets ``stop``."""

    async def supervise() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(supervise())
