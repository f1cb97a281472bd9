"""Folding resource records into the inventory: last record per key, deletes and tombstones."""

from __future__ import annotations

import datetime as dt

from kposture.ingest import inventory, publishing
from kposture.schemas import common, resources


def _event(
    uid: str, change: resources.Change, *, cluster: str = "c1", kind: str = "Pod"
) -> resources.ResourceEvent:
    return resources.ResourceEvent(
        cluster=cluster,
        change=change,
        ref=common.ObjectRef(api_version="v1", kind=kind, name=uid, uid=uid),
        object={},
        digest="d",
        observed_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


def _feed(inv: inventory.Inventory, event: resources.ResourceEvent) -> None:
    for record in publishing.records_for(event):
        inv.apply(record.key, record.value, record.headers or [])


def test_inventory_keeps_the_latest_state_and_forgets_deleted_objects() -> None:
    """Added then modified stays (latest); a delete and its tombstone remove the key."""
    inv = inventory.Inventory()
    _feed(inv, _event("a", resources.Change.ADDED))
    _feed(inv, _event("a", resources.Change.MODIFIED))
    _feed(inv, _event("b", resources.Change.ADDED))
    _feed(inv, _event("b", resources.Change.DELETED))
    _feed(inv, _event("n", resources.Change.SYNCED, cluster="c2", kind="Namespace"))
    assert {k: e.change.value for k, e in inv.objects.items()} == {
        "c1/a": "modified",
        "c2/n": "synced",
    }
    assert [e.ref.uid for e in inv.select(cluster="c2")] == ["n"]
    assert [e.ref.uid for e in inv.select(kind="pod")] == ["a"]


def test_undecodable_records_are_counted_not_fatal() -> None:
    """A record that is not a CloudEvent is skipped and counted."""
    inv = inventory.Inventory()
    inv.apply(b"c1/x", b"not json", [])
    assert inv.undecodable == 1
    assert inv.objects == {}
