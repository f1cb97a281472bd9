"""Static facts about expression nodes that let the code generator drop runtime checks.

Both answers are conservative: ``is_bool`` may say False for an expression that happens to
be a bool, and ``can_fail`` may say True for one that never fails; only the opposite
mistakes would change results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from kposture.evaluate.policy.cel import errors, functions, nodes, runtime, values

_BOOL_OPS: Final = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
#: The arithmetic operators and the runtime function for each.
ARITHMETIC: Final[dict[str, Callable[[object, object], object]]] = {
    "+": runtime.add,
    "-": runtime.subtract,
    "*": runtime.multiply,
    "/": runtime.divide,
    "%": runtime.modulo,
}


def is_bool(node: nodes.Expr) -> bool:
    """Whether ``node`` always yields a bool when it does not fail (lets codegen skip checks)."""
    if isinstance(node, nodes.Literal):
        return type(node.value) is bool
    if isinstance(node, (nodes.Has, nodes.Logical)):
        return True
    if isinstance(node, nodes.Unary):
        return node.op == "!"
    if isinstance(node, nodes.Binary):
        return node.op in _BOOL_OPS
    if isinstance(node, nodes.Comprehension):
        return node.kind in ("all", "exists", "exists_one")
    if isinstance(node, nodes.Call):
        return node.function in functions.BOOL_RESULTS
    if isinstance(node, nodes.Conditional):
        return is_bool(node.then) and is_bool(node.otherwise)
    return False


def can_fail(node: nodes.Expr, scope: Mapping[str, str]) -> bool:
    """Whether evaluating ``node`` might raise; False only for shapes known to be safe.

    A top-level variable can fail (it may be absent from the activation); an iteration
    variable, a literal, ``has()`` of a safe operand and equality of safe operands cannot.
    """
    if isinstance(node, nodes.Literal):
        return False
    if isinstance(node, nodes.Ident):
        return node.name not in scope and node.name not in values.TYPE_NAMES
    if isinstance(node, nodes.Has):
        return can_fail(node.operand, scope)
    if isinstance(node, nodes.Unary):
        return node.op != "!" or not is_bool(node.operand) or can_fail(node.operand, scope)
    if isinstance(node, nodes.Binary):
        return node.op not in ("==", "!=") or any(
            can_fail(side, scope) for side in (node.left, node.right)
        )
    if isinstance(node, nodes.Logical):
        return any(not is_bool(o) or can_fail(o, scope) for o in node.operands)
    return True


NOT_FOLDED: Final = object()  # fold()'s answer when evaluation must wait for runtime


def fold(op: str, left: object, right: object) -> object:
    """The value of ``left op right`` for constant operands, or ``NOT_FOLDED``."""
    # Folding only succeeds when evaluation would; an erroring constant stays a runtime error,
    # because in CEL ``true || 1/0`` is true, not a compile failure.
    try:
        if op in ARITHMETIC:
            return ARITHMETIC[op](left, right)
        if op == "==":
            return runtime.equals(left, right)
        if op == "!=":
            return not runtime.equals(left, right)
    except errors.CelEvalError:
        return NOT_FOLDED
    return NOT_FOLDED
