"""CEL's type conversion functions: ``int() uint() double() string() bool() bytes() type()``.

They follow cel-go, not Python: ``int("1_0")`` and ``int(" 1")`` are errors, ``int(2.9)``
truncates, out-of-range results are overflow errors, and ``string(1e6)`` is ``"1e+06"``.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Final

from kposture.evaluate.policy.cel import errors, runtime, values

Uint = values.Uint
_INT_RE: Final = re.compile(r"[+-]?[0-9]+\Z")
_UINT_RE: Final = re.compile(r"[0-9]+\Z")
_DOUBLE_RE: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\Z",
    re.IGNORECASE,
)
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def to_int(value: object) -> int:
    """CEL ``int()``: from int, uint, double (truncating) or a base-10 string."""
    if type(value) is int:
        return value
    if type(value) is float:
        # The bounds are the doubles nearest the int64 limits; NaN fails both comparisons.
        if -9.223372036854775808e18 <= value < 9.223372036854775808e18:
            return int(value)
        raise runtime.overflow("int()")
    if type(value) is str and not _INT_RE.match(value):
        raise errors.CelEvalError(f"cannot convert {value!r} to int")
    if type(value) is str or type(value) is Uint:
        number = int(value)
        if runtime.INT64_MIN <= number <= runtime.INT64_MAX:
            return number
        raise runtime.overflow("int()")
    raise runtime.no_overload("int", value)


def to_uint(value: object) -> Uint:
    """CEL ``uint()``: from int, uint, double (truncating) or a base-10 string."""
    if type(value) is Uint:
        return value
    if type(value) is float:
        if 0.0 <= value < 1.8446744073709552e19:
            return Uint(int(value))
        raise runtime.overflow("uint()")
    if type(value) is str and not _UINT_RE.match(value):
        raise errors.CelEvalError(f"cannot convert {value!r} to uint")
    if type(value) is str or type(value) is int:
        number = int(value)
        if 0 <= number <= runtime.UINT64_MAX:
            return Uint(number)
        raise runtime.overflow("uint()")
    raise runtime.no_overload("uint", value)


def to_double(value: object) -> float:
    """CEL ``double()``: from int, uint, double or a decimal string (``inf``/``nan`` too)."""
    if type(value) is float:
        return value
    if type(value) is int or type(value) is Uint:
        return float(value)
    if type(value) is str:
        if _DOUBLE_RE.match(value):
            number = float(value)
            # Go's ParseFloat reports a range error where Python rounds to infinity.
            if not math.isinf(number) or "inf" in value.lower():
                return number
        raise errors.CelEvalError(f"cannot convert {value!r} to double")
    raise runtime.no_overload("double", value)


def to_string(value: object) -> str:
    """CEL ``string()``: doubles are formatted like Go's ``%g``, as cel-go does."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int or type(value) is Uint:
        return str(int(value))
    if type(value) is float:
        return format_double(value)
    if type(value) is bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.CelEvalError("bytes are not valid UTF-8") from None
    raise runtime.no_overload("string", value)


def format_double(number: float) -> str:
    """Format a double as Go's ``fmt.Sprintf("%g", d)``: shortest digits, ``1e+06`` style."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0.0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    _, digit_tuple, exponent = decimal.Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digit_tuple) - len(digits)
    point = len(digits) + exponent  # where the decimal point falls, counted from the left
    sign = "-" if number < 0 else ""
    if point - 1 < -4 or point - 1 >= 6:  # Go's %g switches at exponent 6
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{point - 1:+03d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def to_bool(value: object) -> bool:
    """CEL ``bool()``: from bool or the strings Go's ``strconv.ParseBool`` accepts."""
    if type(value) is bool:
        return value
    if type(value) is str:
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise errors.CelEvalError(f"cannot convert {value!r} to bool")
    raise runtime.no_overload("bool", value)


def to_bytes(value: object) -> bytes:
    """CEL ``bytes()``: from bytes or a string (UTF-8)."""
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8")
    raise runtime.no_overload("bytes", value)


def type_of(value: object) -> values.CelType:
    """CEL ``type()``."""
    name = runtime.type_name(value)
    if name == "optional_type":
        return values.OPTIONAL_TYPE
    return values.TYPE_NAMES.get(name) or values.CelType(name)


def dyn(value: object) -> object:
    """CEL ``dyn()``: the identity at runtime (it only matters to a type checker)."""
    return value
