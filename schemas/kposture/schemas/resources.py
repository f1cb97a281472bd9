"""``ResourceEvent``: one observed change of one Kubernetes object (topic ``resources``).

Ingest publishes these; evaluate consumes them. The object is already normalised: no
``managedFields``, no Secret values, literal environment values redacted. The topic is compacted
by ``<cluster>/<uid>`` so it is also the fleet's current inventory.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from kposture.schemas import common


class Change(enum.StrEnum):
    """What happened to the object."""

    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"  # including synthetic deletes found by a relist
    SYNCED = "synced"  # periodic re-emission of unchanged state (anti-entropy)


class ResourceEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One change of one object in one cluster.

    ``object`` is the normalised object (for a delete: its last known state). ``digest`` is a
    hash of the normalised content without status, so consumers can skip unchanged objects.
    ``observed_at`` is when the watcher saw the change (UTC).
    """

    cluster: str
    change: Change
    ref: common.ObjectRef
    object: dict[str, Any]
    digest: str
    observed_at: common.Timestamp

    @property
    def key(self) -> str:
        """The Kafka key: ``<cluster>/<uid>``, so each object's events stay in order."""
        return f"{self.cluster}/{self.ref.uid}"
