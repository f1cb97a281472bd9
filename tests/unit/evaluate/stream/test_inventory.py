"""Cross-object checks in the stream: the NetworkPolicy inventory and namespace re-evaluation."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from kposture.evaluate.engine import evaluating, tracking
from kposture.evaluate.policy import baselines, loading
from kposture.evaluate.policy import store as policy_store
from kposture.evaluate.scan import fixture_tests, scanning
from kposture.evaluate.stream import inventory, processing, watched_dict
from kposture.schemas import common, envelope, findings, resources

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NP_API = "networking.k8s.io/v1"


def np_event(
    change: resources.Change,
    *,
    name: str = "deny",
    namespace: str = "shop",
    spec: dict[str, Any] | None = None,
    cluster: str = "c1",
) -> resources.ResourceEvent:
    """A NetworkPolicy event (default: a default deny of ingress)."""
    obj = {
        "apiVersion": NP_API,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
        "spec": spec if spec is not None else {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    ref = common.ObjectRef(
        api_version=NP_API, kind="NetworkPolicy", name=name, uid=f"np-{name}", namespace=namespace
    )
    return resources.ResourceEvent(
        cluster=cluster, change=change, ref=ref, object=obj, digest="d", observed_at=T0
    )


def ns_event(name: str = "shop") -> resources.ResourceEvent:
    """A Namespace event."""
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": f"ns-{name}"}}
    ref = common.ObjectRef(api_version="v1", kind="Namespace", name=name, uid=f"ns-{name}")
    return resources.ResourceEvent(
        cluster="c1", change=resources.Change.ADDED, ref=ref, object=obj, digest="d", observed_at=T0
    )


def table_after(*events: resources.ResourceEvent) -> inventory.Indexed:
    """The global table after applying ``events`` in order, as the app does."""
    table = inventory.Indexed()
    for event in events:
        update = inventory.update_of(event, table=table)
        if update is None:
            continue
        if update.value is None:
            table.pop(update.key, None)
        else:
            table[update.key] = update.value
    return table


def event_of(
    obj: dict[str, Any], change: resources.Change = resources.Change.ADDED, *, uid: str = ""
) -> resources.ResourceEvent:
    """An event of any object in cluster ``c1`` (uid: its kind and name unless given)."""
    metadata = obj.get("metadata") or {}
    ref = common.ObjectRef(
        api_version=obj["apiVersion"],
        kind=obj["kind"],
        name=metadata.get("name", ""),
        uid=uid or f"{obj['kind']}-{metadata.get('namespace', '')}-{metadata.get('name', '')}",
        namespace=metadata.get("namespace", ""),
    )
    return resources.ResourceEvent(
        cluster="c1", change=change, ref=ref, object=obj, digest="d", observed_at=T0
    )


def checks(step: processing.Step) -> list[tuple[str, findings.Transition]]:
    """(check, transition) of each finding a step publishes, sorted."""
    return sorted(
        (model.check, model.state)
        for model in map(envelope.unwrap, (o.event for o in step.outputs))
    )


def test_an_entry_keeps_only_what_the_checks_read() -> None:
    """Rules shrink to their emptiness; names, selector and policy types stay as they are."""
    entry = inventory.network_policy_entry(
        np_event(
            resources.Change.ADDED,
            spec={
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}, {"ports": [{"port": 80}]}],
                "egress": [],
            },
        ).object
    )
    assert entry == {
        "metadata": {"namespace": "shop", "name": "deny"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{}],
            "egress": [],
        },
    }


SHOP = ("Namespace", "", "shop")


def test_a_new_policy_concerns_its_namespace_and_a_resync_nothing() -> None:
    """Created: the namespace is concerned; the same content again: no write, no request."""
    table = inventory.Indexed()
    update = inventory.update_of(np_event(resources.Change.ADDED), table=table)
    assert update is not None
    assert update.targets == {SHOP}
    assert update.key == b"c1/shop/networkPolicies/np-deny"
    assert update.value is not None
    table[update.key] = update.value
    assert inventory.update_of(np_event(resources.Change.SYNCED), table=table) is None


def test_a_change_no_check_reads_affects_nothing() -> None:
    """A new port in an existing rule changes no verdict, so it is not even written."""
    spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": 80}]}]}
    table = table_after(np_event(resources.Change.ADDED, spec=spec))
    spec_b = {**spec, "ingress": [{"ports": [{"port": 8080}]}]}
    assert (
        inventory.update_of(np_event(resources.Change.MODIFIED, spec=spec_b), table=table) is None
    )


def test_a_deleted_policy_is_removed_and_concerns_its_namespace() -> None:
    """A delete removes the entry (value ``None``) and re-evaluates the namespace."""
    table = table_after(np_event(resources.Change.ADDED))
    deleted = inventory.update_of(np_event(resources.Change.DELETED), table=table)
    assert deleted is not None
    assert deleted.value is None
    assert deleted.targets == {SHOP}
    assert (
        inventory.update_of(np_event(resources.Change.DELETED), table=inventory.Indexed()) is None
    )


def test_kinds_no_view_lists_and_views_not_kept_write_nothing() -> None:
    """A Namespace or a ConfigMap feeds no view; a view the policy does not need is not kept."""
    table = inventory.Indexed()
    assert inventory.update_of(ns_event(), table=table) is None
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "shop"},
    }
    assert inventory.update_of(event_of(config), table=table) is None
    policy = np_event(resources.Change.ADDED)
    assert inventory.update_of(policy, table=table, views=frozenset({"roles"})) is None


def test_an_inventory_holds_its_namespace_and_the_cluster_scoped_entries_in_a_stable_order() -> (
    None
):
    """Namespaced views: the object's namespace only; cluster-scoped ones: the whole cluster."""
    table = table_after(
        np_event(resources.Change.ADDED, name="b"),
        np_event(resources.Change.ADDED, name="a"),
        np_event(resources.Change.ADDED, name="w", namespace="web"),
        np_event(resources.Change.ADDED, name="z", cluster="c2"),
        event_of(cluster_role("reads-all", ["*"])),
    )
    views = [inventory.NETWORK_POLICIES, "clusterRoles"]
    assembled = inventory.assemble(table, cluster="c1", namespace="shop", views=views)
    assert [p["metadata"]["name"] for p in assembled[inventory.NETWORK_POLICIES]] == ["a", "b"]
    assert [r["metadata"]["name"] for r in assembled["clusterRoles"]] == ["reads-all"]
    # The same from a plain mapping in another order, and every namespace for ``None``.
    plain = dict(reversed(list(table.items())))
    assert inventory.assemble(plain, cluster="c1", namespace="shop", views=views) == assembled
    everywhere = inventory.assemble(table, cluster="c1", namespace=None, views=views)
    assert [p["metadata"]["name"] for p in everywhere[inventory.NETWORK_POLICIES]] == [
        "a",
        "b",
        "w",
    ]
    assert everywhere == inventory.assemble(plain, cluster="c1", namespace=None, views=views)


def test_a_parse_cache_gives_the_same_inventory_and_sees_replaced_values() -> None:
    """Entries are decoded once per stored value; a new value for a key is decoded again."""
    table = table_after(
        np_event(resources.Change.ADDED, name="b"),
        np_event(resources.Change.ADDED, name="a"),
    )
    views = [inventory.NETWORK_POLICIES]
    cache: dict[bytes, Any] = {}
    first = inventory.assemble(table, cluster="c1", namespace="shop", views=views, parsed=cache)
    assert first == inventory.assemble(table, cluster="c1", namespace="shop", views=views)
    assert len(cache) == 2
    again = inventory.assemble(table, cluster="c1", namespace="shop", views=views, parsed=cache)
    assert [id(p) for p in again[inventory.NETWORK_POLICIES]] == [
        id(p) for p in first[inventory.NETWORK_POLICIES]
    ]
    key = next(k for k, v in table.items() if b'"name":"b"' in v)
    changed = orjson_loads(table[key])
    changed["metadata"]["labels"] = {"edited": "yes"}
    table[key] = orjson.dumps(changed)
    after = inventory.assemble(table, cluster="c1", namespace="shop", views=views, parsed=cache)
    assert after == inventory.assemble(table, cluster="c1", namespace="shop", views=views)
    assert {"edited": "yes"} in [
        p["metadata"].get("labels") for p in after[inventory.NETWORK_POLICIES]
    ]


def test_the_stream_keeps_the_views_of_the_built_in_checks_only() -> None:
    """An inventory is assembled only when every view the kind needs is kept."""
    assert {inventory.NETWORK_POLICIES, "roleBindings", "pods", "cronJobs"} <= inventory.MAINTAINED
    assert "configMaps" not in inventory.MAINTAINED
    # Priority's views are always kept; views whose changes concern service accounts bring
    # the accounts along (to find uids).
    exposure = inventory.EXPOSURE_VIEWS
    assert {"services", "ingresses", "roleBindings", "pods", "cronJobs"} <= exposure
    assert inventory.kept_views(["networkPolicies"]) == {
        "networkPolicies",
        "serviceAccounts",
        *exposure,
    }
    assert inventory.kept_views(["pods", "unknownView"]) == {"serviceAccounts", *exposure}
    built = policy_store.PolicyStore(["cis-1.12"]).build()
    assert inventory.kept_views(built.engine.inventory_views) >= {
        "networkPolicies",
        "roles",
        "clusterRoles",
        "roleBindings",
        "clusterRoleBindings",
        "pods",
        "deployments",
        "statefulSets",
        "daemonSets",
        "replicaSets",
        "jobs",
        "cronJobs",
        "serviceAccounts",
    }


def test_a_namespace_finding_opens_resolves_and_reopens_with_the_inventory() -> None:
    """No policy: opened on the first event; one created: resolved; deleted again: opened."""
    processor = processing.Processor(policy_store.PolicyStore(["cis-1.12"]).build())
    namespace = ns_event()
    assert processor.needs_inventory(namespace.ref) == {inventory.NETWORK_POLICIES}
    assert inventory.scope_of(namespace.ref) == "shop"
    views = [inventory.NETWORK_POLICIES]
    empty = inventory.assemble(inventory.Indexed(), cluster="c1", namespace="shop", views=views)
    first = processor.on_resource(
        namespace, previous=None, partition=0, namespace_obj=None, inventory=empty
    )
    assert ("namespaceNetworkPolicy", findings.Transition.OPENED) in checks(first)
    assert first.state is not None
    assert processor.sweep(first.state, namespace_obj=None, inventory=empty).outputs == []

    table = table_after(np_event(resources.Change.ADDED))
    covered = inventory.assemble(table, cluster="c1", namespace="shop", views=views)
    resolved = processor.sweep(first.state, namespace_obj=None, inventory=covered)
    assert checks(resolved) == [("namespaceNetworkPolicy", findings.Transition.RESOLVED)]
    assert resolved.state is not None

    reopened = processor.sweep(resolved.state, namespace_obj=None, inventory=empty)
    assert checks(reopened) == [("namespaceNetworkPolicy", findings.Transition.OPENED)]


def test_kinds_without_cross_object_checks_need_no_inventory() -> None:
    """Pods and NetworkPolicies themselves take the fast path: nothing to assemble."""
    processor = processing.Processor(policy_store.PolicyStore(["cis-1.12"]).build())
    pod = common.ObjectRef(api_version="v1", kind="Pod", name="p", uid="p")
    assert processor.needs_inventory(pod) == frozenset()
    assert processor.needs_inventory(np_event(resources.Change.ADDED).ref) == frozenset()


# -- service accounts: RBAC, pods and pod templates ------------------------------------------


def pod(name: str, account: str | None, namespace: str = "shop") -> dict[str, Any]:
    """A Pod running as ``account`` (``None``: the field is absent)."""
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
    if account is not None:
        spec["serviceAccountName"] = account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def cluster_role(name: str, resources_: list[str]) -> dict[str, Any]:
    """A ClusterRole granting get on ``resources_``."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"x": "y"}},
        "rules": [{"apiGroups": [""], "resources": resources_, "verbs": ["get"]}],
    }


def cluster_role_binding(name: str, role: str, *, account: tuple[str, str]) -> dict[str, Any]:
    """A ClusterRoleBinding of ClusterRole ``role`` to one ``(name, namespace)`` account."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account[0], "namespace": account[1]}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
    }


def role_binding(name: str, role: str, accounts: list[tuple[str, str | None]]) -> dict[str, Any]:
    """A RoleBinding in ``shop`` of Role ``role`` to ``(name, namespace)`` service accounts."""
    subjects = [
        {"kind": "ServiceAccount", "name": n, **({"namespace": ns} if ns else {})}
        for n, ns in accounts
    ]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "shop"},
        "subjects": [*subjects, {"kind": "User", "name": "alice"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
    }


def apply(table: inventory.Indexed, update: inventory.Update | None) -> inventory.Update | None:
    """Write ``update`` into ``table`` (as the app does) and return it."""
    if update is not None:
        if update.value is None:
            table.pop(update.key, None)
        else:
            table[update.key] = update.value
    return update


def test_pods_concern_their_account_only_when_the_first_arrives_or_the_last_leaves() -> None:
    """Pods of one account are one entry: only the first and the last change the view."""
    table = inventory.Indexed()
    first = apply(table, inventory.update_of(event_of(pod("a", "app")), table=table))
    assert first is not None
    assert first.targets == {("ServiceAccount", "shop", "app")}
    second = apply(table, inventory.update_of(event_of(pod("b", "app")), table=table))
    assert second is not None
    assert second.targets == frozenset()
    bare = apply(table, inventory.update_of(event_of(pod("c", None)), table=table))
    assert bare is not None
    assert bare.targets == {("ServiceAccount", "shop", "default")}
    views = ["pods"]
    assembled = inventory.assemble(table, cluster="c1", namespace="shop", views=views)
    assert assembled == {
        "pods": [
            {"metadata": {"namespace": "shop"}, "spec": {"serviceAccountName": "app"}},
            {"metadata": {"namespace": "shop"}, "spec": {}},
        ]
    }
    gone = apply(
        table, inventory.update_of(event_of(pod("a", "app"), resources.Change.DELETED), table=table)
    )
    assert gone is not None
    assert gone.targets == frozenset()
    last = apply(
        table, inventory.update_of(event_of(pod("b", "app"), resources.Change.DELETED), table=table)
    )
    assert last is not None
    assert last.targets == {("ServiceAccount", "shop", "app")}


def test_workload_templates_feed_their_own_views() -> None:
    """A CronJob's account sits three templates deep; its entry keeps exactly that path."""
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "shop"},
        "spec": {
            "schedule": "@daily",
            "jobTemplate": {
                "spec": {"template": {"spec": {"serviceAccountName": "batch", "containers": []}}}
            },
        },
    }
    table = inventory.Indexed()
    update = apply(table, inventory.update_of(event_of(cron), table=table))
    assert update is not None
    assert update.targets == {("ServiceAccount", "shop", "batch")}
    assert inventory.assemble(table, cluster="c1", namespace="shop", views=["cronJobs"]) == {
        "cronJobs": [
            {
                "metadata": {"namespace": "shop"},
                "spec": {
                    "jobTemplate": {"spec": {"template": {"spec": {"serviceAccountName": "batch"}}}}
                },
            }
        ]
    }


def test_rbac_changes_concern_the_accounts_they_may_grant_to() -> None:
    """A binding: its subjects (old and new); a role: the accounts its bindings name."""
    table = inventory.Indexed()
    binding = role_binding("b", "reader", [("app", None), ("ci", "tools")])
    created = apply(table, inventory.update_of(event_of(binding), table=table))
    assert created is not None
    assert created.targets == {("ServiceAccount", "shop", "app"), ("ServiceAccount", "tools", "ci")}
    moved = role_binding("b", "reader", [("web", None)])
    changed = apply(
        table, inventory.update_of(event_of(moved, resources.Change.MODIFIED), table=table)
    )
    assert changed is not None
    assert changed.targets == {
        ("ServiceAccount", "shop", "app"),
        ("ServiceAccount", "tools", "ci"),
        ("ServiceAccount", "shop", "web"),
    }
    # Another user subject is nothing the checks read.
    with_user = role_binding("b", "reader", [("web", None)])
    with_user["subjects"].append({"kind": "Group", "name": "devs"})
    assert inventory.update_of(event_of(with_user, resources.Change.MODIFIED), table=table) is None
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "reader", "namespace": "shop"},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets", "pods"], "verbs": ["get", "delete"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        ],
    }
    role_update = apply(table, inventory.update_of(event_of(role), table=table))
    assert role_update is not None
    assert role_update.targets == {("Role", "shop", "reader")}
    assert orjson_loads(role_update.value)["rules"] == [
        {"resources": ["secrets"], "verbs": ["get"]}
    ]
    assert inventory.expand(table, "c1", role_update.targets, parsed={}) == {
        ("ServiceAccount", "shop", "web")
    }
    # Verbs and resources that grant no read of secrets change nothing.
    role["rules"][0]["verbs"] = ["get", "delete", "create"]
    role["rules"].append({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]})
    assert inventory.update_of(event_of(role, resources.Change.MODIFIED), table=table) is None
    # A ClusterRole is expanded through every binding of the cluster that names it.
    everyone = apply(table, inventory.update_of(event_of(cluster_role("all", ["*"])), table=table))
    assert everyone is not None
    assert everyone.targets == {("ClusterRole", "", "all")}
    wide = cluster_role_binding("wide", "all", account=("bot", "ops"))
    local = role_binding("local", "all", [("app", None)])
    local["roleRef"]["kind"] = "ClusterRole"
    for obj in (wide, local):
        apply(table, inventory.update_of(event_of(obj), table=table))
    assert inventory.expand(table, "c1", everyone.targets, parsed={}) == {
        ("ServiceAccount", "ops", "bot"),
        ("ServiceAccount", "shop", "app"),
    }
    relabelled = cluster_role("all", ["*"])
    relabelled["metadata"]["labels"] = {"x": "z"}
    assert inventory.update_of(event_of(relabelled, resources.Change.MODIFIED), table=table) is None


def orjson_loads(data: bytes | None) -> Any:
    """A table value decoded."""
    assert data is not None
    return orjson.loads(data)


def test_the_indexed_table_counts_every_kind_of_change() -> None:
    """The app reuses an assembled inventory until a count moves: no write may slip by."""
    key = inventory.entry_key("c", "ns", "pods", "1")
    data = inventory.Indexed({key: b"{}"})
    seen = (data.version, data.versions_of("c", "ns", ["pods"]))
    other = [inventory.entry_key("c", "ns", "pods", str(n)) for n in range(2, 6)]
    changes: list[Callable[[], object]] = [
        lambda: data.__setitem__(other[0], b"{}"),
        lambda: data.update([(other[1], b"{}")]),  # how faust applies a changelog batch
        lambda: data.pop(other[1], None),
        lambda: data.__delitem__(other[0]),
        lambda: data.setdefault(other[2], b"{}"),
        data.popitem,
        lambda: data.__ior__({other[3]: b"{}"}),
        data.clear,
    ]
    for change in changes:
        change()
        now = (data.version, data.versions_of("c", "ns", ["pods"]))
        assert now[0] > seen[0]
        assert now[1] > seen[1]
        seen = now
    assert data == {}
    # Reads do not count.
    data[key] = b"{}"
    seen = (data.version, data.versions_of("c", "ns", ["pods"]))
    assert data.get(key) == b"{}"
    assert list(data.items()) == [(key, b"{}")]
    assert list(data.keys_of("c", "ns", "pods")) == [key]
    assert (data.version, data.versions_of("c", "ns", ["pods"])) == seen
    # Nor does writing the same value again (a worker's own write read back from the
    # changelog): caches built on the counts stay valid.
    data[key] = b"{}"
    data.update({key: b"{}"})
    assert (data.version, data.versions_of("c", "ns", ["pods"])) == seen
    assert data.versions_of("c", "ns", ["pods"]) == data.versions_of("c", "ns", ["pods"])


def test_the_listener_hears_every_change_before_it_is_made_and_no_rewrite() -> None:
    """The app follows other workers' changes through the listener: none may slip by.

    It is told the old and the new value while the table still shows the old one (what the
    change concerns is worked out from the table as it was); a faust delete (``None``, then
    ``pop``) is one change.
    """
    first, second = (inventory.entry_key("c", "ns", "pods", n) for n in ("1", "2"))
    data = inventory.Indexed({first: b"{}"})
    heard: list[tuple[bytes, object, object, object]] = []
    data.listener = lambda key, old, new: heard.append((key, old, new, data.get(key)))
    data[first] = b"{}"  # the same value again: no change
    data.update([(second, b'{"a":1}')])  # how faust applies a changelog batch
    data[first] = b'{"b":2}'
    data[second] = None  # faust deletes: ``None`` first, then ``pop``
    data.pop(second, None)
    del data[first]
    assert heard == [
        (second, None, b'{"a":1}', None),
        (first, b"{}", b'{"b":2}', b"{}"),
        (second, b'{"a":1}', None, b'{"a":1}'),
        (first, b'{"b":2}', None, b'{"b":2}'),
    ]
    assert data == {}
    plain = watched_dict.Watched({b"c/a": b"1", b"c/b": b"2"})
    told: list[bytes] = []
    plain.listener = lambda key, old, new: told.append(key)
    plain.popitem()
    plain.clear()
    assert told == [b"c/b", b"c/a"]


def test_the_indexes_match_a_rebuild_after_any_sequence_of_writes() -> None:
    """Random writes, replacements and deletes (faust's ``None`` first) leave exact indexes."""
    rng = random.Random(7)
    data = inventory.Indexed()
    keys = [
        inventory.entry_key(c, ns, view, str(n))
        for c in ("c1", "c/2")
        for ns in ("", "a", "b")
        for view in ("pods", "roles")
        for n in range(3)
    ]
    for _ in range(2000):
        key = rng.choice(keys)
        op = rng.random()
        if op < 0.5:
            data[key] = rng.choice([b"1", b"2", b"3"])
        elif op < 0.7:
            data.update({key: None})
            data.pop(key, None)
        elif op < 0.9:
            data.pop(key, None)
        else:
            data.setdefault(key, b"1")
    rebuilt = inventory.Indexed(dict(data))
    for c in ("c1", "c/2"):
        assert sorted(data.namespaces_of(c)) == sorted(rebuilt.namespaces_of(c)) or all(
            not list(data.keys_of(c, ns, v))
            for ns in data.namespaces_of(c)
            for v in ("pods", "roles")
        )
        for ns in ("", "a", "b"):
            for view in ("pods", "roles"):
                assert set(data.keys_of(c, ns, view)) == set(rebuilt.keys_of(c, ns, view))
                for value in (b"1", b"2", b"3"):
                    probe = inventory.entry_key(c, ns, view, "x")
                    assert data.uses(probe, value) == rebuilt.uses(probe, value)


def fixture_cases() -> list[Any]:
    """``(baseline, case)`` for every built-in fixture case that lists an inventory."""
    out: list[tuple[Any, Any]] = []
    for path in map(loading.builtin_path, loading.builtin_names()):
        declared = loading.load_documents(path)
        suites = loading.load_documents(
            fixture_tests.tests_path(path), known=declared.baselines
        ).suites
        by_name = {baseline.name: baseline for baseline in declared.baselines}
        for suite in suites:
            name, version = baselines.split_ref(suite.baseline)
            out.extend(
                (by_name[name].at(version), case)
                for case in suite.cases
                if case.inventory is not None
            )
    return out


def moved(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A copy of a namespaced object in another namespace (cluster-scoped: unchanged)."""
    metadata = obj.get("metadata") or {}
    if "namespace" not in metadata:
        return obj
    return {**obj, "metadata": {**metadata, "namespace": namespace}}


CASES = fixture_cases()


@pytest.mark.parametrize(("baseline", "case"), CASES, ids=lambda v: getattr(v, "name", ""))
def test_the_stream_inventory_gives_every_fixture_the_verdict_of_the_full_one(
    baseline: Any, case: Any
) -> None:
    """Reduced entries, one namespace, no duplicates: the built-in checks decide as on the
    whole inventory (here with a copy of every namespaced object in another namespace)."""
    evaluator = evaluating.Engine([baseline])
    objects = [obj for listed in case.inventory.values() for obj in listed]
    objects += [
        moved(obj, "elsewhere") for obj in objects if "namespace" in obj.get("metadata", {})
    ]
    full: dict[str, list[Any]] = {view: [] for view in evaluator.inventory_views}
    for obj in objects:
        full.setdefault(scanning.view_name(obj["kind"]), []).append(obj)
    table = inventory.Indexed()
    for n, obj in enumerate(objects):
        apply(table, inventory.update_of(event_of(obj, uid=f"u{n}"), table=table))
    target = event_of(case.object)
    needs = evaluator.needs(case.object["apiVersion"], case.object["kind"])
    assert needs
    assert needs <= inventory.MAINTAINED
    streamed = inventory.assemble(
        table, cluster="c1", namespace=inventory.scope_of(target.ref), views=sorted(needs)
    )

    def verdicts(inv: dict[str, Any]) -> dict[str, str]:
        results = evaluator.evaluate(
            case.object, namespace_obj=case.namespace_object, inventory=inv
        )
        return {r.check_id: str(r.result) for r in results}

    expected = {check: str(result) for check, result in case.expect.items()}
    by_full = verdicts(full)
    assert {check: by_full[check] for check in expected} == expected
    assert verdicts(streamed) == by_full


def test_every_cross_object_check_has_fixtures_the_stream_is_compared_on() -> None:
    """The comparison above covers each built-in check that needs an inventory."""
    covered = {check for _, case in CASES for check in case.expect}
    assert {"namespaceNetworkPolicy", "secretReadersInUse"} <= covered


# -- surroundings: what priority reads -------------------------------------------------------


def shop_object(kind: str, name: str, api_version: str = "v1", **fields: Any) -> dict[str, Any]:
    """An object in namespace ``shop``."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop"},
        **fields,
    }


def service(name: str, kind: str, selector: dict[str, str]) -> dict[str, Any]:
    """A Service of type ``kind`` selecting ``selector``."""
    return shop_object("Service", name, spec={"type": kind, "selector": selector, "ports": []})


def test_surroundings_come_from_exposing_services_ingresses_and_secret_reading_roles() -> None:
    """LoadBalancer and NodePort Services expose; a ClusterIP one only if an Ingress routes to
    it; accounts bound to a role that reads secrets are privileged."""
    parsed: dict[bytes, Any] = {}
    table = inventory.Indexed()
    reader = shop_object(
        "Role",
        "reader",
        "rbac.authorization.k8s.io/v1",
        rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
    )
    for obj in (
        service("lb", "LoadBalancer", {"app": "web"}),
        service("internal", "ClusterIP", {"app": "db"}),
        service("routed", "ClusterIP", {"app": "api"}),
        service("headless", "NodePort", {}),
        shop_object(
            "Ingress",
            "front",
            "networking.k8s.io/v1",
            spec={"rules": [{"http": {"paths": [{"backend": {"service": {"name": "routed"}}}]}}]},
        ),
        reader,
        role_binding("r", "reader", [("app", None), ("other", "elsewhere")]),
    ):
        apply(table, inventory.update_of(event_of(obj), table=table))
    around = inventory.surroundings_of(table, "c1", "shop", parsed=parsed)
    assert around == tracking.Surroundings(
        selectors=((("app", "api"),), (("app", "web"),)), privileged=frozenset({"app"})
    )
    # A cluster-wide binding of a ClusterRole that reads everything makes "ci" privileged.
    crb = cluster_role_binding("ci-reads", "all", account=("ci", "shop"))
    role_update = apply(
        table, inventory.update_of(event_of(cluster_role("all", ["*"])), table=table)
    )
    assert role_update is not None
    crb_update = inventory.update_of(event_of(crb), table=table)
    assert crb_update is not None
    assert inventory.exposure_scopes(crb_update, stored=None, table=table, parsed=parsed) == {
        "shop"
    }
    apply(table, crb_update)
    assert inventory.surroundings_of(table, "c1", "shop", parsed=parsed).privileged == {"app", "ci"}
    # A ClusterRole's change concerns the namespaces of the accounts bound to it.
    assert inventory.exposure_scopes(role_update, stored=None, table=table, parsed=parsed) == {
        "shop"
    }


def test_pod_keys_name_a_namespaces_pods_and_templates_or_those_of_some_accounts() -> None:
    """The objects whose priority a change of surroundings may move."""
    table = inventory.Indexed()
    deployment = shop_object(
        "Deployment",
        "web",
        "apps/v1",
        spec={"template": {"spec": {"serviceAccountName": "app", "containers": []}}},
    )
    for obj, uid in ((pod("a", "app"), "p1"), (pod("b", None), "p2"), (deployment, "d1")):
        apply(table, inventory.update_of(event_of(obj, uid=uid), table=table))
    parsed: dict[bytes, Any] = {}
    everything = inventory.pod_keys(table, "c1", "shop", accounts=None, parsed=parsed)
    assert everything == {b"c1/p1", b"c1/p2", b"c1/d1"}
    app_only = inventory.pod_keys(table, "c1", "shop", accounts=frozenset({"app"}), parsed=parsed)
    assert app_only == {b"c1/p1", b"c1/d1"}
    default = inventory.pod_keys(
        table, "c1", "shop", accounts=frozenset({"default"}), parsed=parsed
    )
    assert default == {b"c1/p2"}


def test_a_refill_adds_a_missing_entry_and_loads_nothing_when_it_is_there() -> None:
    """Sweeps refill views from stored objects; an entry already there costs no decode."""
    table = inventory.Indexed()
    event = event_of(pod("a", "app"))
    loads: list[int] = []

    def load() -> dict[str, Any]:
        loads.append(1)
        return event.object

    update = inventory.refill_of("c1", event.ref, load, table=table)
    assert update is not None
    assert update.targets == {("ServiceAccount", "shop", "app")}
    apply(table, update)
    assert inventory.refill_of("c1", event.ref, load, table=table) is None
    assert loads == [1]
    # A kind no kept view lists is never loaded either.
    config = event_of({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    assert inventory.refill_of("c1", config.ref, load, table=table) is None
    assert loads == [1]
