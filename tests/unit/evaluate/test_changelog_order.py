"""A worker's copy of a global table ends as the changelog does, whoever wrote what when.

The worker applies global tables' changelog records itself (``EvaluateApp._take_changelog``)
and skips its own, which its copy shows already. These tests drive that logic with the
records of one changelog partition, in log order, around the worker's own writes; the stream
is a stand-in that owns partition 0 (the evaluate integration tests run the real one).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kposture.evaluate import app as evaluate_app
from kposture.evaluate.stream import tables
from kposture.runtime import settings as settings_mod

CHANGELOG = "t-evaluate-posture-shares-changelog"
KEY = b"k"


@dataclasses.dataclass
class Record:
    offset: int
    value: bytes | None
    writer: bytes
    topic: str = CHANGELOG
    key: bytes = KEY

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(evaluate_app.WRITER_HEADER, self.writer)]


class Writer:
    """A partition's transactional writer that records what was put."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def put(self, topic: str, *, key: bytes | None, value: bytes | None, **_: Any) -> None:
        self.sent.append((topic, key, value))


class Stream:
    """The stream as the app's writes read it: partition 0 owned."""

    def __init__(self) -> None:
        self.writers = {0: Writer()}
        self.generation = 0


class Worker:
    """An evaluate app with a stand-in stream and one global table."""

    def __init__(self) -> None:
        self.app = evaluate_app.EvaluateApp(
            settings_mod.Settings(evaluate=settings_mod.EvaluateSettings(baselines=[]))
        )
        self.app._stream = Stream()  # type: ignore[assignment]
        self.table = tables.Table({}, CHANGELOG, shared=True)
        self.app._shared = {CHANGELOG: self.table}
        self.me = self.app._writer
        self.offset = -1

    def write(self, value: bytes | None) -> Record:
        """The worker writes the key; returns the record that will come back."""
        self.app._write(self.table, KEY, value, partition=0)
        return self.record(value, self.me)

    def record(self, value: bytes | None, writer: bytes) -> Record:
        self.offset += 1
        return Record(self.offset, value, writer)

    def read(self, record: Record) -> None:
        self.app._take_changelog([record])

    @property
    def copy(self) -> bytes | None:
        return self.table.data.get(KEY)


OTHER = b"another-worker"


def test_another_workers_record_before_ours_in_the_log_does_not_win() -> None:
    # Log: theirs, ours. Ours was made before theirs came back.
    worker = Worker()
    theirs = worker.record(b"theirs", OTHER)
    ours = worker.write(b"ours")
    worker.read(theirs)
    assert worker.copy == b"ours"
    worker.read(ours)
    assert worker.copy == b"ours"


def test_another_workers_record_after_ours_in_the_log_wins() -> None:
    worker = Worker()
    ours = worker.write(b"ours")
    theirs = worker.record(b"theirs", OTHER)
    worker.read(ours)
    worker.read(theirs)
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


def test_a_write_made_before_a_restart_coming_back_follows_the_log() -> None:
    """A record of this worker's that it does not wait for (its copy was rebuilt) applies."""
    worker = Worker()
    ours = worker.record(b"ours-before-restart", worker.me)
    worker.read(ours)
    assert worker.copy == b"ours-before-restart"


def test_a_write_of_a_partition_not_owned_changes_nothing() -> None:
    """The new owner of a partition writes its tables; the copy and the log stay as they are."""
    worker = Worker()
    worker.app._write(worker.table, KEY, b"v", partition=1)
    assert worker.copy is None
    assert worker.app._unconfirmed == {}
