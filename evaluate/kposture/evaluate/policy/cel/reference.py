"""The reference evaluator: cel-python (``celpy``), slow but independent of our compiler.

Used by the differential tests, and available as a documented slow fallback. It follows the
same conventions as ``Program.evaluate``: plain Python values in and out, ``CelEvalError``
for CEL errors, ``CelSyntaxError`` for unparsable text. ``celpy`` is imported lazily so the
fast path never pays for it.

Known ways celpy (0.5) departs from the CEL specification and cel-go, which the compiler
follows instead (the differential tests avoid these shapes):

* no heterogeneous equality or cross-type numeric ordering: ``1 == 1.0``, ``x == null`` for
  non-null ``x`` and ``[1] == ["a"]`` are errors instead of true/false/false;
* ``false || 1`` and ``true && 1`` return ``1`` instead of an error; a non-bool predicate in
  ``exists`` can leak a non-bool result;
* negative list indexes and string indexes (``[1, 2][-1]``, ``"ab"[0]``) succeed;
* ``7 / 2.0`` gives an int, ``1u + 1`` succeeds, ``int(true)`` is 1, ``string(true)`` is
  ``"True"``, ``int(" 1")`` parses, ``string(1e6)`` is ``"1000000.0"`` (cel-go: ``"1e+06"``);
* an error raised inside ``exists_one``, ``map`` or ``filter`` escapes the error absorption
  of ``||``, ``&&``, ``all`` and ``exists`` (``true || [1].exists_one(x, 1/0 == 1)`` is an
  error);
* the result of string concatenation has no ``contains()`` method;
* ``0.0 / 0.0`` is infinite instead of NaN;
* ``-9223372036854775808 % -1`` is 0 instead of an overflow error;
* ``has(a.b.c)`` is false when ``a.b`` is missing (or ``a`` undeclared) instead of an error;
* the three-argument ``map(x, p, t)`` and the Kubernetes string, list, regex and optional
  libraries are not available.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import Any

from kposture.evaluate.policy.cel import errors, values

_TYPE_NAMES = {
    "BoolType": "bool",
    "IntType": "int",
    "UintType": "uint",
    "DoubleType": "double",
    "StringType": "string",
    "BytesType": "bytes",
    "ListType": "list",
    "MapType": "map",
    "NoneType": "null_type",
    "TypeType": "type",
}


def evaluate_reference(source: str, activation: Mapping[str, object]) -> object:
    """Evaluate ``source`` with celpy; results and errors as for ``Program.evaluate``."""
    # Lazy: celpy (and lark) are slow to import and the fast path never needs them.
    from celpy.celparser import CELParseError
    from celpy.evaluation import CELEvalError

    try:
        program = _program(source)
    except CELParseError as exc:
        line = getattr(exc, "line", None) or 1
        column = getattr(exc, "column", None) or 1
        message = str(exc.args[0]).splitlines()[0] if exc.args else "syntax error"
        raise errors.CelSyntaxError(message, line=line, column=column) from None
    try:
        result = program.evaluate({name: _to_cel(value) for name, value in activation.items()})
    except CELEvalError as exc:
        raise errors.CelEvalError(_message(exc)) from None
    except Exception as exc:  # noqa: BLE001 - see below
        # celpy lets internal errors escape unwrapped (OverflowError from int(inf),
        # ValueError from a three-argument map, ...); for callers they are all CEL errors.
        raise errors.CelEvalError(f"celpy: {type(exc).__name__}: {exc}") from None
    if isinstance(result, CELEvalError):
        raise errors.CelEvalError(_message(result))
    return _to_plain(result)


@functools.lru_cache(maxsize=1024)
def _program(source: str) -> Any:
    environment = _environment()
    return environment.program(environment.compile(source))


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import celpy

    # celpy.Environment raises the process-wide recursion limit as a side effect; a library
    # call should not change global interpreter state, so put it back.
    limit = sys.getrecursionlimit()
    try:
        return celpy.Environment()
    finally:
        sys.setrecursionlimit(limit)


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _to_cel(value: object) -> Any:
    from celpy import celtypes

    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, values.Uint):
        return celtypes.UintType(int(value))
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, bytes):
        return celtypes.BytesType(value)
    if value is None:
        return None
    if isinstance(value, Mapping):
        return celtypes.MapType({_to_cel(k): _to_cel(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return celtypes.ListType([_to_cel(item) for item in value])
    raise errors.CelEvalError(f"cannot pass a {type(value).__name__} to celpy")


def _to_plain(value: object) -> object:
    from celpy import celtypes

    if value is None:
        return None
    if isinstance(value, type):
        return values.TYPE_NAMES[_TYPE_NAMES.get(value.__name__, "type")]
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return {_to_plain(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    raise errors.CelEvalError(f"celpy returned an unsupported {type(value).__name__}")
