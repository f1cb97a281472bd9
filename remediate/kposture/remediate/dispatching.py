"""Dispatching: decide findings concurrently, in order per object, parking those that must wait.

Three rules, so that one slow fix never holds up unrelated ones:

* **A global limit** (:class:`Slots`): at most ``max_concurrency`` findings are being worked on.
  A fix that only waits on something slow -- a disruptive fix's rollout and soak -- lends its
  slot back for the wait (:meth:`Slots.lent`), because waiting costs the apiserver nothing.
* **Order per key** (:class:`Dispatcher`): findings with the same key (one object) are decided
  one after another in the order they were read, never concurrently; other keys go on.
* **A fast path** (``fast``): an item that can be decided cheaply -- an observe-mode finding
  whose mode is known from the config and cached namespace labels -- is decided before a slot
  is taken, so thousands of them never queue enforce and dry-run work behind them.
* **Parking**: work that raises :class:`errors.WouldWaitError` (a backoff, a canary still running, a
  pause) gives up its slot and is tried again when the wait is over. Later findings of the same
  key stay queued behind it; findings of other keys are not delayed at all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from types import TracebackType
from typing import Generic, TypeVar

from kposture.remediate import errors

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Hold:
    """Whether the current task holds a slot of ``owner`` (one per attempt)."""

    def __init__(self, owner: Slots) -> None:
        self.owner = owner
        self.holding = True


_HOLD: contextvars.ContextVar[_Hold | None] = contextvars.ContextVar(
    "kposture_remediate_slot", default=None
)


class Slots:
    """The global concurrency limit, with slots that slow waits can lend back."""

    def __init__(self, max_concurrency: int) -> None:
        self.limit = max(1, max_concurrency)
        self._semaphore = asyncio.Semaphore(self.limit)
        self.busy = 0  # slots in use now, for tests and logs

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold a slot for the body; :meth:`lent` inside it gives the slot back for a while."""
        await self._semaphore.acquire()
        self.busy += 1
        hold = _Hold(self)
        token = _HOLD.set(hold)
        try:
            yield
        finally:
            _HOLD.reset(token)
            if hold.holding:
                self.busy -= 1
                self._semaphore.release()

    @contextlib.asynccontextmanager
    async def lent(self) -> AsyncIterator[None]:
        """Give this task's slot back during the body (a wait), and take one again after it.

        Outside :meth:`held` (a direct call, an approval) there is no slot to lend: a no-op.
        """
        hold = _HOLD.get()
        if hold is None or hold.owner is not self or not hold.holding:
            yield
            return
        hold.holding = False
        self.busy -= 1
        self._semaphore.release()
        try:
            yield
        finally:
            # Cancelled while queueing for it: `holding` stays False, so `held` releases nothing.
            await self._semaphore.acquire()
            self.busy += 1
            hold.holding = True


class Dispatcher(Generic[T]):
    """Runs ``work`` for each submitted item: bounded by ``slots``, in order per key, parked
    while it raises :class:`errors.WouldWaitError`; ``on_done`` is called when an item is decided.

    Used as an async context manager: the workers run in its ``TaskGroup``, so an unexpected
    error in one of them stops the service (and the uncommitted findings are redelivered).
    """

    def __init__(
        self,
        work: Callable[[T], Awaitable[None]],
        *,
        slots: Slots,
        on_done: Callable[[T], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fast: Callable[[T], Awaitable[bool]] | None = None,
    ) -> None:
        self._work = work
        self._fast = fast  # True when it decided the item without a slot
        self._slots = slots
        self._on_done = on_done
        self._sleep = sleep
        self._queues: dict[Hashable, collections.deque[T]] = {}
        self._group: asyncio.TaskGroup | None = None
        self.parked = 0  # items waiting for a backoff, a canary or a resume

    async def __aenter__(self) -> Dispatcher[T]:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        try:
            await self._group.__aexit__(exc_type, exc, tb)
        finally:
            self._group = None

    def submit(self, key: Hashable, item: T) -> None:
        """Queue ``item`` behind the earlier items of ``key``; start a worker for a new key."""
        assert self._group is not None, "enter the dispatcher first"
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._group.create_task(self._drain(key, queue), name=f"remediate-{key}")
        queue.append(item)

    def pending(self) -> int:
        """Items submitted and not yet decided."""
        return sum(len(queue) for queue in self._queues.values())

    async def _drain(self, key: Hashable, queue: collections.deque[T]) -> None:
        # One worker per key with queued items: it decides them in order, then goes away, so
        # the table of keys holds only objects with work in flight.
        try:
            while queue:
                await self._decide(queue[0])
                self._on_done(queue.popleft())
        finally:
            # No await between the last check of `queue` and here: a submit cannot slip in.
            del self._queues[key]

    async def _decide(self, item: T) -> None:
        if self._fast is not None and await self._fast(item):
            return
        while True:
            try:
                async with self._slots.held():
                    await self._work(item)
            except errors.WouldWaitError as wait:
                log.debug("parked: %s", wait)
                self.parked += 1
                try:
                    await self._wait(wait)
                finally:
                    self.parked -= 1
            else:
                return

    async def _wait(self, wait: errors.WouldWaitError) -> None:
        if wait.until is not None:
            # The cap is a safety net: a canary always settles, but a lost wake-up must not
            # park a finding for ever.
            # ``asyncio.timeout``, not ``wait_for``: on Python 3.11 the latter loses a
            # cancellation that comes as the wait ends, and the dispatcher would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait.retry_after_s):
                    await asyncio.shield(wait.until)
            return
        await self._sleep(wait.retry_after_s)
        while wait.ready is not None and not wait.ready():
            await self._sleep(wait.retry_after_s)


class KeyedLocks:
    """One lock per key, forgotten when nobody holds or waits for it.

    Keys are object uids, which churn with the fleet; a lock per uid ever seen would grow
    without bound in a long-running remediator.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the body (FIFO among waiters, as ``asyncio.Lock`` is)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key]
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
