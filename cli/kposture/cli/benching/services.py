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
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from kposture.runtime import settings as settings_mod

_ENTRY = "from kposture.cli.main import main; main()"
_READY_POLL_S = 0.2
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class ServiceError(RuntimeError):
    """A service could not start or died; the message carries its last log lines."""

    retriable = False


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


class Service:
    """``kposture <name> --config FILE`` as a child process, logging to a file."""

    def __init__(self, name: str, *, config_path: Path, log_path: Path, http_port: int) -> None:
        self.name = name
        self.config_path = config_path
        self.log_path = log_path
        self.http_port = http_port
        self.started_at: float | None = None  # time.time() when the process was started
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The process id; :class:`ServiceError` before the start."""
        if self._process is None:
            raise ServiceError(f"{self.name} has not been started")
        return self._process.pid

    async def start(self) -> None:
        """Start the process with the bench's config file."""
        # The config file is the whole truth of a bench run: setting overrides from the
        # environment (KPOSTURE_<SECTION>__<FIELD>) would silently change what is measured.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(settings_mod.ENV_PREFIX) or k == "KPOSTURE_HOME"
        }
        self.started_at = time.time()
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ENTRY,
                self.name,
                "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # Its own process group: a Ctrl-C reaches the bench, which then stops the
                # services in order instead of all of them dying at once.
                start_new_session=True,
            )

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

    def check(self) -> None:
        """Raise :class:`ServiceError` if the process has exited."""
        process = self._process
        if process is not None and process.returncode is not None:
            raise ServiceError(
                f"{self.name} exited with {process.returncode}; last log lines:\n{self.tail()}"
            )

    def sample(self) -> Sample:
        """CPU time and RSS now."""
        return read_proc(self.pid)

    async def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``); its exit code."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode

    def tail(self, lines: int = 15) -> str:
        """The last lines of the service's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
