"""Tokenise CEL source text into the tokens ``parser`` reads.

Literal values are decoded here (escapes, bases, the ``u`` suffix), so the parser only sees
Python values. Positions are character offsets; ``position`` turns one into a 1-based line and
column for ``CelSyntaxError``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from kposture.evaluate.policy.cel import errors, values

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


class Token(NamedTuple):
    """One token: ``kind`` is int, uint, double, string, bytes, ident, op or eof."""

    kind: str
    value: object
    pos: int


def position(source: str, pos: int) -> tuple[int, int]:
    """The 1-based (line, column) of offset ``pos`` in ``source``."""
    line = source.count("\n", 0, pos) + 1
    column = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return line, column


def syntax_error(source: str, pos: int, message: str) -> errors.CelSyntaxError:
    """A ``CelSyntaxError`` located at offset ``pos``."""
    line, column = position(source, pos)
    return errors.CelSyntaxError(message, line=line, column=column)


# Order matters: hex before decimal, doubles before ints, so the longest literal wins.
_TOKEN_RE = re.compile(
    r"""
    (?P<space>[ \t\n\r\f]+|//[^\n]*)
    | (?P<hex>0[xX][0-9a-fA-F]+[uU]?)
    | (?P<double>[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)
    | (?P<int>[0-9]+[uU]?)
    | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"|'''|"|'))
    | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
    | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,\[\]{}()])
    """,
    re.VERBOSE,
)

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "?": "?",
    '"': '"',
    "'": "'",
    "`": "`",
}


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens, ending with an ``eof`` token; raise on bad input."""
    tokens: list[Token] = []
    pos = 0
    end = len(source)
    while pos < end:
        match = _TOKEN_RE.match(source, pos)
        if match is None:
            raise syntax_error(source, pos, f"unexpected character {source[pos]!r}")
        kind = match.lastgroup
        text = match.group()
        if kind == "space":
            pos = match.end()
            continue
        if kind == "string":
            token, pos = _string(source, pos, text)
            tokens.append(token)
            continue
        if kind in ("hex", "int"):
            tokens.append(_integer(source, pos, text, base=16 if kind == "hex" else 10))
        elif kind == "double":
            tokens.append(Token("double", float(text), pos))
        else:
            tokens.append(Token(str(kind), text, pos))
        pos = match.end()
    tokens.append(Token("eof", None, end))
    return tokens


def _integer(source: str, pos: int, text: str, *, base: int) -> Token:
    unsigned = text[-1] in "uU"
    digits = text[:-1] if unsigned else text
    value = int(digits[2:] if base == 16 else digits, base)
    if unsigned:
        if value > UINT64_MAX:
            raise syntax_error(source, pos, f"uint literal out of range: {text}")
        return Token("uint", values.Uint(value), pos)
    # One past INT64_MAX is allowed here because only the parser knows whether a minus sign
    # precedes it (-9223372036854775808 is a valid literal); it rejects the unsigned case.
    if value > INT64_MAX + 1:
        raise syntax_error(source, pos, f"int literal out of range: {text}")
    return Token("int", value, pos)


def _string(source: str, start: int, opener: str) -> tuple[Token, int]:
    prefix = opener.rstrip("\"'").lower()
    quote = opener[len(prefix) :]
    raw = "r" in prefix
    is_bytes = "b" in prefix
    pos = start + len(opener)
    triple = len(quote) == 3
    parts: list[str] = []  # str pieces; in bytes literals, chars < 256 from \x and octal
    byte_escapes: list[int] = []  # indexes in parts that are raw byte values
    while True:
        if pos >= len(source):
            raise syntax_error(source, start, "unterminated string literal")
        if source.startswith(quote, pos):
            pos += len(quote)
            break
        char = source[pos]
        if not triple and char in "\r\n":
            raise syntax_error(source, pos, "newline in string literal")
        if char == "\\" and not raw:
            text, pos, is_byte = _escape(source, pos, is_bytes=is_bytes)
            if is_byte:
                byte_escapes.append(len(parts))
            parts.append(text)
            continue
        parts.append(char)
        pos += 1
    if not is_bytes:
        try:
            value = "".join(parts)
            value.encode("utf-8")  # a lone surrogate from \ud800 is not a valid code point
        except UnicodeEncodeError:
            raise syntax_error(source, start, "invalid code point in string literal") from None
        return Token("string", value, start), pos
    raw_bytes = bytearray()
    escaped = set(byte_escapes)
    for index, part in enumerate(parts):
        raw_bytes += bytes([ord(part)]) if index in escaped else part.encode("utf-8")
    return Token("bytes", bytes(raw_bytes), start), pos


def _escape(source: str, pos: int, *, is_bytes: bool) -> tuple[str, int, bool]:
    """Decode the escape at ``pos`` (a backslash): (text, next offset, is a raw byte)."""
    char = source[pos + 1 : pos + 2]
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], pos + 2, False
    widths = {"x": 2, "X": 2, "u": 4, "U": 8}
    if char in widths:
        width = widths[char]
        digits = source[pos + 2 : pos + 2 + width]
        if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise syntax_error(source, pos, f"invalid \\{char} escape")
        code = int(digits, 16)
        if code > 0x10FFFF:
            raise syntax_error(source, pos, "escape is not a valid code point")
        # In bytes literals \x is one byte; in strings it is the code point U+00HH.
        return chr(code), pos + 2 + width, is_bytes and char in "xX"
    digits = source[pos + 1 : pos + 4]
    if len(digits) == 3 and digits[0] in "0123" and all(c in "01234567" for c in digits):
        return chr(int(digits, 8)), pos + 4, is_bytes
    raise syntax_error(source, pos, f"invalid escape sequence \\{char}")
