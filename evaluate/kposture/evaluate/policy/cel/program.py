"""Compile a CEL source once into a ``Program`` and evaluate it many times.

This is the entry point the engine uses: ``compile`` parses, checks names and functions,
generates the evaluator (``codegen``) and computes ``field_paths`` (``paths``); the hot path
is ``Program.evaluate``, one call into the generated function.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Final

from kposture.evaluate.policy.cel import codegen, errors, parser, paths, values

#: The variables of a Kubernetes ValidatingAdmissionPolicy expression.
DEFAULT_VARIABLES: Final = (
    "object",
    "oldObject",
    "namespaceObject",
    "params",
    "request",
    "variables",
)


class Program:
    """A compiled CEL expression.

    ``source`` is the CEL text; ``field_paths`` the variable-rooted paths whose subtrees
    cover every field the expression can read (``*`` for every list element or map value).
    ``projection_paths`` is the same with presence tests kept apart: a path ending in
    ``paths.PRESENT`` (``?``) means only that key's presence is read.
    """

    __slots__ = ("_function", "field_paths", "projection_paths", "python_source", "source")

    def __init__(
        self,
        source: str,
        *,
        function: Callable[[Mapping[str, object]], object],
        field_paths: frozenset[tuple[str, ...]],
        python_source: str,
        projection_paths: frozenset[tuple[str, ...]] | None = None,
    ) -> None:
        self.source = source
        self.field_paths = field_paths
        self.projection_paths = field_paths if projection_paths is None else projection_paths
        self.python_source = python_source  # the generated code, for debugging
        self._function = function

    @property
    def function(self) -> Callable[[Mapping[str, object]], object]:
        """The generated function itself, for callers that run it millions of times.

        It returns the raw value (possibly a ``Uint`` or an optional) and signals a CEL error
        by raising any exception; ``evaluate`` turns both into the public conventions.
        """
        return self._function

    def evaluate(self, activation: Mapping[str, object]) -> object:
        """Evaluate against ``activation`` (variable name -> plain JSON-like value).

        Returns plain Python values (bool, int, float, str, bytes, None, list, dict; a
        ``CelType`` for type values). Raises ``CelEvalError`` when the result is a CEL error.
        """
        try:
            result = self._function(activation)
        except errors.CelEvalError:
            raise
        except codegen.ERRORS as exc:
            raise errors.CelEvalError(describe(exc)) from exc
        if type(result) is bool:
            return result
        return values.to_plain(result)

    def __repr__(self) -> str:
        return f"Program({self.source!r})"


def describe(exc: BaseException) -> str:
    """A CEL-style message for a Python exception raised by generated code."""
    if isinstance(exc, errors.CelEvalError):
        return exc.message
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r}" if exc.args else "no such key"
    if isinstance(exc, (TypeError, AttributeError)):
        return f"no such overload ({exc})"
    if isinstance(exc, RecursionError):
        return "value nested too deeply"
    return f"{type(exc).__name__}: {exc}"


def compile(
    source: str,
    *,
    variables: Collection[str] = DEFAULT_VARIABLES,
) -> Program:
    """Parse, check and compile ``source``; raise ``CelSyntaxError`` if it cannot run.

    Unknown variables and functions, wrong argument counts and invalid constant regexes are
    all reported here, with the line and column of the offending token.
    """
    tree = parser.parse(source)
    names = frozenset(variables)
    try:
        function, python_source = codegen.Generator(source, names).build(tree)
    except (SyntaxError, RecursionError, MemoryError):
        # Python refused the generated code (e.g. too deep); the CEL itself was valid.
        raise errors.CelSyntaxError("expression too complex", line=1, column=1) from None
    return Program(
        source,
        function=function,
        field_paths=paths.field_paths(tree, names),
        python_source=python_source,
        projection_paths=paths.projection_paths(tree, names),
    )
