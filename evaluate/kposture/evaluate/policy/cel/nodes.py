"""The abstract syntax tree that ``parser`` builds and ``codegen`` and ``paths`` consume.

Macros are already expanded here: ``has(a.b)`` is a ``Has`` node and ``e.all(x, p)`` and its
siblings are ``Comprehension`` nodes, so later stages never see them as calls. Every node keeps
``pos``, the offset of its first character in the source, for error messages.
"""

from __future__ import annotations

import dataclasses
from typing import TypeAlias


@dataclasses.dataclass(frozen=True, slots=True)
class Literal:
    """A constant: int, ``Uint``, float, str, bytes, bool or None."""

    pos: int
    value: object


@dataclasses.dataclass(frozen=True, slots=True)
class Ident:
    """A bare identifier: a variable, an iteration variable, or a type name."""

    pos: int
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Select:
    """``operand.field``, or ``operand.?field`` when ``optional``."""

    pos: int
    operand: Expr
    field: str
    optional: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Index:
    """``operand[index]``, or ``operand[?index]`` when ``optional``."""

    pos: int
    operand: Expr
    index: Expr
    optional: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Has:
    """The ``has(operand.field)`` macro: is the field present, without reading it."""

    pos: int
    operand: Expr
    field: str


@dataclasses.dataclass(frozen=True, slots=True)
class Unary:
    """``!operand`` or ``-operand``."""

    pos: int
    op: str
    operand: Expr


@dataclasses.dataclass(frozen=True, slots=True)
class Binary:
    """Arithmetic, comparison or ``in``; ``op`` is the CEL operator text."""

    pos: int
    op: str
    left: Expr
    right: Expr


@dataclasses.dataclass(frozen=True, slots=True)
class Logical:
    """A flattened chain of ``&&`` or ``||`` (``op``), which absorbs errors in any order."""

    pos: int
    op: str
    operands: tuple[Expr, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Conditional:
    """``cond ? then : otherwise``."""

    pos: int
    cond: Expr
    then: Expr
    otherwise: Expr


@dataclasses.dataclass(frozen=True, slots=True)
class ListLit:
    """``[a, ?b]``: ``optional[i]`` marks an element written with the ``?`` prefix."""

    pos: int
    elements: tuple[Expr, ...]
    optional: tuple[bool, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class MapLit:
    """``{k: v, ?k2: v2}``: each entry is (key, value, optional)."""

    pos: int
    entries: tuple[tuple[Expr, Expr, bool], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """A function call ``f(args)`` or a method call ``target.f(args)``."""

    pos: int
    function: str
    target: Expr | None
    args: tuple[Expr, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Comprehension:
    """An expanded macro over ``range``: ``kind`` is all, exists, exists_one, map or filter.

    ``pred`` is the predicate (absent for a two-argument ``map``), ``transform`` the mapped
    value (only for ``map``).
    """

    pos: int
    kind: str
    var: str
    range: Expr
    pred: Expr | None
    transform: Expr | None


Expr: TypeAlias = (
    Literal
    | Ident
    | Select
    | Index
    | Has
    | Unary
    | Binary
    | Logical
    | Conditional
    | ListLit
    | MapLit
    | Call
    | Comprehension
)
