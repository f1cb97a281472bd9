"""The Program object: field paths, results as plain values, robustness, the reference."""

from __future__ import annotations

import math

import pytest

from kposture.evaluate.policy import cel

OBJ = "object"
SPEC = (OBJ, "spec")
CONTAINERS = (OBJ, "spec", "containers")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true", set()),
        ("object", {(OBJ,)}),
        ("object.spec.hostNetwork == false", {(*SPEC, "hostNetwork")}),
        ("!has(object.spec.hostNetwork) || object.spec.hostNetwork", {(*SPEC, "hostNetwork")}),
        (
            "object.spec.containers.all(c, c.securityContext.privileged == false)",
            {(*CONTAINERS, "*", "securityContext", "privileged")},
        ),
        (
            "object.spec.containers.all(c, has(c.securityContext) && c.image != '')",
            {(*CONTAINERS, "*", "securityContext"), (*CONTAINERS, "*", "image")},
        ),
        (
            "object.spec.containers.all(c, c.ports.all(p, p.hostPort == 0))",
            {(*CONTAINERS, "*", "ports", "*", "hostPort")},
        ),
        ("object.spec.containers.all(c, true)", {CONTAINERS}),
        ("size(object.spec.containers) > 1", {CONTAINERS}),
        ("object.spec.containers[0].name", {(*CONTAINERS, "*", "name")}),
        ("object.metadata.labels['app'] == 'x'", {(OBJ, "metadata", "labels", "app")}),
        ("object.metadata.labels[object.spec.key]", {(OBJ, "metadata", "labels"), (*SPEC, "key")}),
        ("'app' in object.metadata.labels", {(OBJ, "metadata", "labels")}),
        ("object.metadata.labels.exists(k, k == 'a')", {(OBJ, "metadata", "labels", "*")}),
        (
            "(object.spec.containers + object.spec.initContainers).all(c, c.image != '')",
            {(*CONTAINERS, "*", "image"), (*SPEC, "initContainers", "*", "image")},
        ),
        (
            # has() needs the key kept, and a path cannot say "only the key", so the whole
            # subtree is reported: coarser, never wrong.
            "(has(object.spec.initContainers) ? object.spec.initContainers : [])"
            ".all(c, c.image != '')",
            {(*SPEC, "initContainers")},
        ),
        (
            "(has(object.spec.x) ? object.spec.initContainers : []).all(c, c.image != '')",
            {(*SPEC, "x"), (*SPEC, "initContainers", "*", "image")},
        ),
        (
            "object.spec.containers.filter(c, c.name == 'a').all(c, c.image != '')",
            {(*CONTAINERS, "*", "name"), (*CONTAINERS, "*", "image")},
        ),
        (
            "object.spec.containers.map(c, c.securityContext).all(s, s.privileged)",
            {(*CONTAINERS, "*", "securityContext")},
        ),
        ("object.?spec.?hostPID.orValue(false)", {(*SPEC, "hostPID")}),
        ("oldObject.spec != object.spec", {("oldObject", "spec"), SPEC}),
        ("[1].all(object, object > 0)", set()),
        ("object.spec.x + object.spec", {SPEC}),
    ],
)
def test_field_paths_cover_every_read(source: str, expected: set[tuple[str, ...]]) -> None:
    """field_paths lists the minimal variable-rooted subtrees the expression can read."""
    assert cel.compile(source).field_paths == frozenset(expected)


def test_field_paths_are_a_sufficient_projection() -> None:
    """Evaluating on an object pruned to field_paths gives the same result as on the whole."""
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "env": [{"name": "A"}]},
                {"name": "b", "image": "", "securityContext": {"privileged": True}},
            ],
            "volumes": [{"name": "v"}],
        },
        "metadata": {"labels": {"app": "web"}},
    }
    source = (
        "object.spec.containers.all(c, c.image != '' || has(c.securityContext))"
        " && object.metadata.labels['app'] == 'web'"
    )
    program = cel.compile(source)
    pruned = {
        "spec": {
            "containers": [
                {"image": "x"},
                {"image": "", "securityContext": {"privileged": True}},
            ]
        },
        "metadata": {"labels": {"app": "web"}},
    }
    assert program.field_paths == {
        (*CONTAINERS, "*", "image"),
        (*CONTAINERS, "*", "securityContext"),
        (OBJ, "metadata", "labels", "app"),
    }
    assert program.evaluate({"object": pruned}) == program.evaluate({"object": pod}) is True


def test_results_are_fresh_plain_python_values() -> None:
    """Results are plain lists, dicts and ints (uint too), never internal objects."""
    program = cel.compile("[1u, {'a': [2u]}, optional.of(3), [1, 2]]")
    first = program.evaluate({})
    assert isinstance(first, list)
    assert first == [1, {"a": [2]}, 3, [1, 2]]
    assert type(first[0]) is int
    first[3].append(99)
    assert program.evaluate({}) == [1, {"a": [2]}, 3, [1, 2]]


def test_type_values_are_returned_as_cel_types() -> None:
    """A type value has no plain Python spelling, so it is a comparable CelType."""
    assert cel.compile("type(1)").evaluate({}) == cel.CelType("int")
    assert repr(cel.CelType("int")) == "CelType('int')"


def test_program_keeps_its_source_and_generated_code() -> None:
    """A Program exposes its CEL source; its Python source is there for debugging."""
    program = cel.compile("object.a == 1")
    assert program.source == "object.a == 1"
    assert "def _cel_main(_act):" in program.python_source
    assert repr(program) == "Program('object.a == 1')"


def test_activation_values_may_be_any_mapping_or_sequence() -> None:
    """Mappings other than dict and tuples work, through the slower generic paths."""
    from types import MappingProxyType

    obj = MappingProxyType({"spec": MappingProxyType({"items": (1, 2), "flag": True})})
    program = cel.compile(
        "has(object.spec.flag) && object.spec.items.all(i, i > 0) && size(object.spec.items) == 2"
        " && 1 in object.spec.items && object.spec.items[1] == 2 && object.spec == object.spec"
    )
    assert program.evaluate({"object": obj}) is True


@pytest.mark.parametrize(
    "source",
    [
        "object['a\"]; import os; x = [\"'] == 1",
        "object.__class__",
        "object.__dict__ == {}",
        "object['__builtins__']",
    ],
)
def test_hostile_field_names_are_only_ever_data(source: str) -> None:
    """Quotes and dunder names in the source cannot reach Python code, only dict lookups."""
    with pytest.raises(cel.CelEvalError, match="no such key"):
        cel.compile(source).evaluate({"object": {}})


def test_deeply_nested_expressions_compile_and_evaluate() -> None:
    """Nesting beyond Python's block and indentation limits is split into helper functions."""
    nested = "true"
    for depth in range(20):
        nested = f"[{depth}].all(x{depth}, object.a == {depth} || {nested})"
    assert cel.compile(nested).evaluate({"object": {"a": 0}}) is True
    chain = " || ".join(f"object.a == {i}" for i in range(200))
    assert cel.compile(chain).evaluate({"object": {"a": 199}}) is True
    ternary = "0"
    for depth in range(20):
        ternary = f"(object.a == {depth} ? {depth} : {ternary})"
    assert cel.compile(ternary).evaluate({"object": {"a": 7}}) == 7
    arithmetic = "object.a" + " + (object.a" * 40 + ")" * 40
    assert cel.compile(arithmetic).evaluate({"object": {"a": 1}}) == 41


def test_evaluation_errors_are_cel_errors_with_messages() -> None:
    """Python-level failures inside generated code surface as CelEvalError with a message."""
    with pytest.raises(cel.CelEvalError) as caught:
        cel.compile("object.spec.x").evaluate({"object": {"spec": {}}})
    assert caught.value.message == "no such key: 'x'"
    assert isinstance(caught.value, cel.CelError)
    assert not caught.value.retriable


def test_reference_evaluates_with_celpy_and_the_same_conventions() -> None:
    """evaluate_reference returns plain values and raises the same error types."""
    activation = {"object": {"spec": {"replicas": 2, "names": ["a"], "m": {"k": 1.5}}}}
    source = "[object.spec.replicas * 2, object.spec.names, object.spec.m, b'x', 1u, null]"
    expected = [4, ["a"], {"k": 1.5}, b"x", 1, None]
    assert cel.evaluate_reference(source, activation) == expected
    assert cel.compile(source).evaluate(activation) == expected
    assert cel.evaluate_reference("type(1) == int", {}) is True
    assert cel.evaluate_reference("type('a')", {}) == cel.CelType("string")
    assert math.isinf(cel.evaluate_reference("1.0 / 0.0", {}))  # type: ignore[arg-type]
    with pytest.raises(cel.CelEvalError):
        cel.evaluate_reference("object.spec.missing", activation)
    with pytest.raises(cel.CelEvalError):
        cel.evaluate_reference("1 / 0", {})
    with pytest.raises(cel.CelSyntaxError):
        cel.evaluate_reference("1 +", {})


def test_reference_leaves_the_recursion_limit_alone() -> None:
    """celpy raises the interpreter's recursion limit on import; the wrapper restores it."""
    import sys

    before = sys.getrecursionlimit()
    cel.evaluate_reference("1 + 1", {})
    assert sys.getrecursionlimit() == before
