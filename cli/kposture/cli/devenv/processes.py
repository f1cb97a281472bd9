"""Supervision of the local environment's long-running processes.

The local environment (DESIGN.md section 5) runs a Kafka broker and several Kubernetes control
planes as plain OS processes. Each one is started detached from the caller, with its output in a
log file and its pid in a pid file, so that a later ``kposture dev up`` can find and reuse it and
``kposture dev down`` can stop it. Nothing here knows about Kafka or Kubernetes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# Popen objects of the processes this interpreter started, kept so that they are not garbage
# collected while their process runs (Popen.__del__ warns about a live child) and so that
# stop() can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class DevEnvError(RuntimeError):
    """The local environment could not be provisioned or started; the message says why."""


@dataclasses.dataclass(frozen=True)
class ManagedProcess:
    """A detached process identified by a name inside a state directory.

    ``state_dir/<name>.pid`` holds its pid and ``state_dir/<name>.log`` its output.
    """

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        """Where the pid of the running process is kept."""
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """Where stdout and stderr of the process go."""
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the process if it is alive, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.pid() is not None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start the process detached (its own session) unless it already runs; return its pid."""
        existing = self.pid()
        if existing is not None:
            return existing
        self.state_dir.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with self.log_file.open("ab") as log:
            log.write(
                f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode()
            )
            log.flush()
            try:
                proc = subprocess.Popen(  # noqa: S603 - argv is built by our own code, never a shell
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=full_env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise DevEnvError(f"cannot start {self.name}: {exc}") from exc
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, *, timeout_s: float = 20.0) -> bool:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``); True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            _signal_group(pid, signal.SIGKILL)
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        _reap(pid)
        return True

    def kill(self) -> bool:
        """Kill the process at once with SIGKILL (a crash, for failure tests); True if it ran."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGKILL)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        _reap(pid)
        return True

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, to put in an error message."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The process leads its own session, so its group id is its pid: signal the whole group
    # so that wrapper scripts (the Kafka launcher) take their children with them.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    process: ManagedProcess | None = None,
    interval_s: float = 0.2,
    progress: Callable[[], object] | None = None,
    max_timeout_s: float | None = None,
) -> None:
    """Poll ``predicate`` until it is true; on timeout, or if ``process`` dies, raise DevEnvError.

    With ``progress``, ``timeout_s`` is an idle timeout: each time ``progress()`` returns a new
    value (a log that grows, say) the deadline moves ``timeout_s`` further out, but never past
    ``max_timeout_s`` from the start. The error carries the tail of the process log, so a failed
    start explains itself.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    hard_deadline = started + max(timeout_s, max_timeout_s or timeout_s)
    last_progress = progress() if progress is not None else None
    while time.monotonic() < deadline:
        if predicate():
            return
        if progress is not None:
            current = progress()
            if current != last_progress:
                last_progress = current
                deadline = min(time.monotonic() + timeout_s, hard_deadline)
        if process is not None and not process.running():
            raise DevEnvError(
                f"{process.name} exited while waiting for {what}; log {process.log_file}:\n"
                f"{process.log_tail()}"
            )
        time.sleep(interval_s)
    tail = f"; log {process.log_file}:\n{process.log_tail()}" if process else ""
    waited = time.monotonic() - started
    raise DevEnvError(f"timed out after {waited:.0f}s waiting for {what}{tail}")


def https_ok(url: str, *, token: str | None = None, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 200 over HTTPS; the certificate is not verified (loopback only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url)  # noqa: S310 - URLs are built by our code, loopback only
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=ctx) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def run_checked(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str,
    timeout_s: float = 3600,
) -> str:
    """Run a build step to completion; raise DevEnvError with its output tail if it fails."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        done = subprocess.run(  # noqa: S603 - argv is built by our own code
            list(argv),
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevEnvError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise DevEnvError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair(*, attempts: int = 200) -> int:
    """A port ``p`` on 127.0.0.1 such that ``p`` and ``p + 1`` can both be listened on now.

    Taken below the kernel's range of ephemeral ports: a port from that range (what binding
    port 0 gives) can be taken at any moment by an outgoing connection's local end, so its
    neighbour, checked free, could be gone by the time a server binds it.
    """
    low = _ephemeral_low()
    rng = random.Random()  # noqa: S311 - a port number, not a secret
    for _ in range(attempts):
        port = rng.randrange(max(1024, low - 12_000), low - 1)
        if _bindable(port) and _bindable(port + 1):
            return port
    raise DevEnvError(f"no two adjacent free ports below {low} on 127.0.0.1")


def _ephemeral_low() -> int:
    # The first port of the kernel's ephemeral range (32768 by default on Linux).
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def home_dir() -> Path:
    """Root of the local environment: ``$KPOSTURE_HOME`` or ``~/.cache/kposture``.

    Builds (jars, binaries) are cached under ``<home>/cache`` and kept across ``dev down``;
    running state lives under ``<home>/state`` and ``dev down`` removes it. The home is outside
    the work tree so that a fresh clone (as in CI) reuses the cached builds.
    """
    configured = os.environ.get("KPOSTURE_HOME")
    return Path(configured) if configured else Path.home() / ".cache" / "kposture"
