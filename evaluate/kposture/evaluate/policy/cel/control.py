"""Code generation for control flow (``&&``, ``||``, ``?:``, macros) and its runtime helpers.

These are the constructs whose CEL semantics are not plain function application: they
short-circuit, and ``&&``, ``||``, ``all`` and ``exists`` *absorb* errors. ``false && err``
and ``err && false`` are both false, so every operand is evaluated inside ``try`` and an
error is only raised once no operand decided the result. Python's zero-cost ``try`` makes
this free on the path where nothing fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from kposture.evaluate.policy.cel import analysis, errors, nodes, runtime, values

if TYPE_CHECKING:
    from kposture.evaluate.policy.cel.codegen import Generator, Scope


def generate(gen: Generator, node: nodes.Expr, scope: Scope) -> str:
    """Generate a ``Logical``, ``Conditional`` or ``Comprehension`` node."""
    if isinstance(node, nodes.Logical):
        return _logical(gen, node, scope)
    if isinstance(node, nodes.Conditional):
        return _conditional(gen, node, scope)
    if isinstance(node, nodes.Comprehension):
        return _comprehension(gen, node, scope)
    raise AssertionError(f"unexpected node {node!r}")  # the parser builds no other kinds


def _logical(gen: Generator, node: nodes.Logical, scope: Scope) -> str:
    if not analysis.can_fail(node, scope):
        # Only bools and no possible error: Python's own short-circuit is exactly CEL's.
        joiner = " or " if node.op == "||" else " and "
        return f"({joiner.join(gen.expr(o, scope) for o in node.operands)})"
    decisive = node.op == "||"  # the operand value that decides the result
    result, error = gen.temp(), gen.temp()
    gen.emit(f"{result} = {not decisive}")
    gen.emit(f"{error} = None")
    for position, operand in enumerate(node.operands):
        if position == 0:
            _logical_operand(gen, operand, scope, result=result, error=error, decisive=decisive)
            continue
        with gen.block(f"if {result} is {not decisive}:"):
            _logical_operand(gen, operand, scope, result=result, error=error, decisive=decisive)
    with gen.block(f"if {result} is {not decisive} and {error} is not None:"):
        gen.emit(f"raise {error}")
    return result


def _logical_operand(
    gen: Generator,
    operand: nodes.Expr,
    scope: Scope,
    *,
    result: str,
    error: str,
    decisive: bool,
) -> None:
    known_bool = analysis.is_bool(operand)
    if known_bool and not analysis.can_fail(operand, scope):
        text = gen.expr(operand, scope)
        with gen.block(f"if {text}:" if decisive else f"if not {text}:"):
            gen.emit(f"{result} = {decisive}")
        return
    value = gen.temp()
    with gen.block("try:", counts=True):
        gen.emit(f"{value} = {gen.expr(operand, scope)}")
    with gen.block("except _ERRORS as _exc:"):
        # Keep the first error: cel-go reports the left-most one when none is absorbed.
        gen.emit(f"{error} = {error} or _exc")
    with gen.block("else:"):
        with gen.block(f"if {value} is {decisive}:"):
            gen.emit(f"{result} = {decisive}")
        if not known_bool:
            with gen.block(f"elif {value} is not {not decisive} and {error} is None:"):
                gen.emit(f"{error} = _logic_error({'||' if decisive else '&&'!r}, {value})")


def _conditional(gen: Generator, node: nodes.Conditional, scope: Scope) -> str:
    cond = gen.expr(node.cond, scope)
    then_lines, then = gen.capture(node.then, scope)
    else_lines, otherwise = gen.capture(node.otherwise, scope)
    known_bool = analysis.is_bool(node.cond)
    if not then_lines and not else_lines:
        if known_bool:
            return f"({then} if {cond} else {otherwise})"
        t = gen.temp()
        return (
            f"({then} if ({t} := {cond}) is True else {otherwise} if {t} is False"
            f" else _throw(_logic_error('?:', {t})))"
        )
    result = gen.temp()
    if known_bool:
        test = cond
    else:
        test = gen.temp()
        gen.emit(f"{test} = {cond}")
        with gen.block(f"if {test} is not True and {test} is not False:"):
            gen.emit(f"raise _logic_error('?:', {test})")
    with gen.block(f"if {test}:"):
        gen.fn.lines.extend(then_lines)
        gen.emit(f"{result} = {then}")
    with gen.block("else:"):
        gen.fn.lines.extend(else_lines)
        gen.emit(f"{result} = {otherwise}")
    return result


def _comprehension(gen: Generator, node: nodes.Comprehension, scope: Scope) -> str:
    items = gen.temp()
    gen.emit(f"{items} = {gen.expr(node.range, scope)}")
    with gen.block(f"if type({items}) is not list:"):
        gen.emit(f"{items} = _iterate({items})")  # map keys, or a no-overload error
    var = f"_v{next(gen.ids)}_{node.var}"
    inner = {**scope, node.var: var}
    loop = f"for {var} in {items}:"
    if node.kind in ("all", "exists"):
        assert node.pred is not None
        return _quantifier(gen, node.pred, inner, loop=loop, kind=node.kind)
    if node.kind == "exists_one":
        assert node.pred is not None
        count = gen.temp()
        gen.emit(f"{count} = 0")
        with gen.block(loop, counts=True):
            _count_if(gen, node.pred, inner, count, known_bool=analysis.is_bool(node.pred))
        return f"({count} == 1)"
    out = gen.temp()
    gen.emit(f"{out} = []")
    with gen.block(loop, counts=True):
        if node.pred is None:
            assert node.transform is not None
            gen.emit(f"{out}.append({gen.expr(node.transform, inner)})")
        else:
            known_bool = analysis.is_bool(node.pred)
            test = _bool_test(gen, node.pred, inner, node.kind, known_bool=known_bool)
            with gen.block(f"if {test}:"):
                element = var if node.transform is None else gen.expr(node.transform, inner)
                gen.emit(f"{out}.append({element})")
    return out


def _quantifier(gen: Generator, pred: nodes.Expr, scope: Scope, *, loop: str, kind: str) -> str:
    """``all`` / ``exists``: stop at the first deciding element; otherwise raise an error seen."""
    decisive = kind == "exists"
    result, error, value = gen.temp(), gen.temp(), gen.temp()
    gen.emit(f"{result} = {not decisive}")
    if analysis.is_bool(pred) and not analysis.can_fail(pred, scope):
        with gen.block(loop, counts=True):
            text = gen.expr(pred, scope)
            with gen.block(f"if {text}:" if decisive else f"if not {text}:"):
                gen.emit(f"{result} = {decisive}")
                gen.emit("break")
        return result
    gen.emit(f"{error} = None")
    with gen.block(loop, counts=True):
        with gen.block("try:", counts=True):
            gen.emit(f"{value} = {gen.expr(pred, scope)}")
        with gen.block("except _ERRORS as _exc:"):
            gen.emit(f"{error} = {error} or _exc")
        with gen.block("else:"):
            with gen.block(f"if {value} is {decisive}:"):
                gen.emit(f"{result} = {decisive}")
                gen.emit("break")
            if not analysis.is_bool(pred):
                with gen.block(f"if {value} is not {not decisive} and {error} is None:"):
                    gen.emit(f"{error} = _logic_error({kind!r}, {value})")
    with gen.block(f"if {result} is {not decisive} and {error} is not None:"):
        gen.emit(f"raise {error}")
    return result


def _count_if(
    gen: Generator, pred: nodes.Expr, scope: Scope, count: str, *, known_bool: bool
) -> None:
    test = _bool_test(gen, pred, scope, "exists_one", known_bool=known_bool)
    with gen.block(f"if {test}:"):
        gen.emit(f"{count} += 1")


def _bool_test(
    gen: Generator, pred: nodes.Expr, scope: Scope, kind: str, *, known_bool: bool
) -> str:
    """A Python condition for ``pred``; a non-bool value raises (no error absorption here)."""
    text = gen.expr(pred, scope)
    if known_bool:
        return text
    value = gen.temp()
    gen.emit(f"{value} = {text}")
    with gen.block(f"if {value} is not True and {value} is not False:"):
        gen.emit(f"raise _logic_error({kind!r}, {value})")
    return value


# --- runtime helpers used by the generated code ----------------------------------------------


def logic_error(op: str, value: object) -> errors.CelEvalError:
    """The error for a non-bool operand of a logical operator, ``?:`` or a macro predicate."""
    if isinstance(value, BaseException):
        return errors.CelEvalError(str(value))
    return runtime.no_overload(op, value)


def optional_select(container: object, field: str) -> values.Optional:
    """``x.?f``: the field as an optional; none when absent."""
    if type(container) is values.Optional:
        return container[field]
    if isinstance(container, Mapping):
        return values.Optional(True, container[field]) if field in container else values.NONE
    raise runtime.no_overload(".?", container)


def optional_index(container: object, key: object) -> values.Optional:
    """``x[?k]``: the element as an optional; none when the key or index is absent."""
    if type(container) is values.Optional:
        if not container.present:
            return container
        container = container.value
    if isinstance(container, Sequence) and runtime.is_list(container):
        position = runtime.list_position(key)
        if 0 <= position < len(container):
            return values.Optional(True, container[position])
        return values.NONE
    if isinstance(container, Mapping):
        found = runtime.find_key(container, key)
        return values.NONE if found is runtime.MISSING else values.Optional(True, container[found])
    raise runtime.no_overload("[?]", container, key)


def optional_elements(value: object) -> tuple[object, ...]:
    """The elements a ``[?x]`` list entry contributes: the value if present, else nothing."""
    if type(value) is not values.Optional:
        raise runtime.no_overload("[?]", value)
    return (value.value,) if value.present else ()


def map_literal(entries: Iterable[tuple[object, object, bool]]) -> dict[object, object]:
    """Build a map literal; ``{?k: v}`` entries are kept only when ``v`` has a value."""
    pairs: list[tuple[object, object]] = []
    for key, value, optional in entries:
        if not optional:
            pairs.append((key, value))
        elif type(value) is not values.Optional:
            raise runtime.no_overload("{?}", value)
        elif value.present:
            pairs.append((key, value.value))
    return runtime.make_map(pairs)
