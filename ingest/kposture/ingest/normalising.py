"""The normaliser: what an observed object looks like on ``kposture.resources.v1``.

Every object passes through :func:`normalise` before it is published or logged, so this is the
one place that guarantees that no Secret value leaves a cluster:

* ``metadata.managedFields`` is dropped everywhere (noise, and it grows with every writer);
* Secrets keep only their metadata, ``type`` and ``immutable``: no ``data``, no ``stringData``,
  and no ``kubectl.kubernetes.io/last-applied-configuration`` annotation (which holds the data);
* ConfigMaps keep only their metadata (the same annotation goes too, for the same reason).
  kubeapi.py already requests both kinds as PartialObjectMetadata, so in ingest their values
  (and ``type`` and ``immutable``) never arrive here: these rules are a second defence;
* Nodes keep only their labels and spec: their status and annotations change all the time and
  say nothing about posture;
* every literal ``env[].value`` of every container, init container and ephemeral container, in
  Pods, pod templates and CronJob job templates alike (found by shape, so custom workloads are
  covered too), becomes :data:`REDACTED`. The marker still shows *that* a value was set, which
  is what checks need; it never shows the value or its length. ``valueFrom`` is kept. The
  last-applied annotation of any other object is normalised the same way, since it repeats the
  object as it was applied.

:func:`digest` hashes the normalised object without ``status``, ``resourceVersion``,
``managedFields`` and ``generation``, so the watchers can suppress updates that change nothing a
consumer evaluates. This module is pure: no I/O, no asyncio, no Kubernetes or Kafka client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson

from kposture.schemas import common

REDACTED = "__kposture_redacted__"
"""What a literal environment value is replaced with (a fixed marker: it leaks no length)."""

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""The annotation in which ``kubectl apply`` stores the whole applied object, values included."""

_CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})
_SECRET_KEEP = ("apiVersion", "kind", "metadata", "type", "immutable")
_CONFIGMAP_KEEP = ("apiVersion", "kind", "metadata", "immutable")
_NODE_METADATA_KEEP = ("name", "uid", "resourceVersion", "creationTimestamp", "labels")
_DIGEST_METADATA_SKIP = frozenset({"resourceVersion", "managedFields", "generation"})


def normalise(obj: Mapping[str, Any], *, api_version: str, kind: str) -> dict[str, Any]:
    """Return the publishable form of ``obj``; the input is left untouched.

    ``api_version`` and ``kind`` are stamped on the result, because the items of a list
    response carry neither.
    """
    core_group = "/" not in api_version
    if core_group and kind == "Secret":
        return _metadata_only(obj, _SECRET_KEEP, api_version=api_version, kind=kind)
    if core_group and kind == "ConfigMap":
        return _metadata_only(obj, _CONFIGMAP_KEEP, api_version=api_version, kind=kind)
    if core_group and kind == "Node":
        return _node(obj, api_version=api_version)
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    for key, value in obj.items():
        if key in {"apiVersion", "kind"}:
            continue
        if key == "metadata" and isinstance(value, Mapping):
            out[key] = _metadata(value, applied=_normalise_last_applied)
        elif key == "status":
            # Status is carried as observed but is never inspected for containers: it holds no
            # env, and copying it without a walk keeps large statuses cheap.
            out[key] = value
        else:
            out[key] = _redact_env(value, parent_key=key)
    return out


def digest(normalised: Mapping[str, Any]) -> str:
    """A stable hash of everything in ``normalised`` except status and version noise."""
    body = {k: v for k, v in normalised.items() if k != "status"}
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        body["metadata"] = {k: v for k, v in metadata.items() if k not in _DIGEST_METADATA_SKIP}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def ref(normalised: Mapping[str, Any]) -> common.ObjectRef:
    """The contract's reference to a normalised object (kind and apiVersion already stamped)."""
    metadata = normalised.get("metadata") or {}
    return common.ObjectRef(
        api_version=str(normalised.get("apiVersion", "")),
        kind=str(normalised.get("kind", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        namespace=str(metadata.get("namespace", "") or ""),
        resource_version=str(metadata.get("resourceVersion", "") or ""),
    )


def _metadata_only(
    obj: Mapping[str, Any], keep: tuple[str, ...], *, api_version: str, kind: str
) -> dict[str, Any]:
    out: dict[str, Any] = {k: obj[k] for k in keep if k in obj}
    out["apiVersion"] = api_version
    out["kind"] = kind
    metadata = obj.get("metadata")
    out["metadata"] = _metadata(metadata, applied=None) if isinstance(metadata, Mapping) else {}
    return out


def _node(obj: Mapping[str, Any], *, api_version: str) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": "Node",
        "metadata": {k: metadata[k] for k in _NODE_METADATA_KEEP if k in metadata},
    }
    if "spec" in obj:
        out["spec"] = obj["spec"]
    return out


def _metadata(metadata: Mapping[str, Any], *, applied: Any) -> dict[str, Any]:
    """Copy metadata without managedFields; ``applied`` rewrites the last-applied annotation.

    ``applied=None`` drops the annotation altogether (Secrets and ConfigMaps).
    """
    out = {k: v for k, v in metadata.items() if k != "managedFields"}
    annotations = out.get("annotations")
    if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
        annotations = dict(annotations)
        if applied is None:
            del annotations[LAST_APPLIED]
        else:
            annotations[LAST_APPLIED] = applied(annotations[LAST_APPLIED])
        out["annotations"] = annotations
    return out


def _normalise_last_applied(text: Any) -> str:
    """Normalise the object held in a last-applied annotation, or hide it if it is unreadable."""
    try:
        applied = json.loads(text)
    except (TypeError, ValueError):
        return REDACTED
    if not isinstance(applied, dict):
        return REDACTED
    api_version = str(applied.get("apiVersion", ""))
    kind = str(applied.get("kind", ""))
    if kind in {"Secret", "ConfigMap"} and "/" not in api_version:
        # The applied form of a Secret is its data; an annotation on another kind that claims to
        # be one is hidden the same way.
        return REDACTED
    # Sorted keys keep the annotation, and so the digest, stable across equal applies.
    return json.dumps(
        normalise(applied, api_version=api_version, kind=kind),
        sort_keys=True,
        separators=(",", ":"),
    )


def _redact_env(value: Any, *, parent_key: str) -> Any:
    """Copy ``value``, replacing literal env values of every container list found inside."""
    if isinstance(value, Mapping):
        return {k: _redact_env(v, parent_key=k) for k, v in value.items()}
    if isinstance(value, list):
        if parent_key in _CONTAINER_LISTS:
            return [_redact_container(c) for c in value]
        return [_redact_env(v, parent_key=parent_key) for v in value]
    return value


def _redact_container(container: Any) -> Any:
    if not isinstance(container, Mapping):
        return container
    out = {k: _redact_env(v, parent_key=k) for k, v in container.items() if k != "env"}
    env = container.get("env")
    if isinstance(env, list):
        out["env"] = [_redact_env_var(item) for item in env]
    elif "env" in container:
        out["env"] = env
    return out


def _redact_env_var(item: Any) -> Any:
    if not isinstance(item, Mapping) or "value" not in item:
        return item
    redacted = dict(item)
    # Even an empty value becomes the marker: "set to something" is all a check may learn.
    redacted["value"] = REDACTED
    return redacted
