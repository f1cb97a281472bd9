"""Differential property tests: the compiler must agree with celpy on random typed programs.

Expressions come from a small typed grammar over a Pod-like activation whose optional fields
may be absent, so errors (missing keys, overflow, division by zero) and their absorption by
``&&``, ``||``, ``all`` and ``exists`` are exercised as much as values are.

The grammar stays inside what celpy implements as the CEL specification says. Shapes where
celpy deviates (see the ``kposture.evaluate.policy.cel.reference`` docstring) are never generated:
operands of ``==``, ordering and arithmetic always have the same type, ``has()`` is only
applied to fields of values that exist, logical operators and macro predicates always get
bools, indexes are non-negative literals, strings are never indexed, ``null`` and uints do
not appear, ``string()`` is never applied to a double, doubles are only divided by non-zero
constants, and the three-argument ``map`` and the Kubernetes libraries are left to the unit
tests. Each exclusion is also commented where the grammar makes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kposture.evaluate.policy import cel

# --- activations -----------------------------------------------------------------------------

_names = st.sampled_from(["app", "web", "sidecar", "", "ünï", "a-b"])
_caps = st.lists(st.sampled_from(["NET_ADMIN", "CHOWN", "ALL", "SYS_TIME"]), max_size=3)
_small_ints = st.one_of(st.integers(-3, 3), st.sampled_from([0, 1000, 65535, 9223372036854775807]))


def _optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts in which every field may be absent."""
    return st.fixed_dictionaries({}, optional=fields)


_container = st.fixed_dictionaries(
    {"name": _names},
    optional={
        "image": st.sampled_from(["nginx:1.25", "ghcr.io/x/y:latest", "busybox"]),
        "privileged": st.booleans(),
        "port": _small_ints,
        "caps": _caps,
    },
)
_spec = _optional(
    {
        "hostNetwork": st.booleans(),
        "replicas": _small_ints,
        "ratio": st.sampled_from([0.0, -0.5, 1.5, 1e300]),
        "name": _names,
        "tags": st.lists(_names, max_size=3),
        "ports": st.lists(_small_ints, max_size=3),
        "containers": st.lists(_container, max_size=3),
    }
)
_metadata = st.fixed_dictionaries(
    {"name": _names},
    optional={"labels": st.dictionaries(_names, _names, max_size=3)},
)
activations = st.builds(
    lambda metadata, spec: {"object": {"metadata": metadata, "spec": spec}},
    _metadata,
    _spec,
)

# --- expressions -----------------------------------------------------------------------------

# Typed fields of the activation: CEL path -> type (containers are reached via macros).
_FIELDS = {
    "bool": ["object.spec.hostNetwork"],
    "int": ["object.spec.replicas"],
    "double": ["object.spec.ratio"],
    "string": [
        "object.spec.name",
        "object.metadata.name",
        "object.metadata.labels.app",
        "object.spec.containers[0].name",
    ],
    "list_string": ["object.spec.tags"],
    "list_int": ["object.spec.ports"],
    "map_string": ["object.metadata.labels"],
    "list_container": ["object.spec.containers"],
}
_CONTAINER_FIELDS = {
    "bool": ["privileged"],
    "int": ["port"],
    "string": ["name", "image"],
    "list_string": ["caps"],
}
_OPTIONAL_PATHS = [
    "object.spec.hostNetwork",
    "object.spec.replicas",
    "object.spec.containers",
    "object.metadata.labels",
    "object.spec.tags",
    # Not has(object.metadata.labels.app): when labels is absent, the operand of has() is an
    # error in CEL, but celpy answers false.
]
_LITERALS = {
    "bool": ["true", "false"],
    "int": ["0", "1", "2", "-1", "7", "9223372036854775807", "0x10"],
    "double": ["0.0", "1.5", "-2.25", ".5", "1e3"],
    "string": ['""', '"app"', "'web'", '"ünï"', 'r"a\\d"', '"""x"""', '"\\x41\\u00e9"'],
    "list_string": ["[]", '["app", "web"]', '["ALL"]'],
    "list_int": ["[]", "[1, 2, 3]", "[0]"],
    "map_string": ['{"app": "web"}', "{}"],
    "list_container": ['[{"name": "app"}]'],
}
_REGEXES = ['"^a"', '"p$"', '"^[a-z]+$"', '"b.*"', '"^$"', '"(app|web)"', '"\\\\d"']
_ELEMENT = {"list_string": "string", "list_int": "int", "map_string": "string"}

Scope = dict[str, str]  # iteration variable -> type


@st.composite
def expressions(
    draw: st.DrawFn, kind: str, depth: int, scope: Scope, absorbing: bool = False
) -> str:
    """A CEL expression of CEL type ``kind`` (one of the grammar's types).

    ``absorbing`` is set below ``&&``, ``||``, ``all`` and ``exists``, whose error absorption
    celpy skips for errors raised inside ``exists_one``, ``map`` and ``filter``
    (``true || [1].exists_one(x, 1/0 == 1)`` is an error there): those macros are not
    generated in such places.
    """
    leaves = [_leaf(draw, kind, scope)]
    if depth <= 0:
        return leaves[0]
    choice = draw(st.integers(0, 9))
    if choice < 3:
        return leaves[0]
    sub = depth - 1
    if choice == 3:
        cond = draw(expressions("bool", sub, scope, absorbing))
        then = draw(expressions(kind, sub, scope, absorbing))
        otherwise = draw(expressions(kind, sub, scope, absorbing))
        return f"({cond} ? {then} : {otherwise})"
    builder = _BUILDERS.get(kind)
    if builder is None:
        return leaves[0]
    return builder(draw, sub, scope, absorbing)


def _sub(draw: st.DrawFn, depth: int, scope: Scope, *, absorbing: bool) -> Callable[[str], str]:
    """A drawer of subexpressions of a given kind, in the caller's context."""

    def sub(kind: str) -> str:
        return draw(expressions(kind, depth, scope, absorbing))

    return sub


def _leaf(draw: st.DrawFn, kind: str, scope: Scope) -> str:
    options = list(_LITERALS.get(kind, [])) + list(_FIELDS.get(kind, []))
    options += [name for name, var_kind in scope.items() if var_kind == kind]
    for name, var_kind in scope.items():
        if var_kind == "container":
            options += [f"{name}.{field}" for field in _CONTAINER_FIELDS.get(kind, [])]
    return draw(st.sampled_from(options))


def _bool(draw: st.DrawFn, depth: int, scope: Scope, absorbing: bool) -> str:
    e = _sub(draw, depth, scope, absorbing=absorbing)
    form = draw(st.integers(0, 13))
    if form == 0:
        return f"!{e('bool')}"
    if form == 1:
        left = draw(expressions("bool", depth, scope, True))
        right = draw(expressions("bool", depth, scope, True))
        return f"({left} {draw(st.sampled_from(['&&', '||']))} {right})"
    if form == 2:
        kind = draw(st.sampled_from(["int", "string", "double", "bool"]))
        ops = ["==", "!="] if kind == "bool" else ["==", "!=", "<", "<=", ">", ">="]
        return f"({e(kind)} {draw(st.sampled_from(ops))} {e(kind)})"
    if form == 3:
        path = draw(st.sampled_from(_OPTIONAL_PATHS))
        containers = [n for n, k in scope.items() if k == "container"]
        use_container = draw(st.booleans())
        if containers and use_container:
            field = draw(st.sampled_from(["privileged", "caps", "image"]))
            path = f"{draw(st.sampled_from(containers))}.{field}"
        return f"has({path})"
    if form == 4:
        container = draw(st.sampled_from(["list_string", "map_string", "list_int"]))
        return f"({e(_ELEMENT[container])} in {e(container)})"
    if form in (5, 6):
        macros = ["all", "exists"] if absorbing else ["all", "exists", "exists_one"]
        return _macro(
            draw, depth, scope, draw(st.sampled_from(macros)), result="bool", absorbing=absorbing
        )
    if form == 7:
        method = draw(st.sampled_from(["startsWith", "endsWith", "contains"]))
        # celpy's string concatenation returns a str without contains(): keep receivers simple.
        receiver = _leaf(draw, "string", scope) if method == "contains" else e("string")
        return f"{receiver}.{method}({e('string')})"
    if form == 8:
        return f"{e('string')}.matches({draw(st.sampled_from(_REGEXES))})"
    if form == 9:
        kind = draw(st.sampled_from(["list_string", "list_int", "map_string"]))
        return f"({e(kind)} == {e(kind)})"
    if form == 10:
        return f"(size({e('list_string')}) {draw(st.sampled_from(['==', '<', '>=']))} {e('int')})"
    if form == 11:
        return f"matches({e('string')}, {draw(st.sampled_from(_REGEXES))})"
    return e("bool")


def _int(draw: st.DrawFn, depth: int, scope: Scope, absorbing: bool) -> str:
    e = _sub(draw, depth, scope, absorbing=absorbing)
    form = draw(st.integers(0, 6))
    if form <= 1:
        return f"({e('int')} {draw(st.sampled_from(['+', '-', '*', '/', '%']))} {e('int')})"
    if form == 2:
        return f"-{e('int')}"
    if form == 3:
        what = draw(st.sampled_from(["list_string", "list_int", "map_string", "string"]))
        return draw(st.sampled_from([f"size({e(what)})", f"{e(what)}.size()"]))
    if form == 4:
        return f"{e('list_int')}[{draw(st.integers(0, 3))}]"
    if form == 5:
        return f"int({e('double')})"
    return e("int")


def _string(draw: st.DrawFn, depth: int, scope: Scope, absorbing: bool) -> str:
    e = _sub(draw, depth, scope, absorbing=absorbing)
    form = draw(st.integers(0, 4))
    if form == 0:
        return f"({e('string')} + {e('string')})"
    if form == 1:
        return f"{e('list_string')}[{draw(st.integers(0, 2))}]"
    if form == 2:
        key = draw(st.sampled_from(['"app"', '"web"', '""']))
        return f"{e('map_string')}[{key}]"
    if form == 3:
        return f"string({e('int')})"
    return e("string")


def _double(draw: st.DrawFn, depth: int, scope: Scope, absorbing: bool) -> str:
    e = _sub(draw, depth, scope, absorbing=absorbing)
    form = draw(st.integers(0, 3))
    if form == 0:
        return f"({e('double')} {draw(st.sampled_from(['+', '-', '*']))} {e('double')})"
    if form == 1:
        return f"double({e('int')})"
    if form == 2:
        # celpy makes 0.0 / 0.0 infinite (IEEE 754 and cel-go: NaN), so divide by non-zero.
        return f"({e('double')} / {draw(st.sampled_from(['1.5', '-2.25', '.5', '1e3']))})"
    return f"-{e('double')}"


Builder = Callable[[st.DrawFn, int, Scope, bool], str]


def _list(kind: str) -> Builder:
    def build(draw: st.DrawFn, depth: int, scope: Scope, absorbing: bool) -> str:
        e = _sub(draw, depth, scope, absorbing=absorbing)
        form = draw(st.integers(0, 3))
        if form == 0:
            return f"({e(kind)} + {e(kind)})"
        if form == 1 and not absorbing:
            return _macro(draw, depth, scope, "filter", result=kind, absorbing=absorbing)
        if form == 2 and not absorbing:
            return _macro(draw, depth, scope, "map", result=kind, absorbing=absorbing)
        return f"[{e(_ELEMENT[kind])}, {e(_ELEMENT[kind])}]"

    return build


def _macro(
    draw: st.DrawFn, depth: int, scope: Scope, macro: str, *, result: str, absorbing: bool
) -> str:
    var = draw(st.sampled_from(["x", "y", "c"]))  # reuse names to exercise shadowing
    if macro == "map":
        source = draw(st.sampled_from(["list_string", "list_int", "list_container"]))
        element = "container" if source == "list_container" else _ELEMENT[source]
        body = draw(expressions(_ELEMENT[result], depth, {**scope, var: element}, absorbing))
    elif macro == "filter":
        source, element = result, _ELEMENT[result]
        body = draw(expressions("bool", depth, {**scope, var: element}, absorbing))
    else:
        source = draw(st.sampled_from(["list_string", "list_int", "map_string", "list_container"]))
        element = "container" if source == "list_container" else _ELEMENT[source]
        inner = absorbing or macro in ("all", "exists")
        body = draw(expressions("bool", depth, {**scope, var: element}, inner))
    return f"{draw(expressions(source, depth, scope, absorbing))}.{macro}({var}, {body})"


_BUILDERS: dict[str, Builder] = {
    "bool": _bool,
    "int": _int,
    "string": _string,
    "double": _double,
    "list_string": _list("list_string"),
    "list_int": _list("list_int"),
}

# --- the properties --------------------------------------------------------------------------


def _same(a: object, b: object) -> bool:
    """Equal values of equal types (Python's == says True == 1 and nan != nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _outcome(evaluate: Any, *args: object) -> tuple[str, object]:
    try:
        return "value", evaluate(*args)
    except cel.CelEvalError:
        return "error", None


def _check(source: str, activation: dict[str, object]) -> None:
    ours = _outcome(cel.compile(source).evaluate, activation)
    reference = _outcome(cel.evaluate_reference, source, activation)
    detail = f"{source}\nours={ours}\ncelpy={reference}\nactivation={activation}"
    assert ours[0] == reference[0], detail
    assert _same(ours[1], reference[1]), detail


_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(source=expressions("bool", 3, {}), activation=activations)
def test_bool_expressions_agree_with_celpy(source: str, activation: dict[str, object]) -> None:
    """Random boolean checks give the same value or error as celpy."""
    _check(source, activation)


@_SETTINGS
@given(
    source=st.sampled_from(["int", "string", "double", "list_string", "list_int"]).flatmap(
        lambda kind: expressions(kind, 3, {})
    ),
    activation=activations,
)
def test_value_expressions_agree_with_celpy(source: str, activation: dict[str, object]) -> None:
    """Random int, string, double and list expressions give the same result as celpy."""
    _check(source, activation)


@pytest.mark.parametrize(
    "source",
    [
        "object.spec.containers.all(c, !has(c.privileged) || c.privileged == false)",
        'object.spec.containers.exists(c, has(c.caps) && "ALL" in c.caps)',
        "object.spec.tags.exists_one(t, t.startsWith('a'))",
        "object.spec.replicas > 1 || object.spec.hostNetwork",
        "object.spec.hostNetwork && object.spec.replicas / 0 == 1",
    ],
)
@settings(max_examples=40, deadline=None)
@given(activation=activations)
def test_policy_shapes_agree_with_celpy(source: str, activation: dict[str, object]) -> None:
    """Hand-written policy shapes agree with celpy on random Pods."""
    _check(source, activation)
