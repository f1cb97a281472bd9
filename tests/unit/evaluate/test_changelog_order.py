"""A worker's copy of a global table ends as the changelog does, whoever wrote what when.

The worker applies global tables' changelog records itself (``EvaluateApp._take_changelog``)
and skips its own, which its copy shows already. These tests drive that logic with the
records of one changelog partition, in log order, around the worker's own writes; faust's
recovery is a stand-in here (the evaluate integration tests run the real one).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from kposture.evaluate import app as evaluate_app
from kposture.runtime import settings as settings_mod

CHANGELOG = "t-evaluate-posture-shares-changelog"
KEY = b"k"


@dataclasses.dataclass(frozen=True)
class Tp:
    topic: str
    partition: int


@dataclasses.dataclass
class Record:
    offset: int
    value: bytes | None
    writer: bytes
    topic: str = CHANGELOG
    key: bytes = KEY

    @property
    def tp(self) -> Tp:
        return Tp(self.topic, 0)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(evaluate_app.WRITER_HEADER, self.writer)]


class Recovery:
    """faust's recovery as ``_take_changelog`` reads it: over, with the partition active."""

    def __init__(self) -> None:
        self.in_recovery = False
        self.active_tps = {Tp(CHANGELOG, 0)}
        self.active_offsets: dict[Tp, int] = {}


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def put(self, topic: str, *, key: bytes | None, value: bytes | None, **_: Any) -> None:
        self.sent.append((topic, key, value))


class Worker:
    """An evaluate app whose faust parts are stand-ins, with one global table."""

    def __init__(self) -> None:
        self.app = evaluate_app.EvaluateApp(
            settings_mod.Settings(evaluate=settings_mod.EvaluateSettings(baselines=[]))
        )
        self.recovery = Recovery()
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        tables = type("Tables", (), {"recovery": self.recovery, "changelog_queue": self.queue})
        self.app._faust = type("Faust", (), {"tables": tables})
        self.table = evaluate_app._Direct({}, CHANGELOG, shared=True)
        self.app._shared = {CHANGELOG: self.table}
        self.app._publisher = Publisher()  # type: ignore[assignment]
        self.me = self.app._writer
        self.offset = -1

    def write(self, value: bytes | None) -> Record:
        """The worker writes the key; returns the record that will come back."""
        self.app._write(self.table, KEY, value, partition=0)
        return self.record(value, self.me)

    def record(self, value: bytes | None, writer: bytes) -> Record:
        self.offset += 1
        return Record(self.offset, value, writer)

    def read(self, record: Record) -> bool:
        return self.app._take_changelog(record)

    @property
    def copy(self) -> bytes | None:
        return self.table.data.get(KEY)


OTHER = b"another-worker"


def test_another_workers_record_before_ours_in_the_log_does_not_win() -> None:
    # Log: theirs, ours. Ours was made before theirs came back.
    worker = Worker()
    theirs = worker.record(b"theirs", OTHER)
    ours = worker.write(b"ours")
    assert worker.read(theirs)
    assert worker.copy == b"ours"
    assert worker.read(ours)
    assert worker.copy == b"ours"


def test_another_workers_record_after_ours_in_the_log_wins() -> None:
    worker = Worker()
    ours = worker.write(b"ours")
    theirs = worker.record(b"theirs", OTHER)
    assert worker.read(ours)
    assert worker.read(theirs)
    assert worker.copy == b"theirs"


def test_our_older_record_coming_back_does_not_undo_a_later_write() -> None:
    worker = Worker()
    first = worker.write(b"v1")
    second = worker.write(b"v2")
    worker.read(first)
    assert worker.copy == b"v2"
    worker.read(second)
    assert worker.copy == b"v2"
    later = worker.record(None, OTHER)  # nothing of ours on its way: theirs applies
    worker.read(later)
    assert worker.copy is None


def test_a_write_whose_record_never_comes_back_stops_holding_others_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(evaluate_app.time, "monotonic", lambda: now[0])
    worker = Worker()
    worker.write(b"lost")  # its batch never reached the broker
    worker.read(worker.record(b"theirs-1", OTHER))
    assert worker.copy == b"lost"
    now[0] += evaluate_app.UNCONFIRMED_S
    worker.read(worker.record(b"theirs-2", OTHER))
    assert worker.copy == b"theirs-2"


def test_during_recovery_faust_applies_and_our_record_restores_the_log_order() -> None:
    # Log: ours-1, theirs, ours-2. faust applied the first two (during a recovery), which put
    # theirs in the copy while ours-2 was on its way; ours-2 then comes back past recovery.
    worker = Worker()
    ours_1 = worker.write(b"ours-1")
    theirs = worker.record(b"theirs", OTHER)
    ours_2 = worker.write(b"ours-2")
    worker.recovery.in_recovery = True
    assert not worker.read(ours_1)  # faust's
    assert not worker.read(theirs)
    worker.table.data[KEY] = b"theirs"  # what faust's recovery then applies
    worker.recovery.active_offsets[theirs.tp] = theirs.offset
    worker.recovery.in_recovery = False
    assert worker.read(ours_2)
    assert worker.copy == b"ours-2"
    assert worker.app._unconfirmed == {}


def test_a_record_read_again_after_a_seek_changes_nothing() -> None:
    worker = Worker()
    theirs = worker.record(b"theirs", OTHER)
    worker.read(theirs)
    worker.table.data[KEY] = b"changed since"
    assert worker.read(theirs)  # offset not past the last one read
    assert worker.copy == b"changed since"
