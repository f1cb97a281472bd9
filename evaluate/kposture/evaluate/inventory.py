"""Inventory: the cluster-wide views that cross-object checks read, kept from the stream.

A check with ``needs: [networkPolicies]`` (CIS 5.3.2, the NSA default deny) judges a Namespace
by the cluster's NetworkPolicy objects, which arrive as events of their own, on other
partitions. The app keeps every NetworkPolicy, reduced to the fields these checks read, in a
global table keyed like the resources topic (``<cluster>/<uid>``), so every worker sees all of
them; this module says what goes into that table, how a cluster's inventory is assembled from
it, and which Namespaces a NetworkPolicy change must re-evaluate.

Pure: no faust, no Kafka. The app owns the table and the re-evaluation records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from kposture.schemas import common, resources

NETWORK_POLICIES = "networkPolicies"
"""The inventory view of the cluster's NetworkPolicy objects (``inventory.networkPolicies``)."""

_NETWORK_POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
_NAMESPACE = ("v1", "Namespace")


def is_network_policy(ref: common.ObjectRef) -> bool:
    """Whether ``ref`` names a NetworkPolicy, the only kind an inventory view holds today."""
    return (ref.api_version, ref.kind) == _NETWORK_POLICY


def is_namespace(ref: common.ObjectRef) -> bool:
    """Whether ``ref`` names a Namespace, the kind whose checks read the inventory."""
    return (ref.api_version, ref.kind) == _NAMESPACE


def network_policy_entry(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy reduced to what the built-in checks read.

    Kept: its namespace and name, ``spec.podSelector`` and ``spec.policyTypes`` as they are, and
    ``spec.ingress``/``spec.egress`` only as "absent", "empty" or "not empty" (one empty rule
    stands for any number), since the checks test their size only. Rules change often (new
    ports, new peers) without changing a verdict: leaving them out keeps the table small and
    spares the namespace a re-evaluation.
    """
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    entry_spec: dict[str, Any] = {}
    for field in ("podSelector", "policyTypes"):
        if field in spec:
            entry_spec[field] = spec[field]
    for field in ("ingress", "egress"):
        if field in spec:
            entry_spec[field] = [{}] if spec[field] else []
    return {
        "metadata": {"namespace": metadata.get("namespace", ""), "name": metadata.get("name", "")},
        "spec": entry_spec,
    }


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """The table value of an entry (stable: equal entries encode to equal bytes)."""
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


@dataclasses.dataclass(frozen=True)
class Update:
    """What one NetworkPolicy event does to the table, and whom it concerns.

    ``value`` is the new table value (``None``: delete the key). ``namespaces`` are the names of
    the Namespaces (in ``cluster``) whose cross-object checks may change.
    """

    cluster: str
    key: bytes
    value: bytes | None
    namespaces: frozenset[str]


def update_of(event: resources.ResourceEvent, *, stored: bytes | None) -> Update | None:
    """The table update for a NetworkPolicy event; ``None`` if it changes nothing.

    ``stored`` is the table's current value for the policy. A resync, or a change of fields no
    check reads, returns ``None``: no write and no re-evaluation.
    """
    if not is_network_policy(event.ref):
        return None
    value = (
        None
        if event.change is resources.Change.DELETED
        else encode_entry(network_policy_entry(event.object))
    )
    if value == stored:
        return None
    namespaces = {event.ref.namespace}
    if stored is not None:
        # A policy cannot move, but an entry stored under another namespace must not linger.
        namespaces.add(orjson.loads(stored)["metadata"]["namespace"])
    return Update(
        cluster=event.cluster,
        key=event.key.encode(),
        value=value,
        namespaces=frozenset(n for n in namespaces if n),
    )


PARSED_CACHED = 100_000
"""Decoded NetworkPolicy entries an ``assemble`` cache holds before it starts over."""


def cluster_prefix(cluster: str) -> bytes:
    """The table key prefix of one cluster's entries (keys are ``<cluster>/<uid>``)."""
    return f"{cluster}/".encode()


def assemble(
    entries: Iterable[tuple[bytes, bytes]],
    *,
    cluster: str,
    overlay: Update | None = None,
    parsed: dict[bytes, tuple[bytes, Any]] | None = None,
) -> dict[str, Any]:
    """One cluster's inventory, ``{"networkPolicies": [...]}``, from table items.

    ``parsed`` is a cache of decoded entries that the caller keeps between calls: an entry
    whose stored value is the very same bytes object as last time is not decoded again (the
    decoded entries are shared between inventories and must not be modified).

    ``entries`` may hold other clusters' items (they are skipped). ``overlay`` is a change
    that the table of this worker may not show yet: the worker that handled the NetworkPolicy
    event wrote it, and the changelog carrying it to this worker's copy can lag behind the
    re-evaluation request. Entries are ordered by key, so equal inventories are equal lists
    (and digest equally).
    """
    prefix = cluster_prefix(cluster)
    items = {key: value for key, value in entries if key.startswith(prefix)}
    if overlay is not None and overlay.cluster == cluster:
        if overlay.value is None:
            items.pop(overlay.key, None)
        else:
            items[overlay.key] = overlay.value
    if parsed is None:
        return {NETWORK_POLICIES: [orjson.loads(items[key]) for key in sorted(items)]}
    if len(parsed) > PARSED_CACHED:
        parsed.clear()
    policies = []
    for key in sorted(items):
        raw = items[key]
        cached = parsed.get(key)
        if cached is None or cached[0] is not raw:
            cached = parsed[key] = (raw, orjson.loads(raw))
        policies.append(cached[1])
    return {NETWORK_POLICIES: policies}


class Counted(dict[bytes, bytes]):
    """A table's data that counts its changes (``version``), however they are made.

    Every worker keeps every NetworkPolicy, and each Namespace event needs its cluster's
    inventory: assembling it (and digesting it) walks the whole table, which costs more than
    evaluating the Namespace once a cluster has a few hundred policies. The app keeps the
    assembled inventory until the version moves. Writes come from this worker and from the
    changelog (faust applies it with ``update`` and ``pop``), so every mutating method counts.
    """

    version: int = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, key: bytes, *default: Any) -> Any:
        self.version += 1
        return super().pop(key, *default)

    def popitem(self) -> tuple[bytes, bytes]:
        self.version += 1
        return super().popitem()

    def setdefault(self, key: bytes, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self.version += 1
        super().clear()

    def __ior__(self, other: Any) -> Counted:  # type: ignore[override,misc]
        self.update(other)
        return self


def encode_update(update: Update) -> bytes:
    """An update as the value of a re-evaluation request."""
    return orjson.dumps(
        {
            "cluster": update.cluster,
            "key": update.key.decode(),
            "value": None if update.value is None else update.value.decode(),
            "namespaces": sorted(update.namespaces),
        }
    )


def decode_update(data: bytes) -> Update:
    """The update carried by a re-evaluation request (``ValueError`` if it is not one)."""
    try:
        loaded = orjson.loads(data)
        return Update(
            cluster=str(loaded["cluster"]),
            key=str(loaded["key"]).encode(),
            value=None if loaded["value"] is None else str(loaded["value"]).encode(),
            namespaces=frozenset(str(n) for n in loaded["namespaces"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a re-evaluation request: {data[:80]!r}") from exc


MAINTAINED = frozenset({NETWORK_POLICIES})
"""The views the stream processor keeps. A check needing another view does not run there (it
would read a missing field); ``kposture scan`` builds every view from the scanned files."""


def maintained(views: frozenset[str]) -> bool:
    """Whether the stream processor can give an inventory holding all of ``views``."""
    return bool(views) and views <= MAINTAINED
