"""The operators of CEL over plain Python values, called by the generated code.

Every helper checks operand types exactly (``type(x) is int``), because Python's own operators
are too lenient for CEL: ``True == 1``, ``1 + True`` and ``"ab"[0]`` all succeed in Python but
are false or errors in CEL. Each helper tries the common case first so checks stay cheap.

Semantics follow cel-go as Kubernetes configures it: heterogeneous equality (values of
different types are unequal, numbers compare by value across int/uint/double), cross-type
numeric ordering, 64-bit overflow errors, truncating integer division and IEEE doubles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NoReturn, cast

from kposture.evaluate.policy.cel import errors, values

Uint = values.Uint
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
UINT64_MAX: Final = 2**64 - 1
NUMBERS: Final = frozenset({int, float, Uint})
_ORDERED: Final = frozenset({int, float, Uint, str, bytes, bool})
MISSING: Final = object()  # find_key's answer for an absent key


def throw(exc: BaseException) -> NoReturn:
    """Raise ``exc``; lets generated code raise from inside an expression."""
    raise exc


def type_name(value: object) -> str:
    """The CEL name of the type of ``value``, for error messages and ``type()``."""
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int:
        return "int"
    if kind is Uint:
        return "uint"
    if kind is float:
        return "double"
    if kind is str:
        return "string"
    if kind is bytes:
        return "bytes"
    if value is None:
        return "null_type"
    if kind is values.CelType:
        return "type"
    if kind is values.Optional:
        return "optional_type"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return "list"
    return kind.__name__


def no_overload(op: str, *operands: object) -> errors.CelEvalError:
    """The error CEL reports when no overload of ``op`` accepts these operand types."""
    kinds = ", ".join(type_name(v) for v in operands)
    return errors.CelEvalError(f"no such overload: {op}({kinds})")


def overflow(op: str) -> errors.CelEvalError:
    """The error for a result outside the 64-bit range."""
    return errors.CelEvalError(f"integer overflow in {op}")


def is_list(value: object) -> bool:
    """Whether ``value`` is a CEL list (any sequence but str and bytes)."""
    return type(value) is list or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))
    )


# --- equality and ordering -------------------------------------------------------------------


def equals(a: object, b: object) -> bool:
    """CEL ``==``: false across types, except that numbers compare by value."""
    kind = type(a)
    if kind is type(b):
        if type(a) is list and type(b) is list:
            return _lists_equal(a, b)
        if type(a) is dict and type(b) is dict:
            return _maps_equal(a, b)
        if type(a) is values.Optional and type(b) is values.Optional:
            return _optionals_equal(a, b)
        return a == b
    if kind in NUMBERS and type(b) in NUMBERS:
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return _maps_equal(a, b)
    if isinstance(a, Sequence) and isinstance(b, Sequence) and is_list(a) and is_list(b):
        return _lists_equal(a, b)
    return False


def _lists_equal(a: Sequence[object], b: Sequence[object]) -> bool:
    # Element by element: Python's list == would say [nan] == [nan] through identity.
    return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b, strict=True))


def _maps_equal(a: Mapping[object, object], b: Mapping[object, object]) -> bool:
    if len(a) != len(b):
        return False
    for key, value in a.items():
        other = find_key(b, key)
        if other is MISSING or not equals(value, b[other]):
            return False
    return True


def _optionals_equal(a: values.Optional, b: values.Optional) -> bool:
    if a.present and b.present:
        return equals(a.value, b.value)
    return a.present == b.present


def _check_order(op: str, a: object, b: object) -> None:
    ta = type(a)
    tb = type(b)
    if not ((ta is tb and ta in _ORDERED) or (ta in NUMBERS and tb in NUMBERS)):
        raise no_overload(op, a, b)


def less(a: object, b: object) -> bool:
    """CEL ``<`` (numbers compare across int, uint and double)."""
    if type(a) is int and type(b) is int:
        return a < b
    _check_order("<", a, b)
    return bool(cast(Any, a) < b)


def less_equal(a: object, b: object) -> bool:
    """CEL ``<=``."""
    if type(a) is int and type(b) is int:
        return a <= b
    _check_order("<=", a, b)
    return bool(cast(Any, a) <= b)


def greater(a: object, b: object) -> bool:
    """CEL ``>``."""
    if type(a) is int and type(b) is int:
        return a > b
    _check_order(">", a, b)
    return bool(cast(Any, a) > b)


def greater_equal(a: object, b: object) -> bool:
    """CEL ``>=``."""
    if type(a) is int and type(b) is int:
        return a >= b
    _check_order(">=", a, b)
    return bool(cast(Any, a) >= b)


# --- arithmetic ------------------------------------------------------------------------------


def _int_result(op: str, result: int) -> int:
    if INT64_MIN <= result <= INT64_MAX:
        return result
    raise overflow(op)


def _uint_result(op: str, result: int) -> Uint:
    if 0 <= result <= UINT64_MAX:
        return Uint(result)
    raise overflow(op)


def add(a: object, b: object) -> object:
    """CEL ``+`` over int, uint, double, string, bytes and lists."""
    if type(a) is int and type(b) is int:
        return _int_result("+", a + b)
    if type(a) is type(b):
        if type(a) is float and type(b) is float:
            return a + b
        if type(a) is str and type(b) is str:
            return a + b
        if type(a) is list and type(b) is list:
            return a + b
        if type(a) is bytes and type(b) is bytes:
            return a + b
        if type(a) is Uint and type(b) is Uint:
            return _uint_result("+", int(a) + int(b))
    if isinstance(a, Sequence) and isinstance(b, Sequence) and is_list(a) and is_list(b):
        return [*a, *b]
    raise no_overload("+", a, b)


def subtract(a: object, b: object) -> object:
    """CEL ``-`` over int, uint and double."""
    if type(a) is int and type(b) is int:
        return _int_result("-", a - b)
    if type(a) is float and type(b) is float:
        return a - b
    if type(a) is Uint and type(b) is Uint:
        return _uint_result("-", int(a) - int(b))
    raise no_overload("-", a, b)


def multiply(a: object, b: object) -> object:
    """CEL ``*`` over int, uint and double."""
    if type(a) is int and type(b) is int:
        return _int_result("*", a * b)
    if type(a) is float and type(b) is float:
        return a * b
    if type(a) is Uint and type(b) is Uint:
        return _uint_result("*", int(a) * int(b))
    raise no_overload("*", a, b)


def _integers(op: str, a: object, b: object) -> tuple[int, int, bool] | None:
    """Both operands as ints, and whether they are uints; None when not both int or uint."""
    if (type(a) is int and type(b) is int) or (type(a) is Uint and type(b) is Uint):
        assert isinstance(a, int)
        assert isinstance(b, int)
        if b == 0:
            raise errors.CelEvalError("division by zero" if op == "/" else "modulus by zero")
        if a == INT64_MIN and b == -1:
            raise overflow(op)
        return int(a), int(b), type(a) is Uint
    return None


def divide(a: object, b: object) -> object:
    """CEL ``/``: integers truncate toward zero; doubles follow IEEE 754 (x/0 is infinite)."""
    integers = _integers("/", a, b)
    if integers is not None:
        x, y, unsigned = integers
        quotient = abs(x) // abs(y)
        result = -quotient if (x < 0) != (y < 0) else quotient
        return Uint(result) if unsigned else result
    if type(a) is float and type(b) is float:
        if b == 0.0:
            # Python raises here; CEL doubles are IEEE, so x/0 is ±inf and 0/0 is NaN.
            if a == 0.0 or math.isnan(a):
                return math.nan
            return math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    raise no_overload("/", a, b)


def modulo(a: object, b: object) -> object:
    """CEL ``%``: integers only, the sign of the result follows the dividend."""
    integers = _integers("%", a, b)
    if integers is None:
        raise no_overload("%", a, b)
    x, y, unsigned = integers
    remainder = abs(x) % abs(y)
    result = -remainder if x < 0 else remainder
    return Uint(result) if unsigned else result


def negate(a: object) -> object:
    """CEL unary ``-`` over int and double (uint has no negation)."""
    if type(a) is int:
        return _int_result("-", -a)
    if type(a) is float:
        return -a
    raise no_overload("-", a)


def logical_not(a: object) -> bool:
    """CEL ``!`` on a value that is not statically known to be a bool."""
    if a is True:
        return False
    if a is False:
        return True
    raise no_overload("!", a)


# --- containers ------------------------------------------------------------------------------


def find_key(mapping: Mapping[object, object], key: object) -> object:
    """The key of ``mapping`` CEL-equal to ``key``, or a private sentinel when absent."""
    if type(key) is str:
        return key if key in mapping else MISSING
    key_is_bool = type(key) is bool
    for candidate in mapping:
        # Numeric keys match across int/uint/double; a bool only ever matches a bool.
        if (type(candidate) is bool) == key_is_bool and equals(candidate, key):
            return candidate
    return MISSING


def index(container: object, key: object) -> object:
    """CEL ``container[key]`` for lists (no negative indexes) and maps."""
    if type(container) is dict and type(key) is str:
        if key in container:
            return container[key]
        raise errors.CelEvalError(f"no such key: {key!r}")
    if isinstance(container, Mapping):
        found = find_key(container, key)
        if found is MISSING:
            raise errors.CelEvalError(f"no such key: {key!r}")
        return container[found]
    if type(container) is values.Optional:
        return container[key]
    if isinstance(container, Sequence) and is_list(container):
        position = list_position(key)
        if 0 <= position < len(container):
            return container[position]
        raise errors.CelEvalError(f"index out of range: {position}")
    raise no_overload("[]", container, key)


def list_position(key: object) -> int:
    """The int a list index stands for; integral doubles count, as in cel-go."""
    if type(key) is int or type(key) is Uint:
        return int(key)
    if type(key) is float and key.is_integer():
        return int(key)
    raise errors.CelEvalError(f"no such overload: list index of type {type_name(key)}")


def has_field(container: object, field: str) -> bool:
    """The ``has(x.f)`` test when ``x`` is not a plain dict: only maps have fields."""
    if isinstance(container, Mapping):
        return field in container
    if type(container) is values.Optional:
        return container.present and has_field(container.value, field)
    return False


def contains(item: object, container: object) -> bool:
    """CEL ``item in container``: list membership by CEL equality, or map key presence."""
    if type(container) is list:
        if type(item) is str:
            return item in container  # a str only equals a str, so Python's test is exact
        return any(equals(item, element) for element in container)
    if type(container) is dict and type(item) is str:
        return item in container
    if isinstance(container, Mapping):
        return find_key(container, item) is not MISSING
    if isinstance(container, Sequence) and is_list(container):
        return any(equals(item, element) for element in container)
    raise no_overload("in", item, container)


def iterate(container: object) -> Sequence[object]:
    """What a comprehension macro iterates: list elements, or map keys."""
    if type(container) is dict or isinstance(container, Mapping):
        return list(container)
    if isinstance(container, Sequence) and is_list(container):
        return container
    raise no_overload("comprehension range", container)


def size(value: object) -> int:
    """CEL ``size()``: code points of a string, bytes, list elements or map entries."""
    if type(value) is str or type(value) is dict:
        return len(value)
    if isinstance(value, (str, bytes, Mapping, Sequence)) and type(value) is not bytearray:
        return len(value)
    raise no_overload("size", value)


def make_map(entries: Iterable[tuple[object, object]]) -> dict[object, object]:
    """Build a CEL map literal, rejecting bad key types and duplicate keys."""
    result: dict[object, object] = {}
    for key, value in entries:
        kind = type(key)
        if kind not in (str, int, Uint, bool):
            raise errors.CelEvalError(f"unsupported map key type: {type_name(key)}")
        if find_key(result, key) is not MISSING:
            raise errors.CelEvalError(f"duplicate map key: {key!r}")
        # Python would merge True and 1 into one dict key; CEL keeps them apart, and so
        # refusing the pair (above, via find_key's bool rule) is not enough: check hash twins.
        if key in result:
            raise errors.CelEvalError(f"map keys {key!r} collide in this implementation")
        result[key] = value
    return result


MEMO: Final = "\0memo"
"""The activation key of a per-object memo (``codegen.Generator.memoized``); no CEL name."""


def memoized(
    activation: Mapping[str, object], key: str, compute: Callable[[object], object]
) -> object:
    """``compute(activation)``, remembered in the activation's memo when it has one."""
    memo = activation.get(MEMO) if type(activation) is dict else None
    if memo is None:
        return compute(activation)
    value = memo.get(key, MISSING)
    if value is MISSING:
        value = memo[key] = compute(activation)
    return value
