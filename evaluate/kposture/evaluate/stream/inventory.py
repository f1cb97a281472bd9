"""Inventory: the cluster-wide views that cross-object checks read, kept from the stream.

A cross-object check names the views it reads (``needs: [networkPolicies]``) and reads them as
``inventory.<view>``: CIS 5.3.2 judges a Namespace by the cluster's NetworkPolicy objects, CIS
5.1.2 a ServiceAccount by the RBAC objects bound to it and the pods and pod templates that run
as it. Those objects arrive as events of their own, on other partitions, so the app keeps them
in a global table that every worker reads in full. This module says:

* which kinds feed which view (``VIEWS``) and what of an object a view keeps (its *entry*:
  only the fields the built-in checks read, so a change nobody reads writes nothing);
* how the table is indexed (``Indexed``: entries by cluster, namespace and view, with a change
  count per namespace and a count of equal entries);
* how an object's inventory is assembled (``assemble``): the entries of the object's own
  namespace for namespaced views (for a Namespace: the entries in it), the cluster's entries
  for cluster-scoped views, each view a list of *distinct* entries in a stable order;
* whom a change concerns (``update_of``): the objects whose cross-object checks may change,
  as ``Target``s, and only when the view's distinct entries changed (a new Pod of a service
  account that other Pods already use changes nothing anyone reads).

The stream therefore gives a check less than ``kposture scan`` does (reduced entries, the
object's namespace only, no duplicates). The built-in checks are written so that both give
the same verdict; the tests compare them.

Pure: no faust, no Kafka. The app owns the table and the re-evaluation records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from kposture.evaluate.engine import tracking, workloads
from kposture.evaluate.stream import watched_dict
from kposture.schemas import codec, common, resources

NETWORK_POLICIES = "networkPolicies"
"""The view of the cluster's NetworkPolicy objects (``inventory.networkPolicies``)."""
SERVICE_ACCOUNTS = "serviceAccounts"
"""The view of ServiceAccounts, which the app also reads to find a concerned account's uid."""

ANY = "*"
"""In a ``Target``: any namespace, or any name."""

Target = tuple[str, str, str]
"""``(kind, namespace, name)`` of objects a change concerns; ``ANY`` matches every value."""

Reduce = Callable[[Mapping[str, Any]], dict[str, Any]]
Concerns = Callable[[str, Mapping[str, Any]], Iterable[Target]]


@dataclasses.dataclass(frozen=True)
class View:
    """One inventory view: the kind it lists, its entry, and whom an entry's change concerns.

    ``concerns(namespace, entry)`` names the objects whose cross-object checks read the entry.
    """

    name: str
    group: str
    kind: str
    namespaced: bool
    reduce: Reduce
    concerns: Concerns
    concerns_kind: str = "ServiceAccount"


def _dig(obj: Any, path: Iterable[str]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _metadata(obj: Mapping[str, Any], *, namespaced: bool, named: bool = True) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    out: dict[str, Any] = {}
    if namespaced:
        out["namespace"] = metadata.get("namespace", "")
    if named:
        out["name"] = metadata.get("name", "")
    return out


def network_policy_entry(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy reduced to what the built-in checks read.

    Kept: its namespace and name, ``spec.podSelector`` and ``spec.policyTypes`` as they are, and
    ``spec.ingress``/``spec.egress`` only as "absent", "empty" or "not empty" (one empty rule
    stands for any number), since the checks test their size only. Rules change often (new
    ports, new peers) without changing a verdict: leaving them out keeps the table small and
    spares the namespace a re-evaluation.
    """
    spec = obj.get("spec") or {}
    entry_spec: dict[str, Any] = {}
    for field in ("podSelector", "policyTypes"):
        if field in spec:
            entry_spec[field] = spec[field]
    for field in ("ingress", "egress"):
        if field in spec:
            entry_spec[field] = [{}] if spec[field] else []
    return {"metadata": _metadata(obj, namespaced=True), "spec": entry_spec}


def _pod_user(spec_path: tuple[str, ...]) -> Reduce:
    """The entry of a Pod or pod template: its namespace and the service account it runs as.

    No name: the Pods of one service account are one entry (a view lists distinct entries).
    """

    def reduce(obj: Mapping[str, Any]) -> dict[str, Any]:
        spec = _dig(obj, spec_path)
        account = spec.get("serviceAccountName") if isinstance(spec, Mapping) else None
        nested: dict[str, Any] = {} if account is None else {"serviceAccountName": account}
        for key in reversed(spec_path):
            nested = {key: nested}
        return {"metadata": _metadata(obj, namespaced=True, named=False), **nested}

    return reduce


def _pod_user_concerns(spec_path: tuple[str, ...]) -> Concerns:
    def concerns(namespace: str, entry: Mapping[str, Any]) -> Iterable[Target]:
        account = _dig(entry, (*spec_path, "serviceAccountName"))
        return [("ServiceAccount", namespace, account if isinstance(account, str) else "default")]

    return concerns


SECRET_RESOURCES = frozenset({"secrets", "*"})
READ_VERBS = frozenset({"get", "list", "watch", "*"})


def _rules(obj: Mapping[str, Any]) -> dict[str, Any]:
    # The built-in checks ask one thing of a role: can it read secrets? A rule keeps only the
    # resources and verbs that bear on that, and a rule with neither is left out, so the
    # everyday edits of roles (another verb, another resource) change no entry.
    rules = obj.get("rules")
    if not isinstance(rules, list):
        return {}
    kept = []
    for rule in rules:
        if not isinstance(rule, Mapping):
            continue
        resources_ = [r for r in rule.get("resources") or () if r in SECRET_RESOURCES]
        verbs = [v for v in rule.get("verbs") or () if v in READ_VERBS]
        if resources_ and verbs:
            kept.append({"resources": resources_, "verbs": verbs})
    return {"rules": kept}


def _role(*, namespaced: bool) -> Reduce:
    def reduce(obj: Mapping[str, Any]) -> dict[str, Any]:
        return {"metadata": _metadata(obj, namespaced=namespaced), **_rules(obj)}

    return reduce


def _binding(*, namespaced: bool) -> Reduce:
    def reduce(obj: Mapping[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"metadata": _metadata(obj, namespaced=namespaced)}
        role_ref = obj.get("roleRef")
        if isinstance(role_ref, Mapping):
            entry["roleRef"] = {f: role_ref[f] for f in ("kind", "name") if f in role_ref}
        subjects = obj.get("subjects")
        if isinstance(subjects, list):
            # Service accounts only: users and groups run no pods.
            entry["subjects"] = [
                {f: s[f] for f in ("kind", "name", "namespace") if f in s}
                for s in subjects
                if isinstance(s, Mapping) and s.get("kind") == "ServiceAccount"
            ]
        return entry

    return reduce


def _bound_accounts(namespace: str, entry: Mapping[str, Any]) -> Iterable[Target]:
    # A RoleBinding's subject without a namespace is in the binding's; a ClusterRoleBinding's
    # (namespace "") must name one to grant anything to a service account.
    for subject in entry.get("subjects") or ():
        if subject.get("kind") == "ServiceAccount" and isinstance(subject.get("name"), str):
            where = subject.get("namespace") or namespace
            if where:
                yield ("ServiceAccount", where, subject["name"])


def _the_role(namespace: str, entry: Mapping[str, Any]) -> Iterable[Target]:
    # Whom a role grants to is up to its bindings: ``expand`` finds the service accounts.
    kind = "Role" if namespace else "ClusterRole"
    return [(kind, namespace, entry["metadata"]["name"])]


def _namespace_itself(namespace: str, entry: Mapping[str, Any]) -> Iterable[Target]:
    return [("Namespace", "", namespace)] if namespace else []


def _nobody(namespace: str, entry: Mapping[str, Any]) -> Iterable[Target]:
    return ()


def _service(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    return {
        "metadata": _metadata(obj, namespaced=True),
        "spec": {
            "type": spec.get("type", "ClusterIP"),
            "selector": dict(selector) if isinstance(selector, Mapping) else {},
        },
    }


def _ingress(obj: Mapping[str, Any]) -> dict[str, Any]:
    # Only which Services it routes to: those expose the pods they select.
    spec = obj.get("spec") or {}
    backends = [spec.get("defaultBackend")]
    for rule in spec.get("rules") or ():
        paths = ((rule or {}).get("http") or {}).get("paths") or ()
        backends.extend((path or {}).get("backend") for path in paths)
    names = {
        service["name"]
        for backend in backends
        if isinstance(backend, Mapping)
        and isinstance(service := backend.get("service"), Mapping)
        and isinstance(service.get("name"), str)
    }
    return {
        "metadata": _metadata(obj, namespaced=True, named=False),
        "spec": {"services": sorted(names)},
    }


_POD_SPECS: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    kind[0].lower() + kind[1:] + "s": (group, kind, (*template, "spec"))
    for (group, kind), template in workloads.TEMPLATE_PATHS.items()
    if kind not in ("PodTemplate", "ReplicationController")  # no built-in check reads them
}
"""Pod views: ``{view: (API group, kind, path of the pod spec)}``."""


def _workload_views() -> list[View]:
    return [
        View(name, group, kind, True, _pod_user(spec_path), _pod_user_concerns(spec_path))
        for name, (group, kind, spec_path) in _POD_SPECS.items()
    ]


_RBAC = "rbac.authorization.k8s.io"

VIEWS: tuple[View, ...] = (
    View(
        NETWORK_POLICIES,
        "networking.k8s.io",
        "NetworkPolicy",
        True,
        network_policy_entry,
        _namespace_itself,
        "Namespace",
    ),
    View(
        SERVICE_ACCOUNTS,
        "",
        "ServiceAccount",
        True,
        lambda obj: {"metadata": _metadata(obj, namespaced=True)},
        _nobody,
        "",
    ),
    View("roles", _RBAC, "Role", True, _role(namespaced=True), _the_role),
    View("clusterRoles", _RBAC, "ClusterRole", False, _role(namespaced=False), _the_role),
    View("roleBindings", _RBAC, "RoleBinding", True, _binding(namespaced=True), _bound_accounts),
    View(
        "clusterRoleBindings",
        _RBAC,
        "ClusterRoleBinding",
        False,
        _binding(namespaced=False),
        _bound_accounts,
    ),
    View("services", "", "Service", True, _service, _nobody, ""),
    View("ingresses", "networking.k8s.io", "Ingress", True, _ingress, _nobody, ""),
    *_workload_views(),
)
"""Every view the stream processor can keep."""

BY_NAME: Mapping[str, View] = {view.name: view for view in VIEWS}
_BY_KIND: Mapping[tuple[str, str], View] = {(view.group, view.kind): view for view in VIEWS}

MAINTAINED = frozenset(BY_NAME)
"""The views the stream processor can keep. A check needing another view does not run there
(it would read a missing field); ``kposture scan`` builds every view from the scanned files."""


def expand(
    table: Indexed, cluster: str, targets: Iterable[Target], *, parsed: dict[bytes, Any]
) -> set[Target]:
    """``targets`` with each Role or ClusterRole replaced by the service accounts bound to it.

    A ClusterRole may be bound in any namespace: its expansion reads every binding of the
    cluster, which is why only a change of what a role grants (its entry) asks for one.
    """
    out: set[Target] = set()
    for target in targets:
        kind, namespace, name = target
        if kind not in ("Role", "ClusterRole"):
            out.add(target)
            continue
        places = (
            [(namespace, "roleBindings")]
            if kind == "Role"
            else [(ns, "roleBindings") for ns in table.namespaces_of(cluster) if ns]
            + [("", "clusterRoleBindings")]
        )
        for ns, view in places:
            for entry in entries_of(table, cluster, ns, view, parsed=parsed):
                ref = entry.get("roleRef") or {}
                if ref.get("kind") == kind and ref.get("name") == name:
                    out.update(_bound_accounts(ns, entry))
    return out


_POD_VIEWS = tuple(_POD_SPECS)
SURROUNDING_VIEWS = (
    "services",
    "ingresses",
    "roles",
    "roleBindings",
    "clusterRoles",
    "clusterRoleBindings",
)
"""The views ``surroundings_of`` reads."""
EXPOSURE_VIEWS = frozenset({*SURROUNDING_VIEWS, *_POD_VIEWS})
"""What priority reads (``surroundings_of``), and the pods whose priority a change moves."""


def kept_views(needed: Iterable[str]) -> frozenset[str]:
    """The views to keep for checks needing ``needed``, for priority (``EXPOSURE_VIEWS``), and
    the service accounts when a change concerns them (the app looks their uids up there)."""
    kept = {name for name in needed if name in BY_NAME} | EXPOSURE_VIEWS
    if any(BY_NAME[name].concerns_kind == "ServiceAccount" for name in kept):
        kept.add(SERVICE_ACCOUNTS)
    return frozenset(kept)


def view_of(ref: common.ObjectRef) -> View | None:
    """The view that objects like ``ref`` feed, if any."""
    return _BY_KIND.get((workloads.group_of(ref.api_version), ref.kind))


def scope_of(ref: common.ObjectRef) -> str | None:
    """The namespace whose entries an object's inventory holds: its own, or for a Namespace
    the one it is; ``None`` (every namespace) for other cluster-scoped objects."""
    if ref.namespace:
        return ref.namespace
    if ref.kind == "Namespace" and ref.api_version == "v1":
        return ref.name
    return None


def entry_key(cluster: str, namespace: str, view: str, uid: str) -> bytes:
    """The table key of an entry: ``<cluster>/<namespace>/<view>/<uid>``."""
    return f"{cluster}/{namespace}/{view}/{uid}".encode()


def _split(key: bytes) -> tuple[str, str, str] | None:
    # ``(cluster, namespace, view)``; a cluster name may hold "/", the other parts cannot.
    parts = key.decode().rsplit("/", 3)
    return (parts[0], parts[1], parts[2]) if len(parts) == 4 else None


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """The table value of an entry (stable: equal entries encode to equal bytes)."""
    return codec.canonical(entry)


class Indexed(watched_dict.Watched):
    """The inventory table's data, indexed however it is written (see ``watched_dict``).

    The indexes: the keys per ``(cluster, namespace, view)`` (cluster-scoped entries have
    namespace ``""``), a change count for each of those and overall (``version``), so caches
    can tell whether what they read changed, and how many entries hold each value per view, so
    a writer can tell whether a view's distinct entries change.
    """

    def __init__(self, initial: Mapping[bytes, bytes] | None = None) -> None:
        self.version = 0
        self._buckets: dict[tuple[str, str, str], dict[bytes, None]] = {}
        self._view_versions: dict[tuple[str, str, str], int] = {}
        # Per (cluster, namespace, view): how many entries hold each value. Nested rather than
        # keyed by 4-tuples: one slot per value, not a tuple and three strings besides.
        self._uses: dict[tuple[str, str, str], dict[bytes, int]] = {}
        super().__init__(initial)

    # -- reads -----------------------------------------------------------------------------

    def versions_of(
        self, cluster: str, namespace: str | None, views: Iterable[str]
    ) -> tuple[int, ...]:
        """Change counts of the given views as an inventory of ``namespace`` reads them (its
        own entries for namespaced views, the cluster's for the others; every namespace's,
        coarsely, for ``None``). Equal counts: an equal inventory."""
        if namespace is None:
            return (self.version,)
        get = self._view_versions.get
        return tuple(
            get((cluster, namespace if BY_NAME[view].namespaced else "", view), 0) for view in views
        )

    def keys_of(self, cluster: str, namespace: str, view: str) -> Iterable[bytes]:
        """The keys of one view's entries in one namespace."""
        return self._buckets.get((cluster, namespace, view), {}).keys()

    def namespaces_of(self, cluster: str) -> list[str]:
        """The namespaces that hold entries of ``cluster`` (``""`` for cluster-scoped ones)."""
        return list({ns: None for c, ns, _ in self._view_versions if c == cluster})

    def uses(self, key: bytes, value: bytes) -> int:
        """How many entries of ``key``'s view and namespace hold ``value``."""
        where = _split(key)
        if where is None:
            return 0
        return self._uses.get(where, {}).get(value, 0)

    # -- the indexes -----------------------------------------------------------------------

    def _added(self, key: bytes, value: Any) -> None:
        self._note(key, value, +1)

    def _removed(self, key: bytes, value: Any) -> None:
        self._note(key, value, -1)

    def _note(self, key: bytes, value: Any, sign: int) -> None:
        self.version += 1
        where = _split(key) if isinstance(value, bytes) else None
        if where is None:
            return  # a value faust set to None before deleting it, or a foreign key
        self._view_versions[where] = self._view_versions.get(where, 0) + 1
        bucket = self._buckets.setdefault(where, {})
        uses = self._uses.setdefault(where, {})
        count = uses.get(value, 0) + sign
        if sign > 0:
            bucket[key] = None
        else:
            bucket.pop(key, None)
            if not bucket:
                del self._buckets[where]
        if count > 0:
            uses[value] = count
        else:
            uses.pop(value, None)
            if not uses:
                del self._uses[where]


@dataclasses.dataclass(frozen=True)
class Update:
    """What one event does to the table, and whom it concerns.

    ``value`` is the new table value (``None``: delete the key). ``targets`` are the objects
    (in ``cluster``) whose cross-object checks may change; empty when the view's distinct
    entries stay the same.
    """

    cluster: str
    key: bytes
    value: bytes | None
    targets: frozenset[Target]


def update_of(
    event: resources.ResourceEvent, *, table: Indexed, views: frozenset[str] = MAINTAINED
) -> Update | None:
    """The table update for an event of a kind that feeds one of ``views``; ``None`` if none.

    A resync, or a change of fields no check reads, returns ``None``: no write and no
    re-evaluation.
    """
    located = _locate(event.cluster, event.ref, views)
    if located is None:
        return None
    deleted = event.change is resources.Change.DELETED
    return _update(located, None if deleted else event.object, table=table)


def refill_of(
    cluster: str,
    ref: common.ObjectRef,
    load: Callable[[], Mapping[str, Any]],
    *,
    table: Indexed,
    views: frozenset[str] = MAINTAINED,
) -> Update | None:
    """The update that adds a stored object's missing entry (``None`` if it is there).

    A sweep uses it to fill a view from the objects table: after an upgrade, or when a new
    policy needs a view nobody kept before. ``load`` gives the object; it is called only
    when the entry is missing.
    """
    located = _locate(cluster, ref, views)
    if located is None or located[2] in table:
        return None
    return _update(located, load(), table=table)


def _locate(
    cluster: str, ref: common.ObjectRef, views: frozenset[str]
) -> tuple[View, str, bytes] | None:
    # The view an object feeds, the namespace of its entry and the entry's key.
    view = view_of(ref)
    if view is None or view.name not in views:
        return None
    namespace = ref.namespace if view.namespaced else ""
    return view, namespace, entry_key(cluster, namespace, view.name, ref.uid)


def _update(
    located: tuple[View, str, bytes],
    obj: Mapping[str, Any] | None,
    *,
    table: Indexed,
) -> Update | None:
    view, _, key = located
    value = None if obj is None else encode_entry(view.reduce(obj))
    return change_of(key, table.get(key), value, table=table)


def change_of(key: bytes, old: bytes | None, new: bytes | None, *, table: Indexed) -> Update | None:
    """The update that replaces ``old`` by ``new`` under ``key`` (``None``: absent), whoever
    writes it; ``None`` if nothing changes. ``table`` is read before the change is made."""
    where = _split(key)
    view = BY_NAME.get(where[2]) if where is not None else None
    if where is None or view is None or old == new:
        return None
    cluster, namespace, _ = where
    targets: set[Target] = set()
    # The old entry leaves the view only if it was the last one alike; the new one joins it
    # only if it is the first one alike.
    if old is not None and table.uses(key, old) == 1:
        targets.update(view.concerns(namespace, orjson.loads(old)))
    if new is not None and table.uses(key, new) == 0:
        targets.update(view.concerns(namespace, orjson.loads(new)))
    return Update(cluster=cluster, key=key, value=new, targets=frozenset(targets))


PARSED_CACHED = 16_384
"""Decoded entries an ``assemble`` cache holds before it starts over."""


def assemble(
    table: Mapping[bytes, bytes],
    *,
    cluster: str,
    namespace: str | None,
    views: Iterable[str],
    parsed: dict[bytes, Any] | None = None,
) -> dict[str, Any]:
    """One object's inventory: ``{view: [distinct entries]}`` for each of ``views``.

    ``namespace`` is the object's scope (``scope_of``): namespaced views hold that namespace's
    entries, or every namespace's for ``None``; cluster-scoped views hold the cluster's. Each
    view lists its distinct entries ordered by their encoding, so equal inventories are equal
    lists (and digest equally). ``table`` is ``Indexed`` (a plain mapping works too, by a
    scan). ``parsed`` caches decoded entries between calls (they are shared between
    inventories and must not be modified).
    """
    cache: dict[bytes, Any] = {} if parsed is None else parsed
    if len(cache) > PARSED_CACHED:
        cache.clear()
    inventory: dict[str, Any] = {}
    for name in views:
        view = BY_NAME[name]
        scope = namespace if view.namespaced else ""
        items = _entries(table, cluster, scope, name)
        inventory[name] = [parsed_entry(raw, cache) for raw in sorted(set(items.values()))]
    return inventory


def _within(key: bytes, cluster: str, namespace: str | None, view: str) -> bool:
    where = _split(key)
    return (
        where is not None
        and where[0] == cluster
        and where[2] == view
        and (namespace is None or where[1] == namespace)
    )


def _entries(
    table: Mapping[bytes, bytes], cluster: str, namespace: str | None, view: str
) -> dict[bytes, bytes]:
    if isinstance(table, Indexed):
        namespaces = table.namespaces_of(cluster) if namespace is None else [namespace]
        return {key: table[key] for ns in namespaces for key in table.keys_of(cluster, ns, view)}
    return {key: value for key, value in table.items() if _within(key, cluster, namespace, view)}


# -- exposure --------------------------------------------------------------------------------


def parsed_entry(raw: bytes, parsed: dict[bytes, Any]) -> Any:
    """An entry decoded, through the cache ``parsed`` (entries are shared: never modify one)."""
    entry = parsed.get(raw)
    if entry is None:
        entry = parsed[raw] = orjson.loads(raw)
    return entry


def entries_of(
    table: Indexed, cluster: str, namespace: str, view: str, *, parsed: dict[bytes, Any]
) -> list[Any]:
    """The decoded entries of one view in one namespace (``""``: cluster-scoped)."""
    return [parsed_entry(table[key], parsed) for key in table.keys_of(cluster, namespace, view)]


def surroundings_of(
    table: Indexed, cluster: str, namespace: str, *, parsed: dict[bytes, Any]
) -> tracking.Surroundings:
    """What a namespace's Services, Ingresses and RBAC say about the exposure of its pods."""
    routed = {
        name
        for ingress in entries_of(table, cluster, namespace, "ingresses", parsed=parsed)
        for name in ingress["spec"]["services"]
    }
    selectors = sorted(
        {
            tuple(sorted(service["spec"]["selector"].items()))
            for service in entries_of(table, cluster, namespace, "services", parsed=parsed)
            if service["spec"]["selector"]
            and (
                service["spec"]["type"] in ("LoadBalancer", "NodePort")
                or service["metadata"]["name"] in routed
            )
        }
    )
    readers = {
        (kind, entry["metadata"]["name"])
        for kind, where in (("Role", namespace), ("ClusterRole", ""))
        for entry in entries_of(
            table, cluster, where, "roles" if kind == "Role" else "clusterRoles", parsed=parsed
        )
        if entry.get("rules")
    }
    privileged: set[str] = set()
    for where, view in ((namespace, "roleBindings"), ("", "clusterRoleBindings")):
        for binding in entries_of(table, cluster, where, view, parsed=parsed):
            ref = binding.get("roleRef") or {}
            if (ref.get("kind"), ref.get("name")) in readers:
                privileged.update(
                    name
                    for _, ns, name in _bound_accounts(
                        namespace if view == "roleBindings" else "", binding
                    )
                    if ns == namespace
                )
    return tracking.Surroundings(selectors=tuple(selectors), privileged=frozenset(privileged))


def exposure_scopes(
    update: Update, *, stored: bytes | None, table: Indexed, parsed: dict[bytes, Any]
) -> set[str]:
    """The namespaces whose ``surroundings_of`` an update may change (``stored``: the entry
    it replaces)."""
    where = _split(update.key)
    if where is None:
        return set()
    cluster, namespace, view = where
    if view in ("services", "ingresses", "roles", "roleBindings"):
        return {namespace}
    entries = [orjson.loads(raw) for raw in (stored, update.value) if raw is not None]
    if view == "clusterRoleBindings":
        return {ns for entry in entries for _, ns, _ in _bound_accounts("", entry)}
    if view == "clusterRoles":
        names = {entry["metadata"]["name"] for entry in entries}
        targets = [("ClusterRole", "", name) for name in names]
        return {ns for _, ns, _ in expand(table, cluster, targets, parsed=parsed)}
    return set()


def pod_keys(
    table: Indexed,
    cluster: str,
    namespace: str,
    *,
    accounts: frozenset[str] | None,
    parsed: dict[bytes, Any],
) -> set[bytes]:
    """The resources keys (``<cluster>/<uid>``) of a namespace's pods and pod templates, or of
    those that run as one of ``accounts``."""
    keys = set()
    for view in _POD_VIEWS:
        path = (*_POD_SPECS[view][2], "serviceAccountName")
        for key in table.keys_of(cluster, namespace, view):
            if accounts is not None:
                account = _dig(parsed_entry(table[key], parsed), path)
                if (account if isinstance(account, str) else "default") not in accounts:
                    continue
            keys.add(f"{cluster}/{key.decode().rsplit('/', 1)[1]}".encode())
    return keys
