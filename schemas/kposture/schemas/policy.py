"""``PolicyDocument``: a baseline or exception as published (compacted topic ``baselines``).

The document travels as its YAML source, exactly as reviewed in git, so every evaluator in every
region parses the same text and converges on the same policy version. The key is
``<kind>/<name>``: the newest version of each document wins in the compacted topic; an empty
value (tombstone) withdraws it.
"""

from __future__ import annotations

import enum

import msgspec

from kposture.schemas import common


class DocumentKind(enum.StrEnum):
    """Which kind of policy document this is."""

    BASELINE = "baseline"
    EXCEPTION = "exception"


class PolicyDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One published baseline or exception document.

    ``digest`` is the SHA-256 of ``source``; ``publisher`` says who published it (a user or CI
    identity), for the audit trail of policy changes.
    """

    kind: DocumentKind
    name: str
    version: str
    source: str
    digest: str
    publisher: str
    published_at: common.Timestamp

    @property
    def key(self) -> str:
        """The compacted-topic key: ``<kind>/<name>``."""
        return f"{self.kind}/{self.name}"
