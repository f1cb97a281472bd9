"""Which fields of its variables an expression reads, for projecting objects before evaluation.

The result is a set of paths such as ``("object", "spec", "containers", "*", "image")``: the
subtree at each path may be read, ``*`` stands for every element of a list (or every value
of a map). It must be a superset of what evaluation can touch, so whenever a value is used in
a way the analysis does not follow (compared whole, passed to a function, indexed by a
computed key) the path to that whole value is reported.

The analysis tracks *aliases*: the data paths a value comes from. ``filter`` results and
list concatenations alias their inputs, so ``(a + b).all(x, x.f)`` reports ``a.*.f`` and
``b.*.f`` rather than the whole lists.
"""

from __future__ import annotations

from collections.abc import Collection

from kposture.evaluate.policy.cel import nodes

Path = tuple[str, ...]
Aliases = list[Path] | None  # None: not traceable to data (already recorded whole if needed)


PRESENT = "?"
"""Last step of a ``projection_paths`` entry that only tests presence (``has()``)."""


def field_paths(root: nodes.Expr, variables: Collection[str]) -> frozenset[Path]:
    """The minimal set of variable-rooted paths whose subtrees cover everything ``root`` reads."""
    walker = _Walker(frozenset(variables))
    walker.whole(walker.visit(root, {}))
    return _minimal(walker.read)


def projection_paths(root: nodes.Expr, variables: Collection[str]) -> frozenset[Path]:
    """Like ``field_paths``, but ``has(x.f)`` yields ``x.f.?``: only the key must be kept.

    ``has()`` guards nearly every read in baselines (``has(c.securityContext) && ...``), and
    reporting the guarded field whole would keep, say, every container whole in a projection
    that otherwise needs two fields of each. The engine's projector understands the marker.
    """
    walker = _Walker(frozenset(variables), presence=True)
    walker.whole(walker.visit(root, {}))
    return _minimal(walker.read)


def _minimal(paths: set[Path]) -> frozenset[Path]:
    # A path is redundant when a proper prefix of it is already read whole.
    ordered = sorted(paths, key=len)
    kept: set[Path] = set()
    for path in ordered:
        if not any(path[:n] in kept for n in range(1, len(path))):
            kept.add(path)
    return frozenset(kept)


class _Walker:
    def __init__(self, variables: frozenset[str], *, presence: bool = False) -> None:
        self.variables = variables
        self.presence = presence
        self.read: set[Path] = set()

    def whole(self, aliases: Aliases) -> None:
        """Record that the values behind ``aliases`` may be read entirely."""
        if aliases:
            self.read.update(aliases)

    def consume(self, node: nodes.Expr, scope: dict[str, Aliases]) -> None:
        """Visit ``node`` whose value is used in a way the analysis does not follow."""
        self.whole(self.visit(node, scope))

    def visit(self, node: nodes.Expr, scope: dict[str, Aliases]) -> Aliases:
        """Record the reads inside ``node``; return the data paths its value aliases."""
        if isinstance(node, nodes.Literal):
            return []
        if isinstance(node, nodes.Ident):
            if node.name in scope:
                return scope[node.name]
            return [(node.name,)] if node.name in self.variables else []
        if isinstance(node, nodes.Select):
            return _extend(self.visit(node.operand, scope), node.field)
        if isinstance(node, nodes.Index):
            key = node.index
            if isinstance(key, nodes.Literal) and type(key.value) in (str, int):
                step = key.value if type(key.value) is str else "*"
                return _extend(self.visit(node.operand, scope), str(step))
            self.consume(node.operand, scope)
            self.consume(key, scope)
            return None
        if isinstance(node, nodes.Has):
            field = _extend(self.visit(node.operand, scope), node.field)
            self.whole(_extend(field, PRESENT) if self.presence else field)
            return []
        if isinstance(node, nodes.Binary) and node.op == "+":
            return _union(self.visit(node.left, scope), self.visit(node.right, scope), self)
        if isinstance(node, nodes.Conditional):
            self.consume(node.cond, scope)
            return _union(self.visit(node.then, scope), self.visit(node.otherwise, scope), self)
        if isinstance(node, nodes.ListLit) and not node.elements:
            return []
        if isinstance(node, nodes.Comprehension):
            return self.comprehension(node, scope)
        if isinstance(node, nodes.Call) and node.function in ("dyn", "orValue", "value"):
            parts = [node.target] if node.target is not None else []
            aliases: Aliases = []
            for part in [*parts, *node.args]:
                aliases = _union(aliases, self.visit(part, scope), self)
            return aliases
        for child in _children(node):
            self.consume(child, scope)
        return []  # derived values (bools, numbers, new strings) alias no data

    def comprehension(self, node: nodes.Comprehension, scope: dict[str, Aliases]) -> Aliases:
        """Bind the iteration variable to ``range.*`` and record what the body reads of it."""
        ranges = self.visit(node.range, scope)
        elements = None if ranges is None else [(*p, "*") for p in ranges]
        inner = {**scope, node.var: elements}
        before = set(self.read)
        if node.pred is not None:
            self.consume(node.pred, inner)
        if node.transform is not None:
            self.consume(node.transform, inner)
        if ranges and elements:
            used = any(p[: len(e)] == e for p in self.read - before for e in elements)
            if not used:
                # The body never looked into an element, but iterating needs the list itself.
                self.whole(ranges)
        if node.kind == "filter":
            return ranges  # a filtered list holds elements of the original
        return []


def _extend(aliases: Aliases, step: str) -> Aliases:
    return None if aliases is None else [(*p, step) for p in aliases]


def _union(left: Aliases, right: Aliases, walker: _Walker) -> Aliases:
    if left is None or right is None:
        walker.whole(left)
        walker.whole(right)
        return None
    return left + right


def _children(node: nodes.Expr) -> list[nodes.Expr]:
    if isinstance(node, nodes.Unary):
        return [node.operand]
    if isinstance(node, nodes.Binary):
        return [node.left, node.right]
    if isinstance(node, nodes.Logical):
        return list(node.operands)
    if isinstance(node, nodes.ListLit):
        return list(node.elements)
    if isinstance(node, nodes.MapLit):
        return [part for key, value, _ in node.entries for part in (key, value)]
    if isinstance(node, nodes.Call):
        return [*([node.target] if node.target is not None else []), *node.args]
    return []
