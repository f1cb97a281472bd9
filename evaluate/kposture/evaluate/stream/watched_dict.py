"""``Watched``: a dict of table data that sees every write, however it is made.

The app keeps each global table in a subclass, so that indexes over it stay exact whether a
write comes as ``[]=``, ``update`` or ``pop`` (a deleted key may be set to ``None`` first).
Every mutating method goes through ``_added`` and ``_removed``, and tells a ``listener`` (if
one is set) of each change before it is made; reads cost what a dict's do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Listener = Callable[[bytes, Any, Any], None]
"""Told ``(key, old, new)`` before each change is made (``None``: no value)."""


class Watched(dict[bytes, Any]):
    """A dict that calls ``_removed(key, old)`` and ``_added(key, new)`` on every change
    (writing a key's current value again is none), and before each, ``listener``.

    Subclasses set up their own state before calling ``super().__init__``, which adds
    ``initial`` through the hooks.
    """

    def __init__(self, initial: Mapping[bytes, Any] | None = None) -> None:
        super().__init__()
        self.listener: Listener | None = None
        if initial:
            self.update(initial)

    def _added(self, key: bytes, value: Any) -> None:
        """``key`` now holds ``value`` (which may be ``None`` while faust deletes it)."""

    def _removed(self, key: bytes, value: Any) -> None:
        """``key`` no longer holds ``value``."""

    def _changing(self, key: bytes, old: Any, new: Any) -> None:
        # Before the change, so the listener sees the table as it was (faust deletes a key by
        # setting it to ``None`` first: that is the change; popping the ``None`` is none).
        if self.listener is not None and old != new:
            self.listener(key, old, new)

    def __setitem__(self, key: bytes, value: Any) -> None:
        if key in self:
            old = super().__getitem__(key)
            if old == value:
                # The same value again (a worker reads its own writes back from the changelog):
                # no change, so no reader needs to look again.
                return
            self._changing(key, old, value)
            self._removed(key, old)
        else:
            self._changing(key, None, value)
        super().__setitem__(key, value)
        self._added(key, value)

    def __delitem__(self, key: bytes) -> None:
        value = super().__getitem__(key)
        self._changing(key, value, None)
        super().__delitem__(key)
        self._removed(key, value)

    def pop(self, key: bytes, *default: Any) -> Any:
        if key not in self:
            return super().pop(key, *default)
        self._changing(key, super().__getitem__(key), None)
        value = super().pop(key)
        self._removed(key, value)
        return value

    def popitem(self) -> tuple[bytes, Any]:
        if not self:
            raise KeyError("popitem(): dictionary is empty")
        key = next(reversed(self))
        self._changing(key, super().__getitem__(key), None)
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
        for key in list(self):
            self.pop(key)

    def __ior__(self, other: Any) -> Watched:  # type: ignore[override,misc]
        self.update(other)
        return self
