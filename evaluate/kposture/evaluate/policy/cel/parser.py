"""Parse CEL tokens into ``nodes`` with macros expanded (recursive descent, CEL precedence).

The grammar is the one of the CEL specification (``Expr``, ``ConditionalOr``, ... ``Primary``)
plus the optional syntax Kubernetes enables (``a.?b``, ``a[?i]``, ``[?x]``, ``{?k: v}``).
Message construction (``Type{field: value}``) and leading-dot names are rejected, since
Kubernetes objects are maps and there is no protobuf registry.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from kposture.evaluate.policy.cel import errors, lexer, nodes

#: Words CEL reserves: they may not name variables (field names after ``.`` are fine).
RESERVED: Final = frozenset({
    "as", "break", "const", "continue", "else", "false", "for", "function", "if", "import",
    "in", "let", "loop", "package", "namespace", "null", "return", "true", "var", "void",
    "while",
})  # fmt: skip
# Kubernetes escapes property names CEL cannot spell; a field ``__dash__`` means ``-`` etc.
_K8S_ESCAPES: Final = (
    ("__underscores__", "__"),
    ("__dot__", "."),
    ("__dash__", "-"),
    ("__slash__", "/"),
)
_MACROS: Final = {"all": 2, "exists": 2, "exists_one": 2, "filter": 2, "map": 3}
# Deeper nesting than this is refused rather than risking Python's recursion limit (the
# parser, code generator and path analysis all recurse over the tree); real policies stay far
# below it. MAX_NESTING bounds parentheses, brackets and calls; MAX_DEPTH bounds the tree.
MAX_NESTING: Final = 48
MAX_DEPTH: Final = 96
_RELATIONS: Final = frozenset({"<", "<=", ">", ">=", "==", "!=", "in"})


def unescape_field(name: str) -> str:
    """Undo the Kubernetes escaping of a property name used in a field selection."""
    if name.startswith("__") and name.endswith("__") and name[2:-2] in RESERVED:
        return name[2:-2]
    for escaped, plain in _K8S_ESCAPES:
        name = name.replace(escaped, plain)
    return name


def parse(source: str) -> nodes.Expr:
    """Parse a whole CEL expression; raise ``CelSyntaxError`` on any problem."""
    parser = _Parser(source, lexer.tokenize(source))
    expr = parser.expr()
    parser.expect_eof()
    _check_depth(source, expr)
    return expr


def _check_depth(source: str, root: nodes.Expr) -> None:
    # Iterative on purpose: this guards the recursive passes that run after it.
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, tuple):
            stack.extend((item, depth) for item in node)
            continue
        if not dataclasses.is_dataclass(node):
            continue  # a literal value, a name or a flag
        if depth > MAX_DEPTH:
            pos = getattr(node, "pos", 0)
            raise lexer.syntax_error(source, pos, f"expression nested deeper than {MAX_DEPTH}")
        stack.extend((getattr(node, f.name), depth + 1) for f in dataclasses.fields(node))


class _Parser:
    def __init__(self, source: str, tokens: list[lexer.Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    # --- token helpers -------------------------------------------------------------------

    @property
    def token(self) -> lexer.Token:
        """The current token."""
        return self.tokens[self.index]

    def at(self, op: str) -> bool:
        """Whether the current token is the operator ``op``."""
        token = self.tokens[self.index]
        return token.kind == "op" and token.value == op

    def accept(self, op: str) -> bool:
        """Consume the operator ``op`` if it is next."""
        if self.at(op):
            self.index += 1
            return True
        return False

    def expect(self, op: str) -> lexer.Token:
        """Consume the operator ``op`` or fail."""
        token = self.token
        if not self.at(op):
            raise self.error(token.pos, f"expected {op!r}, found {self.describe(token)}")
        self.index += 1
        return token

    def expect_eof(self) -> None:
        """Fail unless all input was consumed."""
        if self.token.kind != "eof":
            raise self.error(self.token.pos, f"unexpected {self.describe(self.token)}")

    def describe(self, token: lexer.Token) -> str:
        """How ``token`` is quoted in error messages."""
        return "end of input" if token.kind == "eof" else repr(self.source[token.pos :][:12])

    def error(self, pos: int, message: str) -> errors.CelSyntaxError:
        """A syntax error at offset ``pos``."""
        return lexer.syntax_error(self.source, pos, message)

    def ident(self) -> lexer.Token:
        """Consume a name or fail."""
        token = self.token
        if token.kind != "ident":
            raise self.error(token.pos, f"expected a name, found {self.describe(token)}")
        self.index += 1
        return token

    # --- grammar -------------------------------------------------------------------------

    def expr(self) -> nodes.Expr:
        """Expr = ConditionalOr ["?" ConditionalOr ":" Expr]."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(self.token.pos, f"expression nested deeper than {MAX_NESTING}")
        start = self.token.pos
        cond = self.logical("||")
        if self.accept("?"):
            then = self.logical("||")
            self.expect(":")
            otherwise = self.expr()
            cond = nodes.Conditional(start, cond, then, otherwise)
        self.depth -= 1
        return cond

    def logical(self, op: str) -> nodes.Expr:
        """ConditionalOr = ConditionalAnd {"||" ConditionalAnd}; ConditionalAnd likewise."""
        start = self.token.pos
        operands = [self.logical("&&") if op == "||" else self.relation()]
        while self.accept(op):
            operands.append(self.logical("&&") if op == "||" else self.relation())
        if len(operands) == 1:
            return operands[0]
        return nodes.Logical(start, op, tuple(operands))

    def relation(self) -> nodes.Expr:
        """Relation = Addition {("<" | "<=" | ... | "in") Addition}."""
        start = self.token.pos
        left = self.addition()
        while True:
            token = self.token
            op = token.value
            if not (token.kind in ("op", "ident") and op in _RELATIONS):
                return left
            self.index += 1
            left = nodes.Binary(start, str(op), left, self.addition())

    def addition(self) -> nodes.Expr:
        """Addition = Multiplication {("+" | "-") Multiplication}."""
        start = self.token.pos
        left = self.multiplication()
        while self.at("+") or self.at("-"):
            op = str(self.token.value)
            self.index += 1
            left = nodes.Binary(start, op, left, self.multiplication())
        return left

    def multiplication(self) -> nodes.Expr:
        """Multiplication = Unary {("*" | "/" | "%") Unary}."""
        start = self.token.pos
        left = self.unary()
        while self.at("*") or self.at("/") or self.at("%"):
            op = str(self.token.value)
            self.index += 1
            left = nodes.Binary(start, op, left, self.unary())
        return left

    def unary(self) -> nodes.Expr:
        """Unary = {"!" | "-"} Member."""
        start = self.token.pos
        ops: list[str] = []
        while self.at("!") or self.at("-"):
            ops.append(str(self.token.value))
            self.index += 1
        token = self.token
        if ops and ops[-1] == "-" and token.kind in ("int", "double"):
            # A minus sign directly before a number is part of the literal; this is what
            # makes -9223372036854775808 valid although 9223372036854775808 is not.
            self.index += 1
            ops.pop()
            assert isinstance(token.value, (int, float))
            operand = self.member(nodes.Literal(start, -token.value))
        else:
            operand = self.member()
        for op in reversed(ops):
            operand = nodes.Unary(start, op, operand)
        return operand

    def member(self, literal: nodes.Literal | None = None) -> nodes.Expr:
        """Member = Primary {"." ["?"] IDENT ["(" args ")"] | "[" ["?"] Expr "]"}."""
        start = self.token.pos if literal is None else literal.pos
        expr = self.primary() if literal is None else literal
        while True:
            if self.accept("."):
                optional = self.accept("?")
                name_token = self.ident()
                name = str(name_token.value)
                if not optional and self.accept("("):
                    args = self.arguments(")")
                    expr = self.method(start, name_token.pos, expr, name, args)
                else:
                    expr = nodes.Select(start, expr, unescape_field(name), optional)
            elif self.accept("["):
                optional = self.accept("?")
                index = self.expr()
                self.expect("]")
                expr = nodes.Index(start, expr, index, optional)
            elif self.at("{"):
                raise self.error(self.token.pos, "message construction is not supported")
            else:
                return expr

    def method(
        self, start: int, pos: int, target: nodes.Expr, name: str, args: list[nodes.Expr]
    ) -> nodes.Expr:
        """A method call, or a macro (all, exists, exists_one, filter, map) expanded."""
        arity = _MACROS.get(name)
        if arity is None or len(args) not in (2, arity):
            if name in _MACROS:
                raise self.error(pos, f"unsupported form of macro {name}() ({len(args)} args)")
            return nodes.Call(start, name, target, tuple(args))
        var = args[0]
        if not isinstance(var, nodes.Ident):
            raise self.error(pos, f"{name}() needs a simple name as its first argument")
        if name == "map":
            pred, transform = (None, args[1]) if len(args) == 2 else (args[1], args[2])
            return nodes.Comprehension(start, "map", var.name, target, pred, transform)
        return nodes.Comprehension(start, name, var.name, target, args[1], None)

    def arguments(self, closer: str) -> list[nodes.Expr]:
        """A comma-separated list of expressions up to ``closer``."""
        args: list[nodes.Expr] = []
        if self.accept(closer):
            return args
        while True:
            args.append(self.expr())
            if self.accept(closer):
                return args
            self.expect(",")

    def primary(self) -> nodes.Expr:
        """Primary = literal | name or call | "(" Expr ")" | list | map."""
        token = self.token
        kind = token.kind
        pos = token.pos
        if kind in ("int", "uint", "double", "string", "bytes"):
            self.index += 1
            if kind == "int" and token.value == lexer.INT64_MAX + 1:
                raise self.error(pos, "int literal out of range")
            return nodes.Literal(pos, token.value)
        if kind == "ident":
            return self.name()
        if self.accept("("):
            expr = self.expr()
            self.expect(")")
            return expr
        if self.accept("["):
            return self.list_literal(pos)
        if self.accept("{"):
            return self.map_literal(pos)
        if self.at("."):
            raise self.error(pos, "leading-dot names are not supported")
        raise self.error(pos, f"unexpected {self.describe(token)}")

    def name(self) -> nodes.Expr:
        """A name, a keyword literal, a global call, or the has() macro."""
        token = self.ident()
        name = str(token.value)
        pos = token.pos
        if name in ("true", "false"):
            return nodes.Literal(pos, name == "true")
        if name == "null":
            return nodes.Literal(pos, None)
        if name in RESERVED:
            raise self.error(pos, f"reserved word {name!r} cannot be used as a name")
        if not self.accept("("):
            return nodes.Ident(pos, name)
        args = self.arguments(")")
        if name == "has":
            if len(args) != 1 or not isinstance(args[0], nodes.Select) or args[0].optional:
                raise self.error(pos, "has() needs a single field selection, like has(a.b)")
            return nodes.Has(pos, args[0].operand, args[0].field)
        return nodes.Call(pos, name, None, tuple(args))

    def list_literal(self, pos: int) -> nodes.Expr:
        """[a, ?b, ...] after the opening bracket."""
        elements: list[nodes.Expr] = []
        optional: list[bool] = []
        while not self.accept("]"):
            optional.append(self.accept("?"))
            elements.append(self.expr())
            if not self.accept(","):
                self.expect("]")
                break
        return nodes.ListLit(pos, tuple(elements), tuple(optional))

    def map_literal(self, pos: int) -> nodes.Expr:
        """{k: v, ?k2: v2, ...} after the opening brace."""
        entries: list[tuple[nodes.Expr, nodes.Expr, bool]] = []
        while not self.accept("}"):
            optional = self.accept("?")
            key = self.expr()
            self.expect(":")
            entries.append((key, self.expr(), optional))
            if not self.accept(","):
                self.expect("}")
                break
        return nodes.MapLit(pos, tuple(entries))
