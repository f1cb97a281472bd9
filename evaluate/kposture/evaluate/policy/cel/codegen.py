"""Generate one Python function per CEL expression: the fast path of the evaluator.

Why generate source rather than nest closures: a generated function runs the whole
expression in one Python frame, with short-circuiting as real ``if`` statements and
field selection as plain subscripts, which is several times faster than a closure tree.

Safety: only code produced here from the parsed tree is compiled. User text reaches the
generated source only as ``repr()`` of decoded literals and field names, or as identifiers
that the lexer restricted to ``[_a-zA-Z][_a-zA-Z0-9]*`` and that get a ``_v<n>_`` prefix;
every other value (floats such as NaN, uints, regexes, overload functions) is passed in
through the function's globals.

Error model: a CEL error is a Python exception. Inline subscripts raise ``KeyError`` or
``TypeError`` for a missing key or a non-map, so ``ERRORS`` lists the exception types that
count as CEL errors; ``||``, ``&&``, ``all`` and ``exists`` catch them to absorb errors the
way CEL does, and ``Program.evaluate`` turns any that escape into ``CelEvalError``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from kposture.evaluate.policy.cel import (
    analysis,
    control,
    errors,
    functions,
    lexer,
    nodes,
    regex,
    runtime,
    values,
)

Scope = dict[str, str]  # CEL iteration variable -> Python local name

ERRORS: Final = (
    errors.CelEvalError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    ZeroDivisionError,
    OverflowError,
    AttributeError,
    RecursionError,
)
_COMPARISONS: Final = {
    "<": ("<", "_lt"),
    "<=": ("<=", "_le"),
    ">": (">", "_gt"),
    ">=": (">=", "_ge"),
}
_ARITHMETIC_NAMES: Final = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod"}
# Python allows 20 statically nested blocks and 100 indentation levels, and deep inline
# expressions strain its parser; past these limits a subexpression moves to its own function.
_MAX_BLOCKS: Final = 8
_MAX_INDENT: Final = 24
_MAX_NESTING: Final = 16


def _base_namespace() -> dict[str, object]:
    return {
        "__builtins__": {
            "type": type,
            "len": len,
            "bool": bool,
            "int": int,
            "str": str,
            "list": list,
            "dict": dict,
        },
        "_ERRORS": ERRORS,
        "_eq": runtime.equals,
        "_lt": runtime.less,
        "_le": runtime.less_equal,
        "_gt": runtime.greater,
        "_ge": runtime.greater_equal,
        "_neg": runtime.negate,
        "_not": runtime.logical_not,
        "_in": runtime.contains,
        "_index": runtime.index,
        "_has": runtime.has_field,
        "_size": runtime.size,
        "_iterate": runtime.iterate,
        "_throw": runtime.throw,
        "_logic_error": control.logic_error,
        "_opt_select": control.optional_select,
        "_opt_index": control.optional_index,
        "_opt_elems": control.optional_elements,
        "_make_map": control.map_literal,
        "_memo": runtime.memoized,
        "_search": functions.search,
        **{_ARITHMETIC_NAMES[op]: fn for op, fn in analysis.ARITHMETIC.items()},
    }


class Function:
    """The source lines of one generated Python function, with its nesting counters."""

    def __init__(self, name: str, params: list[str]) -> None:
        self.name = name
        self.params = params
        self.lines: list[str] = []
        self.indent = 1
        self.blocks = 0
        self.temps = itertools.count()

    def source(self) -> str:
        """The complete ``def`` statement."""
        return "\n".join([f"def {self.name}({', '.join(self.params)}):", *self.lines])


class Generator:
    """Turns a parsed expression into a Python function ``f(activation) -> value``."""

    def __init__(self, source: str, variables: frozenset[str]) -> None:
        self.source = source
        self.variables = variables
        self.namespace = _base_namespace()
        self.functions: list[Function] = []
        self.fn = Function("_cel_main", ["_act"])
        self.nesting = 0
        self.ids = itertools.count()

    # --- plumbing --------------------------------------------------------------------------

    def build(self, root: nodes.Expr) -> tuple[Callable[[object], object], str]:
        """Generate and compile the program; returns the function and its Python source."""
        result = self.expr(root, {})
        self.emit(f"return {result}")
        self.functions.append(self.fn)
        code = "\n\n".join(fn.source() for fn in self.functions)
        # Compiles only code generated above from the syntax tree (see module docstring).
        exec(compile(code, "<cel>", "exec"), self.namespace)  # noqa: S102
        main = self.namespace["_cel_main"]
        assert callable(main)
        return main, code

    def emit(self, line: str) -> None:
        """Append one statement at the current indentation."""
        self.fn.lines.append("    " * self.fn.indent + line)

    @contextmanager
    def block(self, header: str, *, counts: bool = False) -> Iterator[None]:
        """Emit ``header`` (``if ...:``, ``for ...:``) and indent what the body emits."""
        self.emit(header)
        self.fn.indent += 1
        self.fn.blocks += counts
        try:
            yield
        finally:
            self.fn.indent -= 1
            self.fn.blocks -= counts

    def temp(self) -> str:
        """A fresh local variable name."""
        return f"_t{next(self.fn.temps)}"

    def bind(self, text: str) -> tuple[str, str]:
        """(first use, later uses) of an expression used twice: a walrus unless it is a name."""
        if text.isidentifier():
            return text, text
        t = self.temp()
        return f"({t} := {text})", t

    def const(self, value: object) -> str:
        """An expression for a constant: a literal when that is exact, else a global."""
        kind = type(value)
        if kind is bool or value is None or kind is str or kind is bytes:
            return repr(value)
        if kind is int or (type(value) is float and math.isfinite(value)):
            text = repr(value)
            return f"({text})" if text.startswith("-") else text
        name = f"_k{next(self.ids)}"
        self.namespace[name] = value
        return name

    def error(self, node: nodes.Expr, message: str) -> errors.CelSyntaxError:
        """A syntax error pointing at ``node``."""
        return lexer.syntax_error(self.source, node.pos, message)

    def capture(self, node: nodes.Expr, scope: Scope) -> tuple[list[str], str]:
        """Generate ``node`` one level deeper, returning its statements instead of emitting."""
        saved = self.fn.lines
        self.fn.lines = []
        self.fn.indent += 1
        try:
            result = self.expr(node, scope)
            return self.fn.lines, result
        finally:
            self.fn.indent -= 1
            self.fn.lines = saved

    def hoist(self, node: nodes.Expr, scope: Scope) -> str:
        """Generate ``node`` as a separate function and return a call to it."""
        params = ["_act", *scope.values()]
        return f"{self.function_of(node, scope)}({', '.join(params)})"

    def function_of(self, node: nodes.Expr, scope: Scope) -> str:
        """Generate ``node`` as a separate function of ``_act`` and ``scope``; its name."""
        saved, saved_nesting = self.fn, self.nesting
        self.fn = Function(f"_cel_f{next(self.ids)}", ["_act", *scope.values()])
        self.nesting = 0
        try:
            self.emit(f"return {self.dispatch(node, scope)}")
            self.functions.append(self.fn)
            return self.fn.name
        finally:
            self.fn, self.nesting = saved, saved_nesting

    def memoized(self, node: nodes.Expr) -> str:
        """``node``'s value, computed once per activation that carries a ``MEMO`` dict.

        Checks of one object repeat some expressions, above all the list of every container
        (``containers + initContainers + ephemeralContainers``). The engine gives each
        object's activation a memo, so the first program that needs such a value computes it
        and the others reuse it. The key is the expression's canonical form (the syntax tree
        without source positions), so equal expressions in different programs share one
        entry; values are never mutated, and a failing computation stores nothing.
        """
        key = self.const(repr(_canonical(node)))
        return f"_memo(_act, {key}, {self.function_of(node, {})})"

    # --- expressions -----------------------------------------------------------------------

    def expr(self, node: nodes.Expr, scope: Scope) -> str:
        """Emit what ``node`` needs and return a Python expression for its value.

        The returned text is an atom (safe to subscript or pass as an argument) and must be
        evaluated exactly once, after the statements emitted so far.
        """
        deep = (
            self.fn.blocks >= _MAX_BLOCKS
            or self.fn.indent >= _MAX_INDENT
            or self.nesting >= _MAX_NESTING
        )
        if deep and not isinstance(node, (nodes.Literal, nodes.Ident)):
            return self.hoist(node, scope)
        if not scope and _shared(node):
            return self.memoized(node)
        self.nesting += 1
        try:
            return self.dispatch(node, scope)
        finally:
            self.nesting -= 1

    def dispatch(self, node: nodes.Expr, scope: Scope) -> str:
        """Generate ``node`` by its kind."""
        if isinstance(node, nodes.Literal):
            return self.const(node.value)
        if isinstance(node, nodes.Ident):
            return self.ident(node, scope)
        if isinstance(node, nodes.Select):
            operand = self.expr(node.operand, scope)
            if node.optional:
                return f"_opt_select({operand}, {node.field!r})"
            return f"{operand}[{node.field!r}]"
        if isinstance(node, nodes.Index):
            return self.index(node, scope)
        if isinstance(node, nodes.Has):
            first, t = self.bind(self.expr(node.operand, scope))
            field = repr(node.field)
            return f"(({field} in {t}) if type({first}) is dict else _has({t}, {field}))"
        if isinstance(node, nodes.Unary):
            operand = self.expr(node.operand, scope)
            if node.op == "-":
                return f"_neg({operand})"
            return f"(not {operand})" if analysis.is_bool(node.operand) else f"_not({operand})"
        if isinstance(node, nodes.Binary):
            return self.binary(node, scope)
        if isinstance(node, nodes.ListLit):
            return self.list_literal(node, scope)
        if isinstance(node, nodes.MapLit):
            return self.map_literal(node, scope)
        if isinstance(node, nodes.Call):
            return self.call(node, scope)
        return control.generate(self, node, scope)

    def ident(self, node: nodes.Ident, scope: Scope) -> str:
        """A variable reference, or a type name used as a value."""
        if node.name in scope:
            return scope[node.name]
        if node.name in self.variables:
            return f"_act[{node.name!r}]"
        if node.name in values.TYPE_NAMES:
            return self.const(values.TYPE_NAMES[node.name])
        raise self.error(node, f"undeclared reference to {node.name!r}")

    def index(self, node: nodes.Index, scope: Scope) -> str:
        """``a[i]``: a plain subscript for constant string keys, a checked helper otherwise."""
        operand = self.expr(node.operand, scope)
        key = node.index
        if node.optional:
            return f"_opt_index({operand}, {self.expr(key, scope)})"
        if isinstance(key, nodes.Literal) and type(key.value) is str:
            return f"{operand}[{key.value!r}]"
        return f"_index({operand}, {self.expr(key, scope)})"

    def binary(self, node: nodes.Binary, scope: Scope) -> str:
        """Operators, folded when both sides are constants and specialised on a constant side."""
        op = node.op
        if isinstance(node.left, nodes.Literal) and isinstance(node.right, nodes.Literal):
            folded = analysis.fold(op, node.left.value, node.right.value)
            if folded is not analysis.NOT_FOLDED:
                return self.const(folded)
        left = self.expr(node.left, scope)
        if op in ("==", "!="):
            equal = self.equality(node, left, scope)
            return equal if op == "==" else f"(not {equal})"
        if op == "in":
            return self.membership(node, left, scope)
        right = self.expr(node.right, scope)
        if op in _COMPARISONS:
            symbol, helper = _COMPARISONS[op]
            if isinstance(node.right, nodes.Literal) and type(node.right.value) is int:
                first, t = self.bind(left)
                return f"({t} {symbol} {right} if type({first}) is int else {helper}({t}, {right}))"
            return f"{helper}({left}, {right})"
        if op == "+":
            # Concatenating lists (``containers + initContainers``) is the common ``+`` in
            # baselines: do it inline. Both operands are evaluated once, left to right (``&``
            # does not short-circuit); anything but two lists goes to the checked helper.
            a, b = self.temp(), self.temp()
            return (
                f"({a} + {b} if (type({a} := {left}) is list) & (type({b} := {right}) is list)"
                f" else _add({a}, {b}))"
            )
        return f"{_ARITHMETIC_NAMES[op]}({left}, {right})"

    def equality(self, node: nodes.Binary, left: str, scope: Scope) -> str:
        """``==`` with exact Python shortcuts where the CEL meaning is the same."""
        right_node = node.right
        if isinstance(right_node, nodes.Literal):
            value = right_node.value
            kind = type(value)
            # CEL ``x == true`` holds only for the bool true; bools are singletons in Python.
            if kind is bool or value is None:
                return f"({left} is {value!r})"
            if kind is str:  # a str equals only a str, in Python as in CEL
                return f"({left} == {value!r})"
            if kind is int or kind is float:
                first, t = self.bind(left)  # numbers compare across int/double, never with bool
                return f"(type({first}) is not bool and {t} == {self.const(value)})"
        right = self.expr(right_node, scope)
        if analysis.is_bool(node.left) and analysis.is_bool(right_node):
            return f"({left} is {right})"
        return f"_eq({left}, {right})"

    def membership(self, node: nodes.Binary, left: str, scope: Scope) -> str:
        """``x in list``: a frozenset probe for constant lists of strings."""
        right_node = node.right
        if isinstance(right_node, nodes.ListLit) and not any(right_node.optional):
            items = [e.value for e in right_node.elements if isinstance(e, nodes.Literal)]
            if len(items) == len(right_node.elements):
                strings = self.const(frozenset(i for i in items if type(i) is str))
                full = self.const(items)
                first, t = self.bind(left)
                return f"({t} in {strings} if type({first}) is str else _in({t}, {full}))"
        return f"_in({left}, {self.expr(right_node, scope)})"

    def list_literal(self, node: nodes.ListLit, scope: Scope) -> str:
        """A list literal; all-constant lists are built once."""
        if not any(node.optional) and all(isinstance(e, nodes.Literal) for e in node.elements):
            return self.const([e.value for e in node.elements if isinstance(e, nodes.Literal)])
        parts = []
        for element, optional in zip(node.elements, node.optional, strict=True):
            text = self.expr(element, scope)
            parts.append(f"*_opt_elems({text})" if optional else text)
        return f"[{', '.join(parts)}]"

    def map_literal(self, node: nodes.MapLit, scope: Scope) -> str:
        """A map literal, checked for key types and duplicates when built."""
        if not node.entries:
            return "{}"  # nothing to check, and a fresh dict as ``make_map`` would build
        parts = []
        for key, value, optional in node.entries:
            parts.append(f"({self.expr(key, scope)}, {self.expr(value, scope)}, {optional})")
        return f"_make_map(({''.join(p + ', ' for p in parts)}))"

    def call(self, node: nodes.Call, scope: Scope) -> str:
        """A library function: checked against ``functions.OVERLOADS`` at compile time."""
        target = node.target
        name = node.function
        namespace = isinstance(target, nodes.Ident) and target.name == "optional"
        if namespace and "optional" not in scope and "optional" not in self.variables:
            name, target = f"optional.{name}", None  # optional.of(x) is a global function
        key = (name, target is not None, len(node.args))
        impl = functions.OVERLOADS.get(key)
        if impl is None:
            if any(k[0] == name for k in functions.OVERLOADS):
                raise self.error(node, f"wrong arguments to {name}() ({len(node.args)} given)")
            raise self.error(node, f"unsupported function {name}()")
        args = list(node.args) if target is None else [target, *node.args]
        if name == "matches" and isinstance(args[1], nodes.Literal):
            return self.constant_match(node, args[0], args[1].value, scope)
        texts = [self.expr(arg, scope) for arg in args]
        if name == "dyn":
            return texts[0]
        if name == "size":
            first, t = self.bind(texts[0])
            return f"(len({t}) if type({first}) is list else _size({t}))"
        helper = f"_f_{name.replace('.', '_')}_{int(target is not None)}{len(node.args)}"
        self.namespace[helper] = impl
        return f"{helper}({', '.join(texts)})"

    def constant_match(
        self, node: nodes.Call, text: nodes.Expr, pattern: object, scope: Scope
    ) -> str:
        """``matches`` with a literal pattern: compiled now, so a bad pattern fails early."""
        if type(pattern) is not str:
            raise self.error(node, "matches() needs a string pattern")
        try:
            compiled = self.const(regex.compile_re2(pattern))
        except regex.RegexError as exc:
            raise self.error(node, str(exc)) from None
        first, t = self.bind(self.expr(text, scope))
        return (
            f"({compiled}.search({t}) is not None if type({first}) is str"
            f" else _search({compiled}, {t}))"
        )


def _shared(node: nodes.Expr) -> bool:
    # Worth sharing between programs: a concatenation that reads the activation (see
    # ``Generator.memoized``); only outside comprehensions, where it reads nothing else.
    return isinstance(node, nodes.Binary) and node.op == "+" and _reads_fields(node)


def _reads_fields(node: object) -> bool:
    if isinstance(node, nodes.Select):
        return True
    if dataclasses.is_dataclass(node):
        return any(_reads_fields(getattr(node, f.name)) for f in dataclasses.fields(node))
    if isinstance(node, (list, tuple)):
        return any(_reads_fields(item) for item in node)
    return False


def _canonical(node: object) -> object:
    # The tree without positions: equal for equal expressions written anywhere.
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (
            type(node).__name__,
            *(
                _canonical(getattr(node, f.name))
                for f in dataclasses.fields(node)
                if f.name != "pos"
            ),
        )
    if isinstance(node, (list, tuple)):
        return tuple(_canonical(item) for item in node)
    return (type(node).__name__, node)
