"""The function library: conversions, strings (with Kubernetes' extensions), regexes, lists."""

from __future__ import annotations

import math

import pytest

from kposture.evaluate.policy import cel


def run(source: str, **activation: object) -> object:
    """Evaluate ``source`` with the given variables (all declared)."""
    return cel.compile(source, variables=list(activation) or ["object"]).evaluate(activation)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("int(42)", 42),
        ("int(42u)", 42),
        ("int(2.9)", 2),
        ("int(-2.9)", -2),
        ("int('-17')", -17),
        ("int('+17')", 17),
        ("uint(7)", 7),
        ("uint(2.9)", 2),
        ("uint('18446744073709551615')", 2**64 - 1),
        ("double(2)", 2.0),
        ("double(2u)", 2.0),
        ("double('1e3')", 1000.0),
        ("double('-Infinity')", -math.inf),
        ("double('.5')", 0.5),
        ("string(12)", "12"),
        ("string(12u)", "12"),
        ("string(true)", "true"),
        ("string(1.5)", "1.5"),
        ("string(100.0)", "100"),
        ("string(1e6)", "1e+06"),
        ("string(123456.0)", "123456"),
        ("string(1e-5)", "1e-05"),
        ("string(0.0001)", "0.0001"),
        ("string(-0.0)", "-0"),
        ("string(1.0 / 0.0)", "+Inf"),
        ("string(b'caf\\xc3\\xa9')", "café"),
        ("bool('true') && bool('T') && !bool('0') && !bool('False')", True),
        ("bytes('é')", b"\xc3\xa9"),
        ("dyn(1) == 1.0", True),
        ("type(dyn([])) == list", True),
    ],
)
def test_conversions_follow_cel_go(source: str, expected: object) -> None:
    """int(), uint(), double(), string(), bool(), bytes() and dyn() convert as cel-go does."""
    result = run(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "source",
    [
        "int(' 1')",
        "int('1_0')",
        "int('1.5')",
        "int(true)",
        "int(9.3e18)",
        "int(0.0 / 0.0)",
        "int('9223372036854775808')",
        "uint(-1)",
        "uint('-1')",
        "uint(-0.5 - 1.0)",
        "double('1_0')",
        "double('1e400')",
        "double('')",
        "string(null)",
        "string([1])",
        "string(b'\\xff')",
        "bool('yes')",
        "bool(1)",
        "bytes(1)",
    ],
)
def test_conversions_reject_what_cel_go_rejects(source: str) -> None:
    """Lenient Python parsing (spaces, underscores, bool as int) does not leak into CEL."""
    with pytest.raises(cel.CelEvalError):
        run(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'kube-system'.startsWith('kube-')", True),
        ("'image:latest'.endsWith(':latest')", True),
        ("'a.b.c'.contains('.b.')", True),
        ("size('héllo')", 5),
        ("'héllo'.size()", 5),
        ("size(b'h\\xc3\\xa9')", 3),
        ("'MiXeD É'.lowerAscii()", "mixed É"),
        ("'MiXeD é'.upperAscii()", "MIXED é"),
        ("' \\t x \\n'.trim()", "x"),
        ("'\\x1cx'.trim()", "\x1cx"),
        ("'\\u00a0x\\u3000'.trim()", "x"),
        ("'a,b,,c'.split(',')", ["a", "b", "", "c"]),
        ("'a,b,c'.split(',', 2)", ["a", "b,c"]),
        ("'a,b,c'.split(',', 0)", []),
        ("'a,b,c'.split(',', -1)", ["a", "b", "c"]),
        ("'abc'.split('')", ["a", "b", "c"]),
        ("'abc'.split('', 2)", ["a", "bc"]),
        ("''.split(',')", [""]),
        ("['a', 'b'].join()", "ab"),
        ("['a', 'b'].join('-')", "a-b"),
        ("[].join('-')", ""),
        ("'aaa'.replace('a', 'b')", "bbb"),
        ("'aaa'.replace('a', 'b', 2)", "bba"),
        ("'aaa'.replace('a', 'b', -1)", "bbb"),
        ("'héllo'.indexOf('l')", 2),
        ("'héllo'.indexOf('l', 3)", 3),
        ("'hello'.indexOf('z')", -1),
        ("'hello'.indexOf('')", 0),
        ("'héllo'.lastIndexOf('l')", 3),
        ("'hello'.lastIndexOf('l', 2)", 2),
        ("'hello'.lastIndexOf('')", 5),
        ("'héllo'.substring(1)", "éllo"),
        ("'héllo'.substring(1, 3)", "él"),
        ("'abc'.substring(3)", ""),
        ("'héllo'.charAt(1)", "é"),
        ("'abc'.charAt(3)", ""),
    ],
)
def test_string_functions(source: str, expected: object) -> None:
    """Standard and Kubernetes string functions count code points and follow Go semantics."""
    assert run(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "'abc'.substring(2, 1)",
        "'abc'.substring(4)",
        "'abc'.substring(-1)",
        "'abc'.charAt(4)",
        "'abc'.indexOf('a', 4)",
        "'abc'.lastIndexOf('a', -1)",
        "['a', 1].join()",
        "1.startsWith('a')",
        "'a'.startsWith(1)",
        "'a'.contains(1)",
        "[1].lowerAscii()",
        "'a'.split(1)",
    ],
)
def test_string_function_errors(source: str) -> None:
    """Out-of-range positions and wrong argument types are CEL errors."""
    with pytest.raises(cel.CelEvalError):
        run(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'registry.example.com/app'.matches('^registry\\\\.example\\\\.com/')", True),
        ("'xabcx'.matches('abc')", True),
        ("matches('abc', '^b')", False),
        ("'abc\\n'.matches('^abc$')", False),
        ("'abc\\n'.matches('(?m)^abc$')", True),
        ("'١٢'.matches('\\\\d')", False),
        ("'é'.matches('^\\\\w$')", False),
        ("'a\\vb'.matches('a\\\\sb')", False),
        ("'a b'.matches('a\\\\sb')", True),
        ("'a{,2}'.matches('a{,2}')", True),
        ("'ab'.matches('[[:alpha:]]+')", True),
        ("'A'.matches('\\\\x{41}')", True),
        ("'a.b'.matches('\\\\Qa.b\\\\E')", True),
        ("'axb'.matches('\\\\Qa.b\\\\E')", False),
        ("'ab'.matches('(?P<x>a)(?<y>b)')", True),
        ("'AB'.matches('(?i)ab')", True),
        ("'abc'.find('b.')", "bc"),
        ("'abc'.find('z')", ""),
        ("'a1b22c333'.findAll('[0-9]+')", ["1", "22", "333"]),
        ("'a1b22c333'.findAll('[0-9]+', 2)", ["1", "22"]),
        ("'a1b22'.findAll('[0-9]+', 0)", []),
    ],
)
def test_regexes_have_re2_semantics(source: str, expected: object) -> None:
    """matches(), find() and findAll() behave as RE2 would: $ is end of text, classes ASCII."""
    assert run(source) == expected


def test_a_runtime_pattern_is_compiled_and_checked_when_evaluated() -> None:
    """A non-constant pattern is compiled on use (and cached); a bad one is a CEL error."""
    program = cel.compile("'abc'.matches(object.re)")
    assert program.evaluate({"object": {"re": "^a"}}) is True
    with pytest.raises(cel.CelEvalError, match="not RE2"):
        program.evaluate({"object": {"re": "(?<=a)b"}})
    with pytest.raises(cel.CelEvalError, match="no such overload"):
        program.evaluate({"object": {"re": 1}})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[1, 2, 2, 3].isSorted()", True),
        ("['b', 'a'].isSorted()", False),
        ("[].isSorted()", True),
        ("[1, 2, 3].sum()", 6),
        ("[1.5, 2.5].sum()", 4.0),
        ("[].sum()", 0),
        ("[3, 1, 2].min()", 1),
        ("['b', 'a', 'c'].max()", "c"),
        ("[1, 2.5].max()", 2.5),
        ("[1, 2, 1].indexOf(1)", 0),
        ("[1, 2, 1].lastIndexOf(1)", 2),
        ("[1, 2].indexOf(3)", -1),
        ("[[1], [2]].indexOf([2])", 1),
    ],
)
def test_kubernetes_list_functions(source: str, expected: object) -> None:
    """isSorted, sum, min, max, indexOf and lastIndexOf from the Kubernetes list library."""
    assert run(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "[].min()",
        "[].max()",
        "[1, 'a'].max()",
        "['a', 'b'].sum()",
        "[9223372036854775807, 1].sum()",
        "[[1], [2]].min()",
        "1.isSorted()",
    ],
)
def test_kubernetes_list_function_errors(source: str) -> None:
    """Empty min/max, incomparable or non-numeric elements and overflow are errors."""
    with pytest.raises(cel.CelEvalError):
        run(source)
