"""CEL values that have no plain Python counterpart: ``Uint``, ``CelType`` and ``Optional``.

Everything else is represented by the plain Python value Kubernetes objects already use
(bool, int, float, str, bytes, None, list, dict), so activations need no conversion. These few
classes exist only inside evaluation; ``to_plain`` turns a result back into plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


class Uint(int):
    """A CEL ``uint``: distinct from ``int`` for arithmetic, overloads and ``type()``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value, the result of ``type(x)`` or of a type name such as ``int``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelType) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("CelType", self.name))

    def __repr__(self) -> str:
        return f"CelType({self.name!r})"


INT: Final = CelType("int")
UINT: Final = CelType("uint")
DOUBLE: Final = CelType("double")
BOOL: Final = CelType("bool")
STRING: Final = CelType("string")
BYTES: Final = CelType("bytes")
LIST: Final = CelType("list")
MAP: Final = CelType("map")
NULL_TYPE: Final = CelType("null_type")
TYPE: Final = CelType("type")
OPTIONAL_TYPE: Final = CelType("optional_type")

#: The type names a CEL expression may use as values, e.g. ``type(x) == string``.
TYPE_NAMES: Final[dict[str, CelType]] = {
    t.name: t for t in (INT, UINT, DOUBLE, BOOL, STRING, BYTES, LIST, MAP, NULL_TYPE, TYPE)
}


class Optional:
    """A Kubernetes/cel-go optional value, produced by ``x.?f``, ``m[?k]`` and ``optional.*``.

    Selecting a field of an optional (``opt.f`` or ``opt["f"]``) propagates the optional, which
    is what lets ``object.?spec.?x.y.orValue(0)`` chain; generated code relies on
    ``__getitem__`` for that. Equality is CEL equality, implemented in ``runtime.equals``.
    """

    __slots__ = ("present", "value")

    def __init__(self, present: bool, value: object = None) -> None:
        self.present = present
        self.value = value

    def __getitem__(self, key: object) -> Optional:
        if not self.present:
            return self
        container = self.value
        if isinstance(container, Mapping):
            # A missing key yields none rather than an error: that is the point of chaining.
            return Optional(True, container[key]) if key in container else NONE
        if type(container) is list and type(key) is int:
            return Optional(True, container[key]) if 0 <= key < len(container) else NONE
        raise TypeError(f"no such overload: optional select on {type(container).__name__}")

    def __repr__(self) -> str:
        return f"optional.of({self.value!r})" if self.present else "optional.none()"


NONE: Final = Optional(False)


def to_plain(value: object) -> object:
    """Turn an evaluation result into plain Python values (fresh lists and dicts).

    ``Uint`` becomes int and an optional becomes its value (None when absent); ``CelType``
    values are returned as they are, since Python has no better spelling for a CEL type.
    """
    kind = type(value)
    if kind is bool or kind is str or kind is int or kind is float or value is None:
        return value
    if type(value) is Uint:
        return int(value)
    if type(value) is Optional:
        return to_plain(value.value) if value.present else None
    if isinstance(value, Mapping):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value
