"""``Watched``: a dict of table data that sees every write, however it is made.

The app swaps a faust memory store's dict for a subclass, so that indexes over a global table
stay exact: faust applies changelog batches with ``update`` and ``pop`` (after setting a
deleted key to ``None``), the app writes with ``[]=`` and ``pop``. Every mutating method goes
through ``_added`` and ``_removed``; reads cost what a dict's do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class Watched(dict[bytes, Any]):
    """A dict that calls ``_removed(key, old)`` and ``_added(key, new)`` on every change
    (writing a key's current value again is none).

    Subclasses set up their own state before calling ``super().__init__``, which adds
    ``initial`` through the hooks.
    """

    def __init__(self, initial: Mapping[bytes, Any] | None = None) -> None:
        super().__init__()
        if initial:
            self.update(initial)

    def _added(self, key: bytes, value: Any) -> None:
        """``key`` now holds ``value`` (which may be ``None`` while faust deletes it)."""

    def _removed(self, key: bytes, value: Any) -> None:
        """``key`` no longer holds ``value``."""

    def __setitem__(self, key: bytes, value: Any) -> None:
        if key in self:
            old = super().__getitem__(key)
            if old == value:
                # The same value again (a worker reads its own writes back from the changelog):
                # no change, so no reader needs to look again.
                return
            self._removed(key, old)
        super().__setitem__(key, value)
        self._added(key, value)

    def __delitem__(self, key: bytes) -> None:
        value = super().__getitem__(key)
        super().__delitem__(key)
        self._removed(key, value)

    def pop(self, key: bytes, *default: Any) -> Any:
        if key not in self:
            return super().pop(key, *default)
        value = super().pop(key)
        self._removed(key, value)
        return value

    def popitem(self) -> tuple[bytes, Any]:
        key, value = super().popitem()
        self._removed(key, value)
        return key, value

    def setdefault(self, key: bytes, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return super().__getitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        items = list(self.items())
        super().clear()
        for key, value in items:
            self._removed(key, value)

    def __ior__(self, other: Any) -> Watched:  # type: ignore[override,misc]
        self.update(other)
        return self


class Listened(Watched):
    """A ``Watched`` dict that tells ``listener`` the key of every change.

    The listener may be called before the new value is in place (a replaced value is removed
    first): it may schedule work, not read the key.
    """

    def __init__(self, initial: Mapping[bytes, Any] | None = None) -> None:
        self.listener: Callable[[bytes], None] | None = None
        super().__init__(initial)

    def _added(self, key: bytes, value: Any) -> None:
        if self.listener is not None:
            self.listener(key)

    def _removed(self, key: bytes, value: Any) -> None:
        if self.listener is not None:
            self.listener(key)
