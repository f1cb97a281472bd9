"""The CEL function library: strings, regexes, lists and optionals (conversions live apart).

``OVERLOADS`` maps (name, is_method, arity) to the Python function the generated code calls;
a method's receiver is passed as the first argument. The set is CEL's standard functions plus
the Kubernetes string, list and regex libraries, and the optional functions of cel-go. What
is not listed here is rejected at compile time, so a policy never fails late on a typo.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Final

from kposture.evaluate.policy.cel import conversions, errors, regex, runtime, values

Uint = values.Uint
# Go's unicode.IsSpace, which the Kubernetes trim() uses; str.strip() would also drop \x1c-\x1f.
_GO_SPACE: Final = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501
_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER: Final = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_COMPARABLE: Final = frozenset({int, float, Uint, str, bytes, bool})


def _text(name: str, value: object) -> str:
    if type(value) is not str:
        raise runtime.no_overload(name, value)
    return value


def _int(name: str, value: object) -> int:
    if type(value) is not int:
        raise runtime.no_overload(name, value)
    return value


# --- strings ---------------------------------------------------------------------------------


def starts_with(text: object, prefix: object) -> bool:
    """``string.startsWith(prefix)``."""
    if type(text) is str and type(prefix) is str:
        return text.startswith(prefix)
    raise runtime.no_overload("startsWith", text, prefix)


def ends_with(text: object, suffix: object) -> bool:
    """``string.endsWith(suffix)``."""
    if type(text) is str and type(suffix) is str:
        return text.endswith(suffix)
    raise runtime.no_overload("endsWith", text, suffix)


def str_contains(text: object, part: object) -> bool:
    """``string.contains(part)``."""
    if type(text) is str and type(part) is str:
        return part in text
    raise runtime.no_overload("contains", text, part)


def matches(text: object, pattern: object) -> bool:
    """``string.matches(re)`` and ``matches(string, re)``: RE2 search (not full match)."""
    if type(text) is str and type(pattern) is str:
        return regex_for(pattern).search(text) is not None
    raise runtime.no_overload("matches", text, pattern)


def regex_for(pattern: str) -> re.Pattern[str]:
    """The compiled (cached) form of an RE2 pattern; a bad pattern is a CEL error."""
    try:
        return regex.compile_re2(pattern)
    except regex.RegexError as exc:
        raise errors.CelEvalError(str(exc)) from None


def search(compiled: re.Pattern[str], text: object) -> bool:
    """Whether a precompiled pattern occurs in ``text``."""
    if type(text) is str:
        return compiled.search(text) is not None
    raise runtime.no_overload("matches", text)


def find(text: object, pattern: object) -> str:
    """Kubernetes ``string.find(re)``: the first match, or the empty string."""
    match = regex_for(_text("find", pattern)).search(_text("find", text))
    return match.group(0) if match else ""


def find_all(text: object, pattern: object, limit: object = -1) -> list[object]:
    """Kubernetes ``string.findAll(re[, n])``: up to ``n`` matches (all when negative)."""
    compiled = regex_for(_text("findAll", pattern))
    subject = _text("findAll", text)
    count = _int("findAll", limit)
    found: list[object] = []
    if count == 0:
        return found
    for match in compiled.finditer(subject):
        found.append(match.group(0))
        if len(found) == count:
            break
    return found


def lower_ascii(text: object) -> str:
    """``string.lowerAscii()``: only A-Z change, as in cel-go."""
    return _text("lowerAscii", text).translate(_LOWER)


def upper_ascii(text: object) -> str:
    """``string.upperAscii()``."""
    return _text("upperAscii", text).translate(_UPPER)


def trim(text: object) -> str:
    """``string.trim()``: strips Unicode white space as Go's ``strings.TrimSpace``."""
    return _text("trim", text).strip(_GO_SPACE)


def replace(text: object, old: object, new: object, limit: object = -1) -> str:
    """``string.replace(old, new[, n])``: at most ``n`` replacements, all when negative."""
    count = _int("replace", limit)
    return _text("replace", text).replace(_text("replace", old), _text("replace", new), count)


def split(text: object, separator: object, limit: object = -1) -> list[object]:
    """``string.split(sep[, n])`` with Go's ``strings.SplitN`` semantics."""
    subject = _text("split", text)
    sep = _text("split", separator)
    count = _int("split", limit)
    if count == 0:
        return []
    if sep:
        return list(subject.split(sep, count - 1 if count > 0 else -1))
    chars: list[object] = list(subject)  # an empty separator splits into code points
    if 0 < count < len(chars):
        chars = [*chars[: count - 1], subject[count - 1 :]]
    return chars


def substring(text: object, start: object, end: object = None) -> str:
    """``string.substring(start[, end])`` over code points; out of range is an error."""
    subject = _text("substring", text)
    first = _int("substring", start)
    stop = len(subject) if end is None else _int("substring", end)
    if not 0 <= first <= stop <= len(subject):
        raise errors.CelEvalError(f"substring({first}, {stop}) out of range")
    return subject[first:stop]


def char_at(text: object, position: object) -> str:
    """``string.charAt(i)``: the code point at ``i``; ``i == size`` gives the empty string."""
    subject = _text("charAt", text)
    where = _int("charAt", position)
    if not 0 <= where <= len(subject):
        raise errors.CelEvalError(f"charAt({where}) out of range")
    return subject[where : where + 1]


def index_of(receiver: object, item: object, offset: object = None) -> int:
    """``string.indexOf(sub[, offset])`` or the Kubernetes ``list.indexOf(x)``; -1 if absent."""
    if type(receiver) is str:
        part = _text("indexOf", item)
        start = 0 if offset is None else _int("indexOf", offset)
        if not 0 <= start <= len(receiver):
            raise errors.CelEvalError(f"indexOf offset {start} out of range")
        return receiver.find(part, start)
    if offset is None and runtime.is_list(receiver):
        for position, element in enumerate(_list("indexOf", receiver)):
            if runtime.equals(element, item):
                return position
        return -1
    raise runtime.no_overload("indexOf", receiver, item)


def last_index_of(receiver: object, item: object, offset: object = None) -> int:
    """``string.lastIndexOf(sub[, offset])`` or ``list.lastIndexOf(x)``; -1 if absent."""
    if type(receiver) is str:
        part = _text("lastIndexOf", item)
        start = len(receiver) if offset is None else _int("lastIndexOf", offset)
        if not 0 <= start <= len(receiver):
            raise errors.CelEvalError(f"lastIndexOf offset {start} out of range")
        return receiver.rfind(part, 0, start + len(part))
    if offset is None and runtime.is_list(receiver):
        seq = _list("lastIndexOf", receiver)
        for position in range(len(seq) - 1, -1, -1):
            if runtime.equals(seq[position], item):
                return position
        return -1
    raise runtime.no_overload("lastIndexOf", receiver, item)


def join(items: object, separator: object = "") -> str:
    """``list.join([sep])``: every element must be a string."""
    return _text("join", separator).join(_text("join", item) for item in _list("join", items))


# --- Kubernetes list library -----------------------------------------------------------------


def _list(name: str, items: object) -> Sequence[object]:
    if not runtime.is_list(items):
        raise runtime.no_overload(name, items)
    assert isinstance(items, Sequence)
    return items


def is_sorted(items: object) -> bool:
    """``list.isSorted()``: every element is <= its successor."""
    return not any(runtime.greater(a, b) for a, b in itertools.pairwise(_list("isSorted", items)))


def list_sum(items: object) -> object:
    """``list.sum()``: 0 for an empty list; overflow is an error."""
    seq = _list("sum", items)
    if not seq:
        return 0
    total = seq[0]
    if type(total) not in runtime.NUMBERS:
        raise runtime.no_overload("sum", total)
    for item in seq[1:]:
        total = runtime.add(total, item)
    return total


def _extreme(name: str, items: object, better: Callable[[object, object], bool]) -> object:
    seq = _list(name, items)
    if not seq:
        raise errors.CelEvalError(f"{name}() of an empty list")
    best = seq[0]
    for item in seq[1:]:
        if better(item, best):
            best = item
    if type(best) not in _COMPARABLE:
        raise runtime.no_overload(name, best)
    return best


def list_min(items: object) -> object:
    """``list.min()``: an error for an empty list."""
    return _extreme("min", items, runtime.less)


def list_max(items: object) -> object:
    """``list.max()``: an error for an empty list."""
    return _extreme("max", items, runtime.greater)


# --- optionals -------------------------------------------------------------------------------


def optional_of(value: object) -> values.Optional:
    """``optional.of(x)``."""
    return values.Optional(True, value)


def optional_none() -> values.Optional:
    """``optional.none()``."""
    return values.NONE


def optional_of_non_zero(value: object) -> values.Optional:
    """``optional.ofNonZeroValue(x)``: none for a zero value ("", 0, false, null, [], {})."""
    zero = value is None or (type(value) is not values.CelType and not value)
    return values.NONE if zero else values.Optional(True, value)


def _optional(name: str, value: object) -> values.Optional:
    if type(value) is not values.Optional:
        raise runtime.no_overload(name, value)
    return value


def has_value(value: object) -> bool:
    """``opt.hasValue()``."""
    return _optional("hasValue", value).present


def value_of(value: object) -> object:
    """``opt.value()``: an error when the optional is empty."""
    opt = _optional("value", value)
    if not opt.present:
        raise errors.CelEvalError("optional.none() has no value")
    return opt.value


def or_value(value: object, default: object) -> object:
    """``opt.orValue(x)``."""
    opt = _optional("orValue", value)
    return opt.value if opt.present else default


def or_optional(value: object, other: object) -> object:
    """``opt.or(other)``: the first optional that has a value."""
    return value if _optional("or", value).present else _optional("or", other)


OVERLOADS: Final[dict[tuple[str, bool, int], Callable[..., object]]] = {
    ("size", False, 1): runtime.size,
    ("size", True, 0): runtime.size,
    ("int", False, 1): conversions.to_int,
    ("uint", False, 1): conversions.to_uint,
    ("double", False, 1): conversions.to_double,
    ("string", False, 1): conversions.to_string,
    ("bool", False, 1): conversions.to_bool,
    ("bytes", False, 1): conversions.to_bytes,
    ("type", False, 1): conversions.type_of,
    ("dyn", False, 1): conversions.dyn,
    ("startsWith", True, 1): starts_with,
    ("endsWith", True, 1): ends_with,
    ("contains", True, 1): str_contains,
    ("matches", True, 1): matches,
    ("matches", False, 2): matches,
    ("find", True, 1): find,
    ("findAll", True, 1): find_all,
    ("findAll", True, 2): find_all,
    ("lowerAscii", True, 0): lower_ascii,
    ("upperAscii", True, 0): upper_ascii,
    ("trim", True, 0): trim,
    ("replace", True, 2): replace,
    ("replace", True, 3): replace,
    ("split", True, 1): split,
    ("split", True, 2): split,
    ("substring", True, 1): substring,
    ("substring", True, 2): substring,
    ("charAt", True, 1): char_at,
    ("indexOf", True, 1): index_of,
    ("indexOf", True, 2): index_of,
    ("lastIndexOf", True, 1): last_index_of,
    ("lastIndexOf", True, 2): last_index_of,
    ("join", True, 0): join,
    ("join", True, 1): join,
    ("isSorted", True, 0): is_sorted,
    ("sum", True, 0): list_sum,
    ("min", True, 0): list_min,
    ("max", True, 0): list_max,
    ("optional.of", False, 1): optional_of,
    ("optional.none", False, 0): optional_none,
    ("optional.ofNonZeroValue", False, 1): optional_of_non_zero,
    ("hasValue", True, 0): has_value,
    ("value", True, 0): value_of,
    ("orValue", True, 1): or_value,
    ("or", True, 1): or_optional,
}

#: Functions whose result is always a bool (or an error), which lets codegen skip checks.
BOOL_RESULTS: Final = frozenset(
    {"startsWith", "endsWith", "contains", "matches", "isSorted", "hasValue", "bool"}
)
