"""Lexing, parsing and compile-time checks of CEL sources."""

from __future__ import annotations

import math

import pytest

from kposture.evaluate.policy import cel


def _value(source: str) -> object:
    return cel.compile(source).evaluate({})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("42", 42),
        ("0x2A", 42),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775807", 2**63 - 1),
        ("42u", 42),
        ("0xFFFFFFFFFFFFFFFFu", 2**64 - 1),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("-0.0", -0.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"double"', "double"),
        ("'single'", "single"),
        ('"""tri\nple"""', "tri\nple"),
        ("'''it's'''", "it's"),
        (r'"esc\"\'\\\n\t\a\b\f\r\v\?\`"', "esc\"'\\\n\t\a\b\f\r\v?`"),
        (r'"\x41\X42\u00e9\U0001F600\101"', "ABé😀A"),
        (r'r"raw\n"', "raw\\n"),
        (r'R"""raw\"""', "raw\\"),
        (r'b"\xff\101é"', b"\xffA\xc3\xa9"),
        (r'br"\x"', b"\\x"),
        ("[]", []),
        ("[1, 'a', [true]]", [1, "a", [True]]),
        ("[1, 2,]", [1, 2]),
        ('{"a": 1, 2: "b", true: null}', {"a": 1, 2: "b", True: None}),
        ("{}", {}),
        ("// a comment\n1 // trailing", 1),
        ("(((1)))", 1),
    ],
)
def test_literals_decode_to_plain_python_values(source: str, expected: object) -> None:
    """Every literal form evaluates to the plain Python value it spells."""
    result = _value(source)
    assert result == expected
    assert type(result) is type(expected)
    if isinstance(expected, float):
        assert math.copysign(1.0, expected) == math.copysign(1.0, result)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("2 * 3 % 4", 2),
        ("-2 * 3", -6),
        ("!true || true", True),
        ("true || false && false", True),
        ("1 < 2 == true", True),
        ("false ? 1 : true ? 2 : 3", 2),
        ("1 in [1] && 2 in [2]", True),
        ("[1, 2][1] + [3][0]", 5),
        ("--1", 1),
        ("!!true", True),
    ],
)
def test_operators_follow_cel_precedence(source: str, expected: object) -> None:
    """Operator precedence and associativity are CEL's."""
    assert _value(source) == expected


@pytest.mark.parametrize(
    ("source", "fragment", "line", "column"),
    [
        ("1 +", "unexpected end of input", 1, 4),
        ("(1", "expected ')'", 1, 3),
        ("a.b(", "unexpected end of input", 1, 5),
        ('"abc', "unterminated string", 1, 1),
        ('"a\nb"', "newline in string", 1, 3),
        (r'"\q"', "invalid escape", 1, 2),
        (r'"\ud800"', "invalid code point", 1, 1),
        ("9223372036854775808", "out of range", 1, 1),
        ("1 - 9223372036854775808", "out of range", 1, 5),
        ("18446744073709551616u", "out of range", 1, 1),
        ("1.", "expected a name", 1, 3),
        ("1 2", "unexpected", 1, 3),
        ("$", "unexpected character", 1, 1),
        ("namespace", "reserved word", 1, 1),
        ("object.spec\n  && in", "reserved word", 2, 6),
        ("has(object)", "has() needs a single field selection", 1, 1),
        ("has(object.?a)", "has() needs a single field selection", 1, 1),
        ("[1].all(1, true)", "simple name", 1, 5),
        ("[1].all(x, y, true)", "unsupported form of macro", 1, 5),
        ("Pod{name: 'x'}", "message construction", 1, 4),
        (".object", "leading-dot", 1, 1),
        ("(" * 60 + "1" + ")" * 60, "nested deeper", 1, 49),
        ("x" + ".x" * 120, "nested deeper", 1, 1),
    ],
)
def test_syntax_errors_name_the_problem_and_its_position(
    source: str, fragment: str, line: int, column: int
) -> None:
    """Bad syntax raises CelSyntaxError with a message, a 1-based line and a column."""
    with pytest.raises(cel.CelSyntaxError) as caught:
        cel.compile(source)
    assert fragment in caught.value.message
    assert (caught.value.line, caught.value.column) == (line, column)
    assert fragment in caught.value.args[0]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("foo", "undeclared reference to 'foo'"),
        ("object.spec.all(c, d)", "undeclared reference to 'd'"),
        ("timestamp('2024-01-01T00:00:00Z')", "unsupported function timestamp()"),
        ("object.metadata.name.format([])", "unsupported function format()"),
        ("quantity('1Gi')", "unsupported function quantity()"),
        ("size(1, 2)", "wrong arguments to size() (2 given)"),
        ("'a'.startsWith()", "wrong arguments to startsWith() (0 given)"),
        ("startsWith('a', 'b')", "wrong arguments to startsWith()"),
        ("'a'.matches('(?=a)')", "not RE2"),
        ("'a'.matches('[a')", "missing ]"),
        ("'a'.matches(1)", "matches() needs a string pattern"),
    ],
)
def test_unknown_names_functions_and_bad_constant_regexes_fail_at_compile_time(
    source: str, fragment: str
) -> None:
    """Compile-time checks reject what could only fail later, naming the culprit."""
    with pytest.raises(cel.CelSyntaxError) as caught:
        cel.compile(source)
    assert fragment in caught.value.message


def test_variables_can_be_restricted_per_compile() -> None:
    """Only the declared variables are known; others are compile errors."""
    assert cel.compile("self.x == 1", variables=["self"]).evaluate({"self": {"x": 1}}) is True
    with pytest.raises(cel.CelSyntaxError, match="undeclared reference to 'object'"):
        cel.compile("object.x", variables=["self"])


def test_all_kubernetes_variables_are_declared_by_default() -> None:
    """object, oldObject, namespaceObject, params, request and variables need no declaration."""
    source = "[object, oldObject, namespaceObject, params, request, variables].size()"
    names = ("object", "oldObject", "namespaceObject", "params", "request", "variables")
    activation = dict.fromkeys(names)
    assert cel.compile(source).evaluate(activation) == 6


def test_reserved_words_are_fine_as_field_names() -> None:
    """Field names after a dot may be reserved words, as in object.metadata.namespace."""
    program = cel.compile("object.metadata.namespace")
    assert program.evaluate({"object": {"metadata": {"namespace": "ns"}}}) == "ns"


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("__namespace__", "namespace"),
        ("x__dash__y", "x-y"),
        ("a__dot__b", "a.b"),
        ("a__slash__b", "a/b"),
        ("a__underscores__b", "a__b"),
        ("__plain__", "__plain__"),
    ],
)
def test_kubernetes_escaped_field_names_select_the_unescaped_key(field: str, key: str) -> None:
    """Kubernetes' property-name escapes (__dash__, __dot__, __namespace__, ...) are undone."""
    program = cel.compile(f"object.{field}")
    assert program.evaluate({"object": {key: 1}}) == 1


def test_syntax_error_is_a_cel_error_with_readable_text() -> None:
    """CelSyntaxError belongs to the CelError hierarchy and prints its location."""
    with pytest.raises(cel.CelError) as caught:
        cel.compile("1 +")
    assert str(caught.value) == "unexpected end of input (line 1, column 4)"
    assert not caught.value.retriable
