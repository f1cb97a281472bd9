"""The services under test, each in its own child process, measured from ``/proc``.

``kposture ingest``, ``kposture evaluate`` and ``kposture remediate`` run exactly as an operator
runs them (one config file, one command each), so each one's CPU time and resident memory can
be read from ``/proc/<pid>`` without the bench's own work mixed in. Each serves ``/readyz`` on a
free loopback port, which is how the bench knows it has started. They are stopped with
SIGTERM (a clean shutdown), and SIGKILL only if that takes too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from pathlib import Path

import aiohttp

from kposture.cli import localops

_READY_POLL_S = 0.2
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class ServiceError(localops.ProcessError):
    """A service could not start or died; the message carries its last log lines."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One reading of a process: CPU seconds so far (user + system) and resident bytes."""

    at: float  # time.monotonic() of the reading
    cpu_seconds: float
    rss_bytes: int


def free_port() -> int:
    """A loopback port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_proc(pid: int) -> Sample:
    """CPU time and RSS of ``pid`` from ``/proc`` (Linux); ProcessLookupError once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        statm = Path(f"/proc/{pid}/statm").read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise ProcessLookupError(pid) from exc
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime: fields 14-17 of proc(5); 0-based 11-14 after the name.
    ticks = sum(int(value) for value in fields[11:15])
    return Sample(
        at=time.monotonic(),
        cpu_seconds=ticks / _TICKS_PER_S,
        rss_bytes=int(statm.split()[1]) * _PAGE_BYTES,
    )


class Service(localops.ChildProcess):
    """``kposture <name> --config FILE`` as a child process, logging to a file."""

    error = ServiceError
    stop_timeout_s = 20.0

    def __init__(self, name: str, *, config_path: Path, log_path: Path, http_port: int) -> None:
        super().__init__(name, label=name, config_path=config_path, log_path=log_path)
        self.name = name
        self.http_port = http_port

    @property
    def pid(self) -> int:
        """The process id; :class:`ServiceError` before the start."""
        if self._process is None:
            raise ServiceError(f"{self.name} has not been started")
        return self._process.pid

    async def wait_ready(self, *, timeout_s: float) -> float:
        """Wait until ``/readyz`` answers 200; the seconds it took from the start."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                self.check()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return time.time() - (self.started_at or time.time())
                await asyncio.sleep(_READY_POLL_S)
        raise ServiceError(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.tail()}")

    def sample(self) -> Sample:
        """CPU time and RSS now."""
        return read_proc(self.pid)
