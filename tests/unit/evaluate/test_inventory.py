"""Cross-object checks in the stream: the NetworkPolicy inventory and namespace re-evaluation."""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from kposture.evaluate import inventory, policy_store, processing
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


def table_after(*events: resources.ResourceEvent) -> dict[bytes, bytes]:
    """The global table after applying ``events`` in order, as the app does."""
    table: dict[bytes, bytes] = {}
    for event in events:
        update = inventory.update_of(event, stored=table.get(event.key.encode()))
        if update is None:
            continue
        if update.value is None:
            table.pop(update.key, None)
        else:
            table[update.key] = update.value
    return table


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


def test_a_new_policy_affects_its_namespace_and_a_resync_affects_nothing() -> None:
    """Created: the namespace is affected; the same content again: no write, no re-evaluation."""
    created = np_event(resources.Change.ADDED)
    update = inventory.update_of(created, stored=None)
    assert update is not None
    assert update.namespaces == {"shop"}
    assert update.key == b"c1/np-deny"
    assert inventory.update_of(np_event(resources.Change.SYNCED), stored=update.value) is None


def test_a_change_no_check_reads_affects_nothing() -> None:
    """A new port in an existing rule changes no verdict, so it is not even written."""
    spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": 80}]}]}
    first = inventory.update_of(np_event(resources.Change.ADDED, spec=spec), stored=None)
    assert first is not None
    spec_b = {**spec, "ingress": [{"ports": [{"port": 8080}]}]}
    assert (
        inventory.update_of(np_event(resources.Change.MODIFIED, spec=spec_b), stored=first.value)
        is None
    )


def test_a_deleted_policy_is_removed_and_affects_its_namespace() -> None:
    """A delete removes the entry (value ``None``) and re-evaluates the namespace."""
    created = inventory.update_of(np_event(resources.Change.ADDED), stored=None)
    assert created is not None
    deleted = inventory.update_of(np_event(resources.Change.DELETED), stored=created.value)
    assert deleted is not None
    assert deleted.value is None
    assert deleted.namespaces == {"shop"}
    assert inventory.update_of(np_event(resources.Change.DELETED), stored=None) is None


def test_other_kinds_are_not_network_policies() -> None:
    """A Namespace event is no inventory update."""
    assert inventory.update_of(ns_event(), stored=None) is None


def test_a_cluster_inventory_holds_only_that_cluster_in_key_order() -> None:
    """Assembly filters by cluster and orders by key, so equal inventories compare equal."""
    table = table_after(
        np_event(resources.Change.ADDED, name="b"),
        np_event(resources.Change.ADDED, name="a", namespace="web"),
        np_event(resources.Change.ADDED, name="z", cluster="c2"),
    )
    assembled = inventory.assemble(table.items(), cluster="c1")
    names = [p["metadata"]["name"] for p in assembled[inventory.NETWORK_POLICIES]]
    assert names == ["a", "b"]
    assert inventory.assemble(reversed(list(table.items())), cluster="c1") == assembled


def test_a_parse_cache_gives_the_same_inventory_and_sees_replaced_values() -> None:
    """Entries are decoded once per stored value; a new value for a key is decoded again."""
    table = table_after(
        np_event(resources.Change.ADDED, name="b"),
        np_event(resources.Change.ADDED, name="a", namespace="web"),
    )
    cache: dict[bytes, tuple[bytes, object]] = {}
    first = inventory.assemble(table.items(), cluster="c1", parsed=cache)
    assert first == inventory.assemble(table.items(), cluster="c1")
    assert len(cache) == 2
    again = inventory.assemble(table.items(), cluster="c1", parsed=cache)
    assert [id(p) for p in again[inventory.NETWORK_POLICIES]] == [
        id(p) for p in first[inventory.NETWORK_POLICIES]
    ]
    key = next(k for k, v in table.items() if b'"name":"b"' in v)
    changed = orjson_loads(table[key])
    changed["metadata"]["labels"] = {"edited": "yes"}
    table[key] = orjson.dumps(changed)
    after = inventory.assemble(table.items(), cluster="c1", parsed=cache)
    assert after == inventory.assemble(table.items(), cluster="c1")
    assert {"edited": "yes"} in [
        p["metadata"].get("labels") for p in after[inventory.NETWORK_POLICIES]
    ]


def test_an_overlay_shows_a_change_the_table_does_not_have_yet() -> None:
    """The re-evaluation request's change is applied over a lagging table copy."""
    created = inventory.update_of(np_event(resources.Change.ADDED), stored=None)
    assert created is not None
    assert inventory.assemble({}.items(), cluster="c1", overlay=created)[
        inventory.NETWORK_POLICIES
    ] == [orjson_loads(created.value)]
    deleted = inventory.update_of(np_event(resources.Change.DELETED), stored=created.value)
    assert deleted is not None
    table = {created.key: created.value}
    assert inventory.assemble(table.items(), cluster="c1", overlay=deleted) == {
        inventory.NETWORK_POLICIES: []
    }


def test_a_re_evaluation_request_round_trips() -> None:
    """The update a request carries decodes to the one that was encoded."""
    update = inventory.update_of(np_event(resources.Change.ADDED), stored=None)
    assert update is not None
    assert inventory.decode_update(inventory.encode_update(update)) == update
    with pytest.raises(ValueError, match="not a re-evaluation request"):
        inventory.decode_update(b"reason")


def test_only_network_policy_views_are_maintained() -> None:
    """An inventory is assembled only when every view the kind needs is kept."""
    assert inventory.maintained(frozenset({inventory.NETWORK_POLICIES}))
    assert not inventory.maintained(frozenset())
    assert not inventory.maintained(frozenset({inventory.NETWORK_POLICIES, "roleBindings"}))


def test_a_namespace_finding_opens_resolves_and_reopens_with_the_inventory() -> None:
    """No policy: opened on the first event; one created: resolved; deleted again: opened."""
    processor = processing.Processor(policy_store.PolicyStore(["cis-1.12"]).build())
    namespace = ns_event()
    assert processor.needs_inventory(namespace.ref) == {inventory.NETWORK_POLICIES}
    empty = inventory.assemble({}.items(), cluster="c1")
    first = processor.on_resource(
        namespace, previous=None, partition=0, namespace_obj=None, inventory=empty
    )
    assert ("namespaceNetworkPolicy", findings.Transition.OPENED) in checks(first)
    assert first.state is not None
    assert processor.sweep(first.state, namespace_obj=None, inventory=empty).outputs == []

    table = table_after(np_event(resources.Change.ADDED))
    covered = inventory.assemble(table.items(), cluster="c1")
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


def orjson_loads(data: bytes | None) -> Any:
    """A table value decoded."""
    assert data is not None
    return orjson.loads(data)


def test_counted_table_data_counts_every_kind_of_change() -> None:
    """The app reuses an assembled inventory until the count moves: no write may slip by."""
    data = inventory.Counted({b"c/1": b"{}"})
    seen = data.version
    changes: list[Callable[[], object]] = [
        lambda: data.__setitem__(b"c/2", b"{}"),
        lambda: data.update([(b"c/3", b"{}")]),  # how faust applies a changelog batch
        lambda: data.pop(b"c/3", None),
        lambda: data.__delitem__(b"c/2"),
        lambda: data.setdefault(b"c/4", b"{}"),
        data.popitem,
        lambda: data.__ior__({b"c/5": b"{}"}),
        data.clear,
    ]
    for change in changes:
        change()
        assert data.version > seen
        seen = data.version
    assert data == {}
    # Reads do not count.
    data[b"c/6"] = b"{}"
    seen = data.version
    assert data.get(b"c/6") == b"{}"
    assert list(data.items()) == [(b"c/6", b"{}")]
    assert data.version == seen


def test_faust_memory_store_changelog_batches_move_the_count() -> None:
    """faust's memory store writes a global table through ``update`` and ``pop``."""
    from faust.stores.memory import Store

    class _Event:
        def __init__(self, key: bytes, value: bytes | None) -> None:
            self.key, self.value = key, value
            self.message = types.SimpleNamespace(value=value, partition=0)

    store = Store.__new__(Store)
    store.data = inventory.Counted()
    store._key_partition = {}
    seen = store.data.version
    identity = lambda value: value  # noqa: E731
    store.apply_changelog_batch([_Event(b"c/1", b"{}")], to_key=identity, to_value=identity)  # type: ignore[list-item]
    assert store.data == {b"c/1": b"{}"}
    assert store.data.version > seen
    seen = store.data.version
    store.apply_changelog_batch([_Event(b"c/1", None)], to_key=identity, to_value=identity)  # type: ignore[list-item]
    assert store.data == {}
    assert store.data.version > seen
