"""One settings tree per process, read once at start-up from YAML plus environment overrides.

The file is optional; every field has a default that works with the local environment.
Environment variables override the file: ``KPOSTURE_<SECTION>__<FIELD>`` (double underscore
between levels, for example ``KPOSTURE_REMEDIATE__BURST=10``), plus the short alias
``KPOSTURE_KAFKA_BOOTSTRAP`` for ``kafka.bootstrap_servers``. Values are parsed as YAML scalars,
so ``true`` and ``5`` arrive typed. Invalid settings raise :class:`SettingsError` naming the
field and, for files, the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

ENV_PREFIX = "KPOSTURE_"
_ALIASES: dict[str, tuple[str, ...]] = {"KPOSTURE_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers")}


class SettingsError(ValueError):
    """The configuration is invalid; the message names the file and the field."""

    retriable = False


class _Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Settings sections are frozen and reject unknown keys (a typo must not pass silently)."""


class KafkaSettings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """How to reach Kafka and lay out the topics."""

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = "kposture"
    partitions: int = 6  # for topics that ``kposture topics create`` makes
    replication_factor: int = 1
    security_protocol: str = "PLAINTEXT"
    request_timeout_ms: int = 30_000


class ClusterSettings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One watched cluster: a kubeconfig context, or the in-cluster service account."""

    name: str
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False


class HttpSettings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where a service serves ``/livez``, ``/readyz`` and ``/metrics``. Port 0 disables it."""

    host: str = "127.0.0.1"
    port: int = 0


class TelemetrySettings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Logging and tracing."""

    log_level: str = "INFO"
    log_format: str = "json"  # json | text
    tracing: bool = True  # W3C trace context in Kafka headers; spans stay in-process by default
    trace_console_export: bool = False


class IngestSettings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Watchers. Kinds are ``group/version/Kind`` (``v1/Pod`` for the core group)."""

    kinds: list[str] | None = None  # None: the default set of the ingest service
    resync_interval_s: float = 600.0  # full re-emission of the state (anti-entropy)
    watch_timeout_s: int = 290  # server-side timeout of one watch request
    watchdog_s: float = 330.0  # relist when a watch stays silent this long (bookmarks included)
    buffer_size: int = 10_000  # events held while Kafka is unavailable before watchers wait
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    http: HttpSettings = HttpSettings(port=9101)


class EvaluateSettings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The stream processor."""

    baselines: list[str] = msgspec.field(
        default_factory=lambda: ["pss-restricted", "cis-1.12", "nsa-cisa-1.2"]
    )
    app_id: str = "kposture-evaluate"
    data_dir: str = ".kposture/evaluate"
    posture_interval_s: float = 60.0
    # How long the group waits for a silent worker before its partitions move (a crashed
    # worker's partitions stand still this long); the broker allows 6 s at least by default.
    session_timeout_s: float = 10.0
    http: HttpSettings = HttpSettings(port=9102)


class RemediateSettings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The remediator. Mode keys are ``<baseline>`` or ``<baseline>/<check>``."""

    default_mode: str = "observe"  # observe | dry-run | enforce
    modes: dict[str, str] = msgspec.field(default_factory=dict)
    patches_per_second: float = 1.0  # token bucket per cluster
    burst: int = 5
    max_concurrency: int = 4
    backoff_initial_s: float = 2.0
    backoff_factor: float = 3.0
    backoff_max_s: float = 300.0
    breaker_failures: int = 5
    breaker_touch_percent: float = 20.0
    breaker_window_s: float = 600.0
    automation_service_accounts: list[str] = msgspec.field(default_factory=list)
    canary_timeout_s: float = 300.0  # how long a canary's rollout may take to become healthy
    canary_soak_s: float = 5.0  # how long a healthy canary must stay healthy before the rest
    # Server-side apply never forces. A conflict on fields that only imperative writers
    # (create/update/patch, e.g. `kubectl edit`) set is resolved with a JSON Patch guarded by
    # tests on uid, resourceVersion and every old value; fields owned by an Apply manager or a
    # GitOps controller are always escalated. False escalates every conflict.
    take_over_imperative_fields: bool = True
    group_id: str = "kposture-remediate"
    http: HttpSettings = HttpSettings(port=9103)


class Settings(_Base, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole configuration of a kposture process."""

    kafka: KafkaSettings = KafkaSettings()
    clusters: list[ClusterSettings] = msgspec.field(default_factory=list)
    ingest: IngestSettings = IngestSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    remediate: RemediateSettings = RemediateSettings()
    telemetry: TelemetrySettings = TelemetrySettings()


def load(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``path`` (optional) and the environment; validate them."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise SettingsError(f"{path}{where}: invalid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the top level must be a mapping")
        raw = loaded or {}
    _apply_environment(raw, os.environ if environ is None else environ)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{source}: {exc}") from exc


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = _ALIASES.get(name)
        if path is None:
            parts = name[len(ENV_PREFIX) :].lower().split("__")
            if len(parts) < 2 or parts[0] not in Settings.__struct_fields__:
                continue  # other KPOSTURE_* variables (KPOSTURE_HOME...) are not settings
            path = tuple(parts)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"{name}: {part} is not a section")
            node = child
        try:
            node[path[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise SettingsError(f"{name}: cannot parse value: {exc}") from exc


def dump(settings: Settings) -> str:
    """The settings as a YAML document (what ``kposture dev config`` prints)."""
    return yaml.safe_dump(msgspec.to_builtins(settings), sort_keys=False)
