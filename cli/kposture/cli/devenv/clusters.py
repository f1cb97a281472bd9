"""Local Kubernetes control planes for the development environment (DESIGN.md section 5).

Each cluster is a real etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built
from the Kubernetes Go modules by ``deploy/local/cluster/build.sh``, plus kwok, which plays the
kubelets of three simulated nodes so that Deployments roll out and Pods become Ready without a
container runtime. Every process listens on 127.0.0.1 only; cluster ``N`` uses its own ports
and its own state directory, so several clusters run side by side, one kubeconfig context each.

Layout of ``<state_root>/cluster-N``: ``pki/`` (CA, serving certificate, service-account key),
``admin.token`` and ``tokens.csv`` (the static admin credential), ``admin.kubeconfig`` (what
the components use), ``etcd/`` (the data), ``settings.json`` (the options that
restart_apiserver reuses) and, per process, its ``.pid`` and ``.log`` files (see
``processes.ManagedProcess``) and the ``.argv.json`` it was started with.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import yaml

from kposture.cli.devenv import processes

# The cluster build inputs: the Go modules and the script that builds them. This file is
# <tree>/cli/kposture/cli/devenv/clusters.py, so parents[4] is the work tree.
_BUILD_DIR = Path(__file__).resolve().parents[4] / "deploy" / "local" / "cluster"

# The user that the static token authenticates; system:masters bypasses RBAC, which is what a
# development cluster's owner expects (like kind's admin kubeconfig).
_ADMIN_USER = "kposture-admin"
_ADMIN_GROUP = "system:masters"

# Pods and Services never carry traffic here (kwok only writes their status), but the ranges
# must exist; the first Service address is the in-cluster "kubernetes" Service.
_SERVICE_CIDR = "10.96.0.0/16"
_KUBERNETES_SERVICE_IP = "10.96.0.1"
_SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# kwok manages only the nodes that carry this annotation, so that it never touches a node it
# did not create; the names and sizes are those of kwok's own examples.
_KWOK_ANNOTATION_KEY = "kwok.x-k8s.io/node"
_KWOK_ANNOTATION_VALUE = "fake"
_NODE_COUNT = 3
_NODE_ALLOCATABLE = {"cpu": "32", "memory": "256Gi", "pods": "110"}
# kwok renews a small Lease per node rather than rewriting the whole node status every 10 s,
# as kubelets do; the node-heartbeat-with-lease stage that build.sh ships relies on it.
_NODE_LEASE_DURATION_S = 40

# A cold apiserver needs 10 to 30 s on two cores to bootstrap its RBAC roles and priority
# levels; the other waits are for the controllers' first sync.
_ETCD_TIMEOUT_S = 60.0
_APISERVER_TIMEOUT_S = 180.0
_CONTROLLERS_TIMEOUT_S = 120.0

# Stopped in this order, started in the reverse one: the clients go before their server.
_PROCESS_NAMES = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


@dataclasses.dataclass(frozen=True)
class ClusterEndpoint:
    """How to reach one local cluster as its administrator.

    ``token`` is a bearer token in group ``system:masters``; it is kept out of ``repr`` so that
    logging an endpoint does not leak it.
    """

    index: int
    name: str
    server: str
    token: str = dataclasses.field(repr=False)
    ca_file: Path
    kubeconfig_context: str


@dataclasses.dataclass(frozen=True)
class _Ports:
    """The loopback ports of cluster ``index``; fixed, so a restart finds the same cluster."""

    apiserver: int
    etcd_client: int
    etcd_peer: int

    @classmethod
    def of(cls, index: int) -> _Ports:
        offset = index - 1
        return cls(
            apiserver=16443 + offset,
            etcd_client=12379 + 10 * offset,
            etcd_peer=12380 + 10 * offset,
        )


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The files of one cluster inside its state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_cert(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.pki / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.pki / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.pki / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.pki / "sa.pub"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    @property
    def token_csv(self) -> Path:
        return self.root / "tokens.csv"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"

    def process(self, name: str) -> processes.ManagedProcess:
        return processes.ManagedProcess(name=name, state_dir=self.root)


def _name(index: int) -> str:
    return f"kposture-{index}"


def _layout(index: int, state_root: Path) -> _Layout:
    if index < 1:
        raise ValueError(f"cluster index must be 1 or more, not {index}")
    return _Layout(root=state_root / f"cluster-{index}")


# --- binaries -------------------------------------------------------------------------------


def _build_inputs_hash() -> str:
    """A digest of what build.sh builds from, so that a changed pin builds into a new dir."""
    digest = hashlib.sha256()
    patterns = ("go.mod", "go.sum", "*.go", "build.sh")
    files = sorted({p for pattern in patterns for p in _BUILD_DIR.rglob(pattern) if p.is_file()})
    for path in files:
        digest.update(path.relative_to(_BUILD_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def ensure_binaries() -> Path:
    """Build etcd, the control plane and kwok unless already built; return their directory.

    The directory is ``<home>/cache/cluster-<hash of the build inputs>``: it outlives
    ``dev down`` and a fresh clone reuses it. The first build compiles Kubernetes from source
    and takes many minutes; later calls return in well under a second.

    Raises:
        processes.DevEnvError: ``go`` is not installed, or the build failed (the message
            carries the tail of its output).
    """
    build_script = _BUILD_DIR / "build.sh"
    if not build_script.is_file():
        raise processes.DevEnvError(f"cluster build script not found: {build_script}")
    bash = shutil.which("bash")
    if bash is None:
        raise processes.DevEnvError("bash is needed to build the local clusters")
    if shutil.which("go") is None:
        raise processes.DevEnvError(
            "go is not on PATH: the local clusters are built from the Kubernetes Go modules "
            "and need Go 1.26 or later"
        )
    bin_dir = processes.home_dir() / "cache" / f"cluster-{_build_inputs_hash()}"
    bin_dir.parent.mkdir(parents=True, exist_ok=True)
    # Two callers at once (two pytest sessions, say) would build into the same directory;
    # the second waits for the first and then finds the binaries up to date.
    with _exclusive(bin_dir.with_name(bin_dir.name + ".lock")):
        processes.run_checked(
            [bash, str(build_script), str(bin_dir)],
            cwd=_BUILD_DIR,
            what="building the local Kubernetes binaries",
        )
    return bin_dir


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- credentials ----------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise processes.DevEnvError("openssl is needed to make the local clusters' certificates")
    processes.run_checked([openssl, *args], cwd=cwd, what=f"openssl {args[0]}", timeout_s=60)


def _openssl_config(index: int) -> str:
    # Our own minimal config rather than the system's, whose v3_ca section varies between
    # distributions; Go's TLS stack insists on the CA flags and on SANs (no CN fallback).
    return f"""\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = {_name(index)}

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash

[serving_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @alt_names

[alt_names]
DNS.1 = localhost
DNS.2 = kubernetes
DNS.3 = kubernetes.default
DNS.4 = kubernetes.default.svc
DNS.5 = kubernetes.default.svc.cluster.local
IP.1 = 127.0.0.1
IP.2 = {_KUBERNETES_SERVICE_IP}
"""


def _ensure_pki(layout: _Layout, index: int) -> None:
    """Create the cluster's CA, serving certificate and service-account key once."""
    wanted = [layout.ca_cert, layout.ca_key, layout.serving_cert, layout.serving_key]
    wanted += [layout.sa_key, layout.sa_pub]
    if all(path.is_file() for path in wanted):
        return
    # A partial set (an interrupted start) is redone whole, so that the certificate always
    # matches its CA.
    shutil.rmtree(layout.pki, ignore_errors=True)
    layout.pki.mkdir(parents=True, mode=0o700)
    pki = layout.pki
    (pki / "openssl.cnf").write_text(_openssl_config(index))
    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", "-config", "openssl.cnf", "-extensions", "ca_ext", *ec_key,
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", f"/CN={_name(index)}-ca",
        cwd=pki,
    )  # fmt: skip
    _openssl(
        "req", "-new", "-config", "openssl.cnf", *ec_key,
        "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver",
        cwd=pki,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "3650",
        "-extfile", "openssl.cnf", "-extensions", "serving_ext", "-out", "apiserver.crt",
        cwd=pki,
    )  # fmt: skip
    # RSA for the service-account tokens: every client library verifies RS256.
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key",
        cwd=pki,
    )  # fmt: skip
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in (layout.ca_key, layout.serving_key, layout.sa_key):
        key.chmod(0o600)


def _write_private(path: Path, text: str) -> None:
    """Write a file that holds a credential, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _ensure_admin_token(layout: _Layout) -> str:
    if layout.admin_token.is_file():
        token = layout.admin_token.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    _write_private(layout.admin_token, token + "\n")
    return token


def _kubeconfig_document(
    entries: Sequence[tuple[str, str, str, str]], *, current_context: str
) -> dict[str, object]:
    """A kubeconfig for (context name, server, CA PEM, token) entries."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(),
                },
            }
            for name, server, ca_pem, _ in entries
        ],
        "users": [
            {"name": f"{name}-admin", "user": {"token": token}} for name, _, _, token in entries
        ],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}
            for name, _, _, _ in entries
        ],
        "current-context": current_context,
    }


def write_kubeconfig(clusters: Sequence[ClusterEndpoint], path: Path) -> None:
    """Write one kubeconfig with a context per cluster, named like the cluster (kposture-N).

    The CA is inlined, so the file stays valid wherever it is copied; it holds the admin
    tokens and is therefore created readable by its owner only. The current context is the
    first cluster's.
    """
    if not clusters:
        raise ValueError("write_kubeconfig needs at least one cluster")
    ordered = sorted(clusters, key=lambda cluster: cluster.index)
    document = _kubeconfig_document(
        [(c.kubeconfig_context, c.server, c.ca_file.read_text(), c.token) for c in ordered],
        current_context=ordered[0].kubeconfig_context,
    )
    _write_private(path, yaml.safe_dump(document, sort_keys=False))


# --- processes ------------------------------------------------------------------------------


def _endpoint(index: int, layout: _Layout, token: str) -> ClusterEndpoint:
    return ClusterEndpoint(
        index=index,
        name=_name(index),
        server=f"https://127.0.0.1:{_Ports.of(index).apiserver}",
        token=token,
        ca_file=layout.ca_cert,
        kubeconfig_context=_name(index),
    )


def _start(
    layout: _Layout, name: str, argv: Sequence[str], *, port: int | None = None
) -> processes.ManagedProcess:
    """Start one component unless it runs as asked; refuse to if a stranger holds its port.

    A component that runs with other options or binaries (another compaction interval, a
    newer build) is restarted, so that what runs is always what the caller asked for.
    """
    process = layout.process(name)
    argv_file = layout.root / f"{name}.argv.json"
    if process.running():
        try:
            same = json.loads(argv_file.read_text()) == list(argv)
        except (FileNotFoundError, ValueError):
            same = False
        if same:
            return process
        process.stop()
    if port is not None and processes.port_open(port):
        raise processes.DevEnvError(
            f"cannot start {name} of cluster {layout.root.name}: port 127.0.0.1:{port} is "
            "taken by a process that is not ours"
        )
    process.start(argv)
    argv_file.write_text(json.dumps(list(argv)))
    return process


def _etcd_argv(index: int, layout: _Layout, bin_dir: Path) -> list[str]:
    ports = _Ports.of(index)
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(bin_dir / "etcd"),
        f"--name={_name(index)}",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={_name(index)}={peer}",
        # A throwaway development store: skipping fsync makes writes, and so every test,
        # several times faster; only a crash of the whole machine could lose data.
        "--unsafe-no-fsync=true",
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


def _apiserver_argv(
    index: int, layout: _Layout, bin_dir: Path, *, etcd_compaction_interval: str
) -> list[str]:
    ports = _Ports.of(index)
    return [
        str(bin_dir / "kube-apiserver"),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The endpoint reconciler publishes the advertise address as the endpoint of the
        # "kubernetes" Service and refuses a loopback one; nothing here dials that Service
        # (its pods are simulated), so it keeps its ClusterIP and goes without endpoints.
        "--endpoint-reconciler-type=none",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={layout.root / 'apiserver-certs'}",
        f"--tls-cert-file={layout.serving_cert}",
        f"--tls-private-key-file={layout.serving_key}",
        f"--client-ca-file={layout.ca_cert}",
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        # How often the apiserver compacts etcd's history; shorter means watches resumed from
        # an old resourceVersion get 410 Gone sooner, which some tests provoke on purpose.
        f"--etcd-compaction-interval={etcd_compaction_interval}",
        f"--token-auth-file={layout.token_csv}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={_SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={layout.sa_pub}",
        f"--service-account-signing-key-file={layout.sa_key}",
        f"--service-cluster-ip-range={_SERVICE_CIDR}",
        # A posture tool is tested with the risky workloads it must flag, privileged ones too.
        "--allow-privileged=true",
        # On SIGTERM, answer 429 Retry-After until in-flight requests drain, then give open
        # watches 2 s; by default it waits up to the 60 s request timeout for watches that
        # never end, and a restart (restart_apiserver) would take that long.
        "--shutdown-send-retry-after=true",
        "--profiling=false",
    ]


def _controller_manager_argv(layout: _Layout, bin_dir: Path) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={layout.kubeconfig}",
        # Nothing scrapes it, and an unserved port cannot collide with another cluster's.
        "--secure-port=0",
        # One instance per cluster: electing a leader would only delay a restart by the lease
        # duration of the instance that died.
        "--leader-elect=false",
        # Each controller acts under its own service account, as in a real cluster, so RBAC
        # denials show up here too.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={layout.sa_key}",
        f"--root-ca-file={layout.ca_cert}",
        f"--cluster-signing-cert-file={layout.ca_cert}",
        f"--cluster-signing-key-file={layout.ca_key}",
        # Its default is under /usr/libexec, which it would create: keep to the state dir.
        f"--flex-volume-plugin-dir={layout.root / 'flexvolume'}",
        # All controllers that run without a cloud provider; the cloud ones are off by default.
        "--controllers=*",
        "--profiling=false",
    ]


def _scheduler_argv(layout: _Layout, bin_dir: Path) -> list[str]:
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={layout.kubeconfig}",
        "--secure-port=0",
        "--leader-elect=false",
        "--profiling=false",
    ]


def _kwok_argv(layout: _Layout, bin_dir: Path) -> list[str]:
    return [
        str(bin_dir / "kwok"),
        f"--kubeconfig={layout.kubeconfig}",
        # The upstream stages (node ready, lease heartbeat, pod ready/complete/delete) that
        # build.sh extracted from the pinned kwok module.
        f"--config={bin_dir / 'kwok-stages.yaml'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={_KWOK_ANNOTATION_KEY}={_KWOK_ANNOTATION_VALUE}",
        f"--node-lease-duration-seconds={_NODE_LEASE_DURATION_S}",
        # At INFO it logs every lease renewal and pod patch: a line per node every few seconds.
        "--v=WARN",
    ]


def _read_settings(layout: _Layout) -> dict[str, str]:
    try:
        loaded = json.loads(layout.settings.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def _start_apiserver(
    index: int, layout: _Layout, bin_dir: Path, token: str, *, etcd_compaction_interval: str
) -> None:
    argv = _apiserver_argv(
        index, layout, bin_dir, etcd_compaction_interval=etcd_compaction_interval
    )
    process = _start(layout, "kube-apiserver", argv, port=_Ports.of(index).apiserver)
    server = f"https://127.0.0.1:{_Ports.of(index).apiserver}"
    processes.wait_until(
        lambda: processes.https_ok(f"{server}/readyz", token=token),
        timeout_s=_APISERVER_TIMEOUT_S,
        what=f"{_name(index)} kube-apiserver /readyz",
        process=process,
    )


def start_cluster(
    index: int,
    *,
    state_root: Path,
    bin_dir: Path,
    etcd_compaction_interval: str = "5m",
) -> ClusterEndpoint:
    """Start cluster ``index`` (1, 2, ...) unless it runs, and return how to reach it.

    Idempotent: processes that already run are reused, and certificates, token and etcd data
    under ``state_root/cluster-<index>`` are kept across stops. A process that runs with other
    options or binaries, e.g. an apiserver started with another ``etcd_compaction_interval``
    (a Go duration such as ``"5m"``), is restarted with those asked for. Returns once the
    apiserver is ready, the three kwok nodes are Ready and the controller manager has created
    the default service account.

    Raises:
        processes.DevEnvError: a component could not start or become ready in time; the
            message carries the tail of its log.
    """
    layout = _layout(index, state_root)
    layout.root.mkdir(parents=True, exist_ok=True)
    # `dev up` and a test may start the same cluster at once; the second one waits and then
    # finds everything running.
    with _exclusive(layout.root / "start.lock"):
        return _start_cluster(
            index, layout, bin_dir=bin_dir, etcd_compaction_interval=etcd_compaction_interval
        )


def _start_cluster(
    index: int, layout: _Layout, *, bin_dir: Path, etcd_compaction_interval: str
) -> ClusterEndpoint:
    _ensure_pki(layout, index)
    token = _ensure_admin_token(layout)
    _write_private(layout.token_csv, f'{token},{_ADMIN_USER},{_ADMIN_USER},"{_ADMIN_GROUP}"\n')
    endpoint = _endpoint(index, layout, token)
    document = _kubeconfig_document(
        [(endpoint.name, endpoint.server, layout.ca_cert.read_text(), token)],
        current_context=endpoint.name,
    )
    _write_private(layout.kubeconfig, yaml.safe_dump(document, sort_keys=False))

    ports = _Ports.of(index)
    etcd = _start(layout, "etcd", _etcd_argv(index, layout, bin_dir), port=ports.etcd_client)
    processes.wait_until(
        lambda: processes.port_open(ports.etcd_client),
        timeout_s=_ETCD_TIMEOUT_S,
        what=f"{endpoint.name} etcd on port {ports.etcd_client}",
        process=etcd,
    )

    # Kept for restart_apiserver, which must bring the apiserver back as it was.
    layout.settings.write_text(json.dumps({"etcd_compaction_interval": etcd_compaction_interval}))
    _start_apiserver(
        index, layout, bin_dir, token, etcd_compaction_interval=etcd_compaction_interval
    )

    controller_manager = _start(
        layout, "kube-controller-manager", _controller_manager_argv(layout, bin_dir)
    )
    scheduler = _start(layout, "kube-scheduler", _scheduler_argv(layout, bin_dir))
    kwok = _start(layout, "kwok", _kwok_argv(layout, bin_dir))

    _register_nodes(endpoint)
    processes.wait_until(
        lambda: _ready_nodes(endpoint) >= _NODE_COUNT,
        timeout_s=_CONTROLLERS_TIMEOUT_S,
        what=f"{endpoint.name} kwok nodes to become Ready",
        process=kwok,
    )
    # The service-account controller creates "default" in every namespace; until it has, the
    # first Pod of a test would be rejected.
    processes.wait_until(
        lambda: (
            _api(endpoint, "GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
        ),
        timeout_s=_CONTROLLERS_TIMEOUT_S,
        what=f"{endpoint.name} kube-controller-manager to create the default service account",
        process=controller_manager,
    )
    if not scheduler.running():
        raise processes.DevEnvError(
            f"{endpoint.name} kube-scheduler exited; log {scheduler.log_file}:\n"
            f"{scheduler.log_tail()}"
        )
    return endpoint


def restart_apiserver(index: int, *, state_root: Path, bin_dir: Path) -> None:
    """Stop cluster ``index``'s apiserver and start it again with the same options.

    Everything else keeps running, so clients see their watches break and must resume them,
    as in an apiserver rollout. Returns once ``/readyz`` answers again.
    """
    layout = _layout(index, state_root)
    token = layout.admin_token.read_text().strip() if layout.admin_token.is_file() else ""
    if not token:
        raise processes.DevEnvError(f"{_name(index)} was never started under {state_root}")
    interval = _read_settings(layout).get("etcd_compaction_interval", "5m")
    layout.process("kube-apiserver").stop()
    _start_apiserver(index, layout, bin_dir, token, etcd_compaction_interval=interval)


def stop_cluster(index: int, *, state_root: Path) -> None:
    """Stop every process of cluster ``index``; its state stays for the next start."""
    layout = _layout(index, state_root)
    for name in _PROCESS_NAMES:
        layout.process(name).stop()


def cluster_status(index: int, *, state_root: Path) -> dict[str, object]:
    """Describe cluster ``index``: its server, ports, and the pid of each process or None.

    ``ready`` is whether the apiserver answers ``/readyz`` for the admin token.
    """
    layout = _layout(index, state_root)
    ports = _Ports.of(index)
    server = f"https://127.0.0.1:{ports.apiserver}"
    token = layout.admin_token.read_text().strip() if layout.admin_token.is_file() else ""
    pids = {name: layout.process(name).pid() for name in reversed(_PROCESS_NAMES)}
    return {
        "index": index,
        "name": _name(index),
        "server": server,
        "state_dir": str(layout.root),
        "ports": dataclasses.asdict(ports),
        "processes": pids,
        "ready": bool(token) and processes.https_ok(f"{server}/readyz", token=token),
    }


# --- API calls during start-up --------------------------------------------------------------


def _api(
    endpoint: ClusterEndpoint,
    method: str,
    path: str,
    body: Mapping[str, object] | None = None,
) -> tuple[int, dict[str, object]]:
    """One request to the apiserver as admin; the status and the decoded JSON body.

    HTTP errors are returned, not raised, since callers expect some (404, 409); an
    unreachable apiserver is status 0.
    """
    context = ssl.create_default_context(cafile=str(endpoint.ca_file))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by our code
        endpoint.server + path, data=data, method=method
    )
    request.add_header("Authorization", f"Bearer {endpoint.token}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {}
    try:
        decoded = json.loads(raw) if raw else {}
    except ValueError:
        decoded = {}
    return status, decoded if isinstance(decoded, dict) else {}


def _node_manifest(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                _KWOK_ANNOTATION_KEY: _KWOK_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        # No kwok taint: every node here is simulated, so workloads need no toleration.
        "spec": {},
        "status": {
            "allocatable": _NODE_ALLOCATABLE,
            "capacity": _NODE_ALLOCATABLE,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
            "phase": "Running",
        },
    }


def _register_nodes(endpoint: ClusterEndpoint) -> None:
    for number in range(1, _NODE_COUNT + 1):
        name = f"kwok-node-{number}"
        status, _ = _api(endpoint, "GET", f"/api/v1/nodes/{name}")
        if status == 200:
            continue
        status, body = _api(endpoint, "POST", "/api/v1/nodes", _node_manifest(name))
        if status not in (201, 409):  # 409: created meanwhile by a concurrent start
            raise processes.DevEnvError(
                f"{endpoint.name}: cannot register node {name} (HTTP {status}): "
                f"{body.get('message', '')}"
            )


def _ready_nodes(endpoint: ClusterEndpoint) -> int:
    status, body = _api(endpoint, "GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
    if status != 200:
        return 0
    items = body.get("items")
    ready = 0
    for node in items if isinstance(items, list) else []:
        conditions = node.get("status", {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            ready += 1
    return ready
