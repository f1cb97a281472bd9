"""``DeadLetter``: a record that could not be decoded or processed (topic ``dlq``).

The original bytes are kept (base64 in JSON) with the reason, so nothing is lost and an operator
can replay the record once the cause is fixed.
"""

from __future__ import annotations

import msgspec

from kposture.schemas import common


class DeadLetter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A poison record with where it came from and why it was set aside."""

    reason: str
    service: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    failed_at: common.Timestamp
