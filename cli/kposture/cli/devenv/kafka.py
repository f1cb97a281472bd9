"""The local Kafka broker: jars from Maven Central, one KRaft node on loopback.

The local environment (DESIGN.md section 5) runs a real Apache Kafka 4 broker without Docker
and without a release tarball. ``deploy/local/kafka/pom.xml`` pins the broker's jars; Maven
resolves them once into ``<home>/cache/kafka-<hash of pom.xml>``, and the broker is then started
with the JDK as a :class:`~kposture.cli.devenv.processes.ManagedProcess` in a state directory
that holds its configuration, its pid, its log and its data:

    <state_dir>/server.properties   rendered from deploy/local/kafka/server.properties
    <state_dir>/kafka.json          the ports, JDK and class-data archive of the last start
    <state_dir>/kafka.pid, kafka.log
    <state_dir>/data/               log.dirs (formatted once; a restart keeps the records)

The jar directory also receives a class-data-sharing archive (``broker-<jdk>.jsa``) written by
the first broker that stops gracefully; later starts map it and start about twice as fast.
``kposture dev up`` and the pytest fixtures use :func:`ensure_jars` and :func:`start_broker`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import string
import struct
import uuid
from pathlib import Path

from kposture.cli.devenv import processes

__all__ = [
    "BrokerEndpoint",
    "broker_status",
    "deploy_dir",
    "ensure_jars",
    "kill_broker",
    "start_broker",
    "stop_broker",
]

# The maven-dependency-plugin is named with its full version: an unversioned goal would be
# resolved from whatever plugin metadata Maven finds, and could change under us.
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_STAMP = ".resolved"
_PROCESS_NAME = "kafka"
_FRESH_ARCHIVE = "broker.jsa.new"
_NODE_ID = 1
# A broker that loads thousands of partitions on start-up logs each one; as long as its log
# grows it is making progress, so the start timeout is an idle timeout with a hard cap.
_START_TIMEOUT_S = 60.0
_START_MAX_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


@dataclasses.dataclass(frozen=True)
class BrokerEndpoint:
    """Where a running local broker serves clients.

    ``bootstrap`` is ``"127.0.0.1:<port>"``, ready for ``bootstrap_servers``; ``state_dir`` is
    the directory that holds the broker's configuration, pid, log and data.
    """

    bootstrap: str
    port: int
    state_dir: Path


def deploy_dir() -> Path:
    """The directory with the broker's ``pom.xml``, ``server.properties`` and log4j2 config."""
    # <tree>/cli/kposture/cli/devenv/kafka.py: parents[4] is the work tree (parents[3] is the
    # outer cli/ folder). The package is installed in editable mode, so this is the checkout.
    return Path(__file__).resolve().parents[4] / "deploy" / "local" / "kafka"


def ensure_jars() -> Path:
    """Resolve the broker's jars from Maven Central unless they are cached; return their dir.

    The cache directory is named after a hash of ``pom.xml``, so a version bump resolves anew
    and never mixes jars of two versions. A stamp file marks a complete resolution: Maven
    resolves into a temporary directory that is renamed into place only when it succeeded, so
    an interrupted run or a concurrent one never leaves a half-filled cache behind.

    Raises:
        processes.DevEnvError: ``java`` or ``mvn`` is missing, or Maven failed (its output
            tail is in the message).
    """
    pom = deploy_dir() / "pom.xml"
    try:
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    except OSError as exc:
        raise processes.DevEnvError(f"cannot read the Kafka POM {pom}: {exc}") from exc
    jar_dir = processes.home_dir() / "cache" / f"kafka-{digest[:16]}"
    if _stamped(jar_dir, digest):
        return jar_dir
    _java()  # Fail now, naming the missing JDK, rather than after a long resolution.
    mvn = shutil.which("mvn")
    if mvn is None:
        raise processes.DevEnvError(
            "mvn (Apache Maven) is not on PATH; it is needed once to fetch the Kafka jars"
        )
    jar_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = jar_dir.with_name(f"{jar_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        processes.run_checked(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            cwd=pom.parent,
            what="resolving the Kafka jars with Maven",
            timeout_s=1800,
        )
        if not any(staging.glob("kafka_2.13-*.jar")):
            raise processes.DevEnvError(
                f"Maven resolved {pom} but no kafka_2.13 jar arrived in {staging}"
            )
        (staging / _STAMP).write_text(digest + "\n")
        try:
            staging.rename(jar_dir)
        except OSError:
            # Another process finished the same resolution first; its copy is as good as ours.
            if not _stamped(jar_dir, digest):
                shutil.rmtree(jar_dir, ignore_errors=True)
                staging.rename(jar_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jar_dir


def start_broker(
    *, state_dir: Path, jar_dir: Path, port: int = 19092, heap: str = "512m"
) -> BrokerEndpoint:
    """Start the local broker in ``state_dir`` unless it already runs there; wait until it serves.

    The broker listens for clients on ``127.0.0.1:<port>`` and for its controller on
    ``<port + 1>``. Its data directory is formatted on the first start only: a later start in
    the same ``state_dir`` keeps the topics and records, also when ``port`` changed. If a broker
    already runs in ``state_dir`` it is reused on the port it was started with, whatever
    ``port`` says. ``heap`` is the JVM's ``-Xmx``/``-Xms`` value.

    Raises:
        processes.DevEnvError: the JDK is missing, a port is taken, or the broker did not serve
            within 60 s of its last log line, or within 15 min in all (the message carries the
            tail of its log).
    """
    proc = _process(state_dir)
    if proc.running():
        running_port = _recorded_port(state_dir)
        if running_port is not None:
            return _await_serving(proc, running_port)
        # A broker without its port record was not started by this module; restart it cleanly.
        proc.stop()

    controller_port = port + 1
    for taken in (port, controller_port):
        if processes.port_open(taken):
            raise processes.DevEnvError(
                f"cannot start Kafka in {state_dir}: 127.0.0.1:{taken} is already in use"
            )
    java = _java()
    deploy = deploy_dir()
    data_dir = state_dir / "data"
    state_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "server.properties"
    template = string.Template((deploy / "server.properties").read_text())
    config.write_text(
        template.substitute(port=port, controller_port=controller_port, data_dir=data_dir)
    )
    classpath = f"{jar_dir}/*"
    log4j = f"-Dlog4j2.configurationFile={deploy / 'log4j2.properties'}"
    archive = _class_archive(java, jar_dir)
    fresh_archive = state_dir / _FRESH_ARCHIVE
    fresh_archive.unlink(missing_ok=True)  # left by a broker that was killed while writing it
    if archive.exists():
        map_archive = [f"-XX:SharedArchiveFile={archive}"]
        class_sharing = map_archive
    else:
        # The JVM writes the archive when the broker exits; stop_broker checks it and moves it
        # next to the jars, so that every later start, in any state dir, maps it.
        map_archive = []
        class_sharing = [f"-XX:ArchiveClassesAtExit={fresh_archive}"]
    if not (data_dir / "meta.properties").exists():
        jvm = [java, *_JVM_FLAGS, *map_archive, log4j, "-cp", classpath]
        _format_storage(jvm, config=config)
    (state_dir / "kafka.json").write_text(
        json.dumps(
            {
                "port": port,
                "controller_port": controller_port,
                "java": java,
                "class_archive": str(archive),
            }
        )
        + "\n"
    )
    heap_flags = [f"-Xmx{heap}", f"-Xms{heap}"]
    argv = [java, *heap_flags, *_JVM_FLAGS, *class_sharing, log4j, "-cp", classpath]
    proc.start([*argv, "kafka.Kafka", str(config)], cwd=state_dir)
    return _await_serving(proc, port)


def stop_broker(*, state_dir: Path) -> None:
    """Stop the broker in ``state_dir`` gracefully (SIGTERM: it flushes and closes its logs).

    A broker that does not stop within 60 s is killed. Stopping a stopped broker does nothing.
    """
    # A controlled shutdown of a combined node usually takes a few seconds; 60 s leaves room for
    # a slow CI machine before we fall back to SIGKILL and a log recovery on the next start.
    if _process(state_dir).stop(timeout_s=60.0):
        _await_ports_closed(state_dir)
        _keep_class_archive(state_dir)


def kill_broker(*, state_dir: Path) -> None:
    """Kill the broker in ``state_dir`` with SIGKILL, as a crash would (for failure tests)."""
    if _process(state_dir).kill():
        _await_ports_closed(state_dir)


def broker_status(*, state_dir: Path) -> dict[str, object]:
    """A summary of the broker in ``state_dir``, for ``kposture dev status``.

    Keys: ``running`` (the process is alive), ``serving`` (it answers a metadata request),
    ``pid``, ``bootstrap`` and ``port`` (None if never started), ``formatted`` (the data
    directory holds a cluster), ``state_dir`` and ``log_file``.
    """
    proc = _process(state_dir)
    pid = proc.pid()
    port = _recorded_port(state_dir)
    return {
        "running": pid is not None,
        "serving": pid is not None and port is not None and _serves_metadata(port),
        "pid": pid,
        "bootstrap": f"127.0.0.1:{port}" if port is not None else None,
        "port": port,
        "formatted": (state_dir / "data" / "meta.properties").exists(),
        "state_dir": str(state_dir),
        "log_file": str(proc.log_file),
    }


def _class_archive(java: str, jar_dir: Path) -> Path:
    # AppCDS: a dynamic class-data archive of the ~10 000 classes the broker loads halves its
    # start-up on a busy two-core machine (13 s -> 6.5 s). An archive only fits the JVM build
    # that wrote it and the classpath it was written for, hence one per JDK in the jar dir.
    binary = Path(java).resolve()
    try:
        identity = f"{binary}:{binary.stat().st_mtime_ns}"
    except OSError:
        identity = str(binary)
    return jar_dir / f"broker-{hashlib.sha256(identity.encode()).hexdigest()[:12]}.jsa"


def _keep_class_archive(state_dir: Path) -> None:
    fresh = state_dir / _FRESH_ARCHIVE
    if not fresh.exists():
        return
    try:
        recorded = json.loads((state_dir / "kafka.json").read_text())
        java, archive = str(recorded["java"]), Path(recorded["class_archive"])
    except (OSError, ValueError, KeyError, TypeError):
        fresh.unlink(missing_ok=True)
        return
    # A broker that was killed half-way through writing leaves a truncated archive; with
    # -Xshare:on the JVM refuses to start on an archive it cannot map, so this run proves it
    # whole before it is shared. A failed check only costs the speed-up, so it is not an error.
    check = [java, "-Xshare:on", f"-XX:SharedArchiveFile={fresh}"]
    try:
        processes.run_checked(
            [*check, "-cp", f"{archive.parent}/*", "-version"],
            what="checking the broker's class-data archive",
            timeout_s=60,
        )
        fresh.replace(archive)  # atomic, so a concurrent start maps either no file or a whole one
    except (processes.DevEnvError, OSError):
        fresh.unlink(missing_ok=True)


def _process(state_dir: Path) -> processes.ManagedProcess:
    return processes.ManagedProcess(_PROCESS_NAME, state_dir)


def _stamped(jar_dir: Path, digest: str) -> bool:
    try:
        return (jar_dir / _STAMP).read_text().strip() == digest
    except OSError:
        return False


def _java() -> str:
    # JAVA_HOME wins over PATH, as it does for Kafka's own launcher scripts.
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise processes.DevEnvError(
            "java is not on PATH (and JAVA_HOME is unset); Kafka 4 needs a JDK 17 or newer"
        )
    return java


def _recorded_port(state_dir: Path) -> int | None:
    try:
        recorded = json.loads((state_dir / "kafka.json").read_text())
        return int(recorded["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _await_ports_closed(state_dir: Path) -> None:
    # The JVM's main thread turns into a zombie, and so counts as gone, while its hundred other
    # threads still exit and hold the listening sockets open for a moment. A restart right away
    # would find its ports taken; wait until the kernel has closed them.
    try:
        recorded = json.loads((state_dir / "kafka.json").read_text())
        ports = [int(recorded["port"]), int(recorded["controller_port"])]
    except (OSError, ValueError, KeyError, TypeError):
        return
    processes.wait_until(
        lambda: not any(processes.port_open(port) for port in ports),
        timeout_s=30.0,
        what=f"the Kafka ports {ports} to close after the broker in {state_dir} ended",
        interval_s=0.05,
    )


def _random_cluster_id() -> str:
    # The same format as `kafka-storage.sh random-uuid` (Kafka's Uuid: 16 random bytes in
    # unpadded URL-safe base64), made here to save a JVM start. Kafka rejects ids that start
    # with "-" because they read as command-line flags, so those are drawn again.
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def _format_storage(jvm: list[str], *, config: Path) -> None:
    # A static quorum (controller.quorum.voters) is formatted with a cluster id and no
    # --standalone; the metadata log then needs no voter record naming the controller's port.
    processes.run_checked(
        [
            *jvm,
            "-Xmx256m",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _random_cluster_id(),
            "--config",
            str(config),
        ],
        cwd=config.parent,
        what=f"formatting the Kafka storage for {config}",
        timeout_s=_FORMAT_TIMEOUT_S,
    )


def _await_serving(proc: processes.ManagedProcess, port: int) -> BrokerEndpoint:
    processes.wait_until(
        lambda: processes.port_open(port) and _serves_metadata(port),
        timeout_s=_START_TIMEOUT_S,
        what=f"Kafka to serve metadata on 127.0.0.1:{port}",
        process=proc,
        interval_s=0.25,
        progress=lambda: _size(proc.log_file),
        max_timeout_s=_START_MAX_TIMEOUT_S,
    )
    return BrokerEndpoint(bootstrap=f"127.0.0.1:{port}", port=port, state_dir=proc.state_dir)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _serves_metadata(port: int, *, timeout_s: float = 2.0) -> bool:
    """Whether the broker on ``port`` answers a Metadata request that lists itself.

    An open port is not enough: it may belong to another process, or to a broker that is still
    registering with its controller. A Metadata response that names node 1 on ``port`` proves
    that clients can bootstrap. The request is hand-made so that this check needs no Kafka client
    library and no event loop, and can run in synchronous code called from an asyncio test.
    """
    correlation_id = 7
    client_id = b"kposture-devenv"
    # Request header v1 (api_key 3 = Metadata, version 4, correlation id, client id), then the
    # body: an empty topic array (int32 0: no topics, just brokers) and no auto-creation.
    body = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body += struct.pack(">ib", 0, 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _read_exactly(sock, 4))
            response = _read_exactly(sock, size)
    except (OSError, struct.error, EOFError):
        return False
    return _metadata_lists_port(response, correlation_id=correlation_id, port=port)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise EOFError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _metadata_lists_port(response: bytes, *, correlation_id: int, port: int) -> bool:
    # Response header v0 (correlation id), then Metadata v4: throttle_time_ms, then the broker
    # array of (node_id int32, host string, port int32, rack nullable string).
    try:
        received_id, _throttle, count = struct.unpack_from(">iii", response, 0)
        offset = 12
        for _ in range(count):
            node_id, host_len = struct.unpack_from(">ih", response, offset)
            offset += 6 + host_len
            (broker_port, rack_len) = struct.unpack_from(">ih", response, offset)
            offset += 6 + max(rack_len, 0)
            if received_id == correlation_id and node_id == _NODE_ID and broker_port == port:
                return True
    except struct.error:
        return False
    return False
