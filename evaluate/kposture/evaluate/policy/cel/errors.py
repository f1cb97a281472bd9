"""The errors of the CEL boundary.

::

    CelError                 anything this package raises on purpose
    ├── CelSyntaxError       the source does not parse, or uses something we do not support
    └── CelEvalError         a runtime error under CEL semantics (no such key, no overload, ...)

A ``CelEvalError`` is a *value* in CEL terms: ``||``, ``&&``, ``all`` and ``exists`` may absorb
it, so the engine must only see it when the whole expression evaluates to an error.
"""

from __future__ import annotations


class CelError(Exception):
    """Base class of every error raised by the CEL compiler and evaluator."""

    retriable = False  # the same source and data always give the same error


class CelSyntaxError(CelError):
    """The source is not valid CEL, or uses a construct outside the supported subset.

    ``line`` and ``column`` are 1-based and point at the offending token.
    """

    def __init__(self, message: str, *, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"{self.message} (line {self.line}, column {self.column})"


class CelEvalError(CelError):
    """Evaluating a compiled expression produced a CEL error (the check result is ``error``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
