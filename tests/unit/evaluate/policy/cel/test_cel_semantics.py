"""Evaluation semantics of the operators and macros, including CEL's error rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kposture.evaluate.policy import cel

POD: dict[str, Any] = {
    "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
    "spec": {
        "hostNetwork": False,
        "replicas": 3,
        "ratio": 0.5,
        "containers": [
            {"name": "app", "securityContext": {"privileged": False, "runAsUser": 1000}},
            {"name": "sidecar", "ports": [{"hostPort": 0}, {"hostPort": 8080}]},
        ],
    },
}


def run(source: str, obj: object = None) -> object:
    """Evaluate ``source`` with ``object`` bound to ``obj`` (the sample Pod by default)."""
    return cel.compile(source).evaluate({"object": POD if obj is None else obj})


def fails(source: str, obj: object = None) -> str:
    """The message of the CelEvalError that evaluating ``source`` raises."""
    with pytest.raises(cel.CelEvalError) as caught:
        run(source, obj)
    return caught.value.message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("object.metadata.name", "web"),
        ("object.metadata.labels.app", "web"),
        ('object.metadata.labels["tier"]', "front"),
        ("object.spec.containers[1].ports[1].hostPort", 8080),
        ("object.spec.containers[1u].name", "sidecar"),
        ("object.spec.containers[1.0].name", "sidecar"),
        ("has(object.spec.hostNetwork)", True),
        ("has(object.spec.hostPID)", False),
        ("has(object.metadata.labels.app)", True),
        ("has(object.spec.containers[1].securityContext)", False),
        ("has(object.spec.replicas.x)", False),
        ('"app" in object.metadata.labels', True),
        ('"db" in object.metadata.labels', False),
        ("'app' in ['app', 'web']", True),
        ("3 in [1.0, 3.0]", True),
        ("3u in [3]", True),
        ("true in [1]", False),
        ("1 in [true]", False),
        ("[1, 2] in [[1, 2]]", True),
    ],
)
def test_selection_presence_and_membership(source: str, expected: object) -> None:
    """Field selection, indexing, has() and in behave as in Kubernetes CEL."""
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("object.spec.hostPID", "no such key: 'hostPID'"),
        ("object.spec.replicas.x", "no such overload"),
        ("object.metadata.labels.db", "no such key"),
        ("object.spec.containers[2]", "index out of range"),
        ("object.spec.containers[-1]", "index out of range"),
        ("object.spec.containers[0.5]", "list index of type double"),
        ("object.spec.containers['x']", "no such overload"),
        ('"abc"[0]', "no such overload"),
        ("has(object.spec.nothing.x)", "no such key"),
        ("1 in 'abc'", "no such overload"),
        ("size(1)", "no such overload: size(int)"),
    ],
)
def test_missing_fields_and_bad_indexes_are_errors(source: str, fragment: str) -> None:
    """Selecting a missing key or indexing out of range is a CEL error, not None."""
    assert fragment in fails(source)


def test_missing_variable_is_an_error_only_when_read() -> None:
    """An absent activation variable errs where it is read, and can be absorbed."""
    program = cel.compile("true || params.x")
    assert program.evaluate({}) is True
    with pytest.raises(cel.CelEvalError, match="params"):
        cel.compile("params.x").evaluate({})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true || object.spec.missing", True),
        ("object.spec.missing || true", True),
        ("false && object.spec.missing", False),
        ("object.spec.missing && false", False),
        ("object.spec.missing == 1 || object.spec.replicas == 3", True),
        ("1 || true", True),
        ("true || 1", True),
        ("false && 'a'", False),
        ("'a' && false", False),
        ("!has(object.spec.x) || object.spec.x", True),
        ("[0, 1].all(x, 1 / x > 5)", False),
        ("[1, 0].all(x, 1 / x > 5)", False),
        ("[0, 1].exists(x, 1 / x == 1)", True),
        ("[1, 0].exists(x, 1 / x == 1)", True),
        ("[1, 'a'].exists(x, x == 'a')", True),
        ("[1, 'a'].all(x, x == 1)", False),
    ],
)
def test_logical_operators_and_quantifiers_absorb_errors_in_either_order(
    source: str, expected: bool
) -> None:
    """A deciding operand wins over an error on either side (CEL's commutative && and ||)."""
    assert run(source) is expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("false || object.spec.missing", "no such key"),
        ("object.spec.missing || false", "no such key"),
        ("true && object.spec.missing", "no such key"),
        ("false || 1", "no such overload: ||(int)"),
        ("true && 'a'", "no such overload: &&(string)"),
        ("!1", "no such overload: !(int)"),
        ("1 ? 2 : 3", "no such overload: ?:(int)"),
        ("[0, 1].all(x, 1 / x > 0)", "division by zero"),
        ("[0, 1].exists(x, 1 / x < 0)", "division by zero"),
        ("[1].all(x, x)", "no such overload: all(int)"),
        ("[1].exists(x, 'a')", "no such overload: exists(string)"),
        ("[1, 0].exists_one(x, 1 / x == 1)", "division by zero"),
        ("[1].filter(x, x)", "no such overload: filter(int)"),
        ("[1].map(x, x, x)", "no such overload: map(int)"),
        ("1.all(x, true)", "no such overload: comprehension range(int)"),
        ("'ab'.exists(x, true)", "comprehension range(string)"),
    ],
)
def test_errors_surface_when_nothing_absorbs_them(source: str, fragment: str) -> None:
    """Without a deciding operand the error (or a no-overload error for non-bools) is raised."""
    assert fragment in fails(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[1, 2, 3].all(x, x > 0)", True),
        ("[].all(x, false)", True),
        ("[].exists(x, true)", False),
        ("[1, 2, 3].exists_one(x, x > 1)", False),
        ("[1, 2, 3].exists_one(x, x > 2)", True),
        ("[1, 2, 3].map(x, x * 2)", [2, 4, 6]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("[1, 2, 3].filter(x, x != 2)", [1, 3]),
        ("{'a': 1, 'b': 2}.map(k, k)", ["a", "b"]),
        ("{'a': 1, 'b': 2}.filter(k, k == 'b')", ["b"]),
        ("{'a': 1}.exists(k, k == 'a')", True),
        ("object.metadata.labels.all(k, object.metadata.labels[k] != '')", True),
        ("[[1, 2], [3]].map(x, x.map(x, x + 1))", [[2, 3], [4]]),
        ("[1, 2].all(x, [3, 4].exists(y, y > x))", True),
        ("[1].map(object, object + 1)", [2]),
        ("object.spec.containers.map(c, c.name)", ["app", "sidecar"]),
        (
            "object.spec.containers.all(c, !has(c.ports) ||"
            " c.ports.all(p, !has(p.hostPort) || p.hostPort == 0))",
            False,
        ),
    ],
)
def test_macros(source: str, expected: object) -> None:
    """all, exists, exists_one, map (both forms) and filter, over lists and map keys."""
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 == 1.0", True),
        ("1u == 1", True),
        ("1 == 1.5", False),
        ("1 == '1'", False),
        ("true == 1", False),
        ("null == null", True),
        ("object.spec.hostNetwork == null", False),
        ("[1, 2] == [1.0, 2u]", True),
        ("[1] == ['a']", False),
        ("{'a': 1} == {'a': 1.0}", True),
        ("{'a': 1} == {'b': 1}", False),
        ("{1: 'x'}[1.0]", "x"),
        ("{1: 'x'}[1u]", "x"),
        ("b'a' == b'a'", True),
        ("type(1) == int", True),
        ("type('a') == string", True),
        ("type(1u) == uint", True),
        ("type(null) == null_type", True),
        ("type([]) == list && type({}) == map && type(1.0) == double", True),
        ("type(b'') == bytes && type(true) == bool && type(int) == type", True),
        ("0.0 / 0.0 == 0.0 / 0.0", False),
        ("[0.0 / 0.0] == [0.0 / 0.0]", False),
    ],
)
def test_equality_is_heterogeneous_as_in_cel_go(source: str, expected: object) -> None:
    """Values of different types are unequal, numbers compare by value, NaN != NaN."""
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 < 1.5", True),
        ("2u > 1", True),
        ("1.0 <= 1", True),
        ("'a' < 'b'", True),
        ("'é' > 'z'", True),
        ("b'\\x01' < b'\\xff'", True),
        ("false < true", True),
        ("object.spec.replicas >= 3", True),
        ("object.spec.ratio < 1", True),
    ],
)
def test_ordering_crosses_numeric_types(source: str, expected: bool) -> None:
    """<, <=, >, >= compare numbers across int, uint and double, and strings by code point."""
    assert run(source) is expected


@pytest.mark.parametrize("source", ["1 < 'a'", "true < 1", "[1] < [2]", "null < null", "{} < {}"])
def test_ordering_other_mixtures_is_an_error(source: str) -> None:
    """Ordering is undefined between unrelated types."""
    assert "no such overload" in fails(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7 % 3", 1),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("7u / 2u", 3),
        ("7.0 / 2.0", 3.5),
        ("1.0 / 0.0", math.inf),
        ("-1.0 / 0.0", -math.inf),
        ("'a' + 'b'", "ab"),
        ("b'a' + b'b'", b"ab"),
        ("[1] + [2]", [1, 2]),
        ("-(-9223372036854775807)", 9223372036854775807),
        ("9223372036854775806 + 1", 9223372036854775807),
        ("18446744073709551615u", 18446744073709551615),
        ("-object.spec.ratio", -0.5),
    ],
)
def test_arithmetic(source: str, expected: object) -> None:
    """Integer division truncates toward zero; doubles follow IEEE 754; + concatenates."""
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("9223372036854775807 + 1", "overflow"),
        ("-9223372036854775808 - 1", "overflow"),
        ("9223372036854775807 * 2", "overflow"),
        ("-(-9223372036854775808)", "overflow"),
        ("-9223372036854775808 / -1", "overflow"),
        ("-9223372036854775808 % -1", "overflow"),
        ("18446744073709551615u + 1u", "overflow"),
        ("1u - 2u", "overflow"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "modulus by zero"),
        ("1.5 % 1.0", "no such overload"),
        ("1 + 1.0", "no such overload: +(int, double)"),
        ("1 + 1u", "no such overload"),
        ("true + true", "no such overload"),
        ("'a' + 1", "no such overload"),
        ("-1u", "no such overload"),
        ("-'a'", "no such overload"),
        ("{'a': 1, 'a': 2}", "duplicate map key"),
        ("{1.5: 1}", "unsupported map key type"),
    ],
)
def test_arithmetic_errors(source: str, fragment: str) -> None:
    """64-bit overflow, division by zero and mixed-type arithmetic are errors."""
    assert fragment in fails(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("object.spec.replicas > 1 ? 'many' : 'one'", "many"),
        ("has(object.spec.x) ? object.spec.x : 'none'", "none"),
        ("true ? 1 : object.spec.missing", 1),
        ("false ? object.spec.missing : 2", 2),
        ("(object.spec.replicas > 1 ? [1] : [2]).map(x, x)", [1]),
    ],
)
def test_conditional_evaluates_only_the_chosen_branch(source: str, expected: object) -> None:
    """The unchosen branch of ?: is never evaluated, so its errors do not matter."""
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("object.?spec.?hostPID.orValue(false)", False),
        ("object.?spec.?replicas.orValue(0)", 3),
        ("object.?spec.?nothing.?deeper.orValue('x')", "x"),
        ("object.?spec.nothing.deeper.orValue('x')", "x"),
        ("object.?spec.replicas.value()", 3),
        ("object.?spec.?hostPID.hasValue()", False),
        ("object.metadata.labels[?'app'].orValue('')", "web"),
        ("object.metadata.labels[?'db'].orValue('')", ""),
        ("object.spec.containers[?5].hasValue()", False),
        ("object.spec.containers[?0].name.value()", "app"),
        ("object.?spec.containers[0].name.orValue('')", "app"),
        ("optional.of(1).or(optional.of(2)).value()", 1),
        ("optional.none().or(optional.of(2)).value()", 2),
        ("optional.ofNonZeroValue('').hasValue()", False),
        ("optional.ofNonZeroValue(0).hasValue()", False),
        ("optional.ofNonZeroValue([1]).hasValue()", True),
        ("[1, ?optional.none(), ?optional.of(3)]", [1, 3]),
        ("{'a': 1, ?'b': optional.none(), ?'c': optional.of(2)}", {"a": 1, "c": 2}),
        ("optional.of(1) == optional.of(1.0)", True),
        ("optional.none() == optional.none()", True),
        ("optional.of(1) == optional.none()", False),
        ("type(optional.none()) == type(optional.of(1))", True),
        ("object.?spec.?replicas", 3),
        ("object.?spec.?nothing", None),
    ],
)
def test_optional_syntax_and_functions(source: str, expected: object) -> None:
    """Kubernetes optional syntax: .?f, [?k], [?x], {?k: v}, orValue, hasValue, value, or."""
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("optional.none().value()", "has no value"),
        ("object.?spec.?replicas.?x", "no such overload"),
        ("[?1]", "no such overload"),
        ("1.orValue(2)", "no such overload: orValue(int)"),
    ],
)
def test_optional_misuse_is_an_error(source: str, fragment: str) -> None:
    """value() of none, and optional functions on non-optionals, are errors."""
    assert fragment in fails(source)
