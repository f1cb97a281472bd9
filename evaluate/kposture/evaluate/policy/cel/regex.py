"""RE2 patterns (what CEL's ``matches`` speaks) run on Python's ``re``, with a cache.

The two dialects mostly agree; where they differ on constructs that policies use, the
pattern is rewritten so Python matches what RE2 would:

* ``$`` (without the ``m`` flag) means end of text in RE2, but "end, or before a final
  newline" in Python: it becomes ``\\Z``, and RE2's ``\\z`` becomes ``\\Z`` too.
* ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only in RE2 and Unicode-aware in Python.
* ``[[:alpha:]]``-style classes, ``\\x{...}``, ``\\Q...\\E`` and ``(?<name>`` are spelled
  the Python way.

Constructs RE2 rejects (lookaround, backreferences, possessive and atomic groups) are
rejected here too, so a pattern that Kubernetes refuses never silently works with us.
Remaining known difference: ``\\D``, ``\\W`` and ``\\S`` inside a character class keep
Python's Unicode meaning.
"""

from __future__ import annotations

import functools
import re
from typing import Final

_MAX_CACHED: Final = 512
_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_OUTSIDE_CLASS: Final = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "w": "[0-9A-Za-z_]",
    "W": "[^0-9A-Za-z_]",
    "s": "[\\t\\n\\f\\r ]",
    "S": "[^\\t\\n\\f\\r ]",
    "b": "(?a:\\b)",
    "B": "(?a:\\B)",
    "z": "\\Z",
}
_INSIDE_CLASS: Final = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
_UNSUPPORTED_GROUPS: Final = ("(?=", "(?!", "(?<=", "(?<!", "(?>", "(?#", "(?P=", "(?(")


class RegexError(ValueError):
    """The pattern is not valid RE2, or uses RE2 syntax this translation does not cover."""


@functools.lru_cache(maxsize=_MAX_CACHED)
def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 ``pattern`` into an equivalent Python pattern (cached)."""
    try:
        return re.compile(translate(pattern))
    except re.error as exc:
        raise RegexError(f"invalid regular expression {pattern!r}: {exc}") from None


def translate(pattern: str) -> str:
    """Rewrite RE2 syntax into Python ``re`` syntax with the same meaning."""
    multiline = bool(re.search(r"\(\?[a-zA-Z]*m[a-zA-Z]*[:)]", pattern))
    if re.search(r"\(\?[a-zA-Z]*U", pattern):
        raise RegexError("the U (ungreedy) flag is not supported")
    out: list[str] = []
    pos = 0
    in_class = False
    while pos < len(pattern):
        char = pattern[pos]
        if char == "\\":
            text, pos = _escape(pattern, pos, in_class=in_class)
            out.append(text)
        elif in_class:
            pos, in_class = _class_item(pattern, pos, out)
        elif char == "[":
            pos = _class_open(pattern, pos, out)
            in_class = True
        else:
            pos = _outside(pattern, pos, out, multiline=multiline)
    if in_class:
        raise RegexError(f"missing ] in {pattern!r}")
    return "".join(out)


def _outside(pattern: str, pos: int, out: list[str], *, multiline: bool) -> int:
    """Translate one character outside a class; returns the next position."""
    char = pattern[pos]
    if char == "(":
        if pattern.startswith(_UNSUPPORTED_GROUPS, pos):
            raise RegexError(
                f"lookaround, conditionals and backreferences are not RE2: {pattern!r}"
            )
        if pattern.startswith("(?<", pos):
            out.append("(?P<")  # RE2 also accepts (?<name>; Python 3.11 only (?P<name>
            return pos + 3
    if char in "*+?}" and pattern.startswith("+", pos + 1):
        raise RegexError(f"possessive repetition is not RE2: {pattern!r}")
    if char == "{" and pattern.startswith(",", pos + 1):
        out.append("\\{")  # RE2 reads {,n} literally; Python would repeat
    elif char == "$" and not multiline:
        out.append("\\Z")
    else:
        out.append(char)
    return pos + 1


def _class_open(pattern: str, pos: int, out: list[str]) -> int:
    """Translate the ``[`` or ``[^`` that opens a class; returns the next position."""
    out.append("[")
    pos += 1
    if pattern.startswith("^", pos):
        out.append("^")
        pos += 1
    if pattern.startswith("]", pos):
        out.append("\\]")  # a ] first in a class is literal in RE2
        pos += 1
    return pos


def _class_item(pattern: str, pos: int, out: list[str]) -> tuple[int, bool]:
    """Translate one item inside a class; returns the next position and whether still inside."""
    char = pattern[pos]
    if char == "]":
        out.append("]")
        return pos + 1, False
    if pattern.startswith("[:", pos):
        end = pattern.find(":]", pos + 2)
        name = pattern[pos + 2 : end] if end > 0 else ""
        if name not in _POSIX_CLASSES:
            raise RegexError(f"unsupported character class in {pattern!r}")
        out.append(_POSIX_CLASSES[name])
        return end + 2, True
    # Literal in RE2; escaped so Python neither nests sets nor warns about them.
    out.append("\\" + char if char in "[&~|" else char)
    return pos + 1, True


def _escape(pattern: str, pos: int, *, in_class: bool) -> tuple[str, int]:
    nxt = pattern[pos + 1 : pos + 2]
    if not nxt:
        raise RegexError(f"trailing backslash in {pattern!r}")
    table = _INSIDE_CLASS if in_class else _OUTSIDE_CLASS
    if nxt in table:
        return table[nxt], pos + 2
    if nxt in "123456789":
        raise RegexError(f"backreferences are not RE2: {pattern!r}")
    if nxt in "pPCZ":
        raise RegexError(f"\\{nxt} is not supported in {pattern!r}")
    if nxt == "x" and pattern.startswith("{", pos + 2):
        end = pattern.find("}", pos + 3)
        digits = pattern[pos + 3 : end] if end > 0 else ""
        if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise RegexError(f"invalid \\x{{}} escape in {pattern!r}")
        return f"\\U{int(digits, 16):08x}", end + 1
    if nxt == "Q":
        end = pattern.find("\\E", pos + 2)
        literal = pattern[pos + 2 :] if end < 0 else pattern[pos + 2 : end]
        quoted = "".join("\\" + c if not c.isalnum() else c for c in literal)
        return quoted, len(pattern) if end < 0 else end + 2
    return pattern[pos : pos + 2], pos + 2
