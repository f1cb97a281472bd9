"""Fakes for the ingest unit tests: a clock, a cluster API, a sink and a Kafka producer.

They implement the small Protocols that ``kposture.ingest`` defines (``watching.Clock``,
``watching.KubeApi``, ``watching.Sink``, ``publishing.Producer``), nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

from kposture.ingest import kubeapi
from kposture.schemas import resources


async def eventually(condition: Callable[[], bool], *, within_s: float = 2.0) -> None:
    """Wait until ``condition()`` holds, failing with TimeoutError after ``within_s``."""
    async with asyncio.timeout(within_s):
        # Polling: the conditions read plain state of fakes, which no event signals.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


class FakeClock:
    """A clock that only moves when slept on (or told to)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self.t

    def now(self) -> dt.datetime:
        """A UTC time that follows the fake monotonic time."""
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        """Record the wait, move the time, and yield to the loop."""
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


def pod(
    name: str, uid: str, *, rv: int, image: str = "nginx", phase: str = "Pending"
) -> dict[str, Any]:
    """A minimal Pod as the apiserver returns it."""
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "resourceVersion": str(rv),
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "containers": [{"name": "c", "image": image, "env": [{"name": "X", "value": "v"}]}]
        },
        "status": {"phase": phase},
    }


class FakeApi:
    """One cluster with one collection: objects by uid, a resourceVersion counter, and watches.

    Tests change objects with :meth:`apply` and :meth:`delete` (which also feed open watches),
    or make the next watch fail with :meth:`fail_next_watch`.
    """

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.rv = 100
        self.lists = 0
        self.watches: list[str] = []  # the resourceVersion each watch started from
        self.streams: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.watch_errors: list[kubeapi.KubeApiError] = []
        self.list_errors: list[kubeapi.KubeApiError] = []
        self.served: dict[str, list[dict[str, Any]]] = {
            "v1": [
                {"name": "pods", "kind": "Pod", "namespaced": True, "verbs": ["list", "watch"]},
                {"name": "pods/status", "kind": "Pod", "namespaced": True, "verbs": ["get"]},
            ]
        }

    async def discover(self, group_version: str) -> list[dict[str, Any]] | None:
        """The served resources of ``group_version``."""
        return self.served.get(group_version)

    async def list_page(self, path: str, *, limit: int, continue_token: str) -> dict[str, Any]:
        """Everything in one page (``limit`` is honoured by the real apiserver only)."""
        self.lists += 1
        if self.list_errors:
            raise self.list_errors.pop(0)
        return {
            "items": [copy.deepcopy(o) for o in self.objects.values()],
            "metadata": {"resourceVersion": str(self.rv)},
        }

    @contextlib.asynccontextmanager
    async def watch(
        self, path: str, *, resource_version: str, timeout_s: int
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """A stream fed by later changes; ``None`` in its queue ends it."""
        self.watches.append(resource_version)
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.streams.append(queue)

        async def events() -> AsyncIterator[dict[str, Any]]:
            while (item := await queue.get()) is not None:
                if item.get("type") == "ERROR":
                    raise kubeapi.GoneError("too old resource version", status=410)
                yield item

        try:
            yield events()
        finally:
            self.streams.remove(queue)

    def _send(self, event: dict[str, Any] | None) -> None:
        for queue in self.streams:
            queue.put_nowait(copy.deepcopy(event))

    def apply(self, obj: dict[str, Any], *, silently: bool = False) -> None:
        """Create or replace an object; open watches see it unless ``silently``."""
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        uid = obj["metadata"]["uid"]
        kind = "MODIFIED" if uid in self.objects else "ADDED"
        self.objects[uid] = obj
        if not silently:
            self._send({"type": kind, "object": obj})

    def delete(self, uid: str, *, silently: bool = False) -> None:
        """Delete an object; open watches see it unless ``silently``."""
        self.rv += 1
        obj = self.objects.pop(uid)
        obj["metadata"]["resourceVersion"] = str(self.rv)  # as the apiserver reports a delete
        if not silently:
            self._send({"type": "DELETED", "object": obj})

    def bookmark(self) -> None:
        """Send a bookmark at the current resourceVersion."""
        self._send({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.rv)}}})

    def expire(self) -> None:
        """Make open watches fail with 410 Gone."""
        self._send({"type": "ERROR", "object": {"code": 410}})

    def end_streams(self) -> None:
        """Close open watches (the server ended them)."""
        self._send(None)

    async def close(self) -> None:
        """Nothing to release."""


class RecordingSink:
    """Keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[resources.ResourceEvent] = []

    async def put(self, event: resources.ResourceEvent) -> None:
        """Record ``event``."""
        self.events.append(event)

    def changes(self) -> list[tuple[str, str]]:
        """(change, name) of every event, in order."""
        return [(e.change.value, e.ref.name) for e in self.events]


class RecordingHealth:
    """Keeps the reports of a watcher."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []
        self.contacts = 0

    def contact(self, kind: str) -> None:
        """Count a contact."""
        self.contacts += 1

    def failed(self, kind: str, reason: str) -> None:
        """Record a failure."""
        self.failures.append((kind, reason))


class FakeProducer:
    """An in-memory topic; ``fail_sends`` lists indexes of sends whose future fails once."""

    def __init__(
        self, log: list[tuple[bytes, bytes | None, list[tuple[str, bytes]] | None]]
    ) -> None:
        self.log = log
        self.sends = 0
        self.fail_sends: set[int] = set()
        self.too_large: set[bytes] = set()  # keys whose send raises MessageSizeTooLargeError
        self.stopped = False
        self.gate: asyncio.Event | None = None

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kwargs: Any
    ) -> asyncio.Future[Any]:
        """Append the record (or fail its future if its index is in ``fail_sends``)."""
        from aiokafka import errors

        if self.gate is not None:
            await self.gate.wait()
        if key in self.too_large and value is not None:
            raise errors.MessageSizeTooLargeError()
        index = self.sends
        self.sends += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if index in self.fail_sends:
            future.set_exception(errors.KafkaTimeoutError())
        else:
            assert key is not None
            self.log.append((key, value, kwargs.get("headers")))
            future.set_result(None)
        return future

    async def stop(self) -> None:
        """Mark stopped."""
        self.stopped = True
