"""Only public APIs of faust-streaming and aiokafka: no private attribute of theirs is touched.

Evaluate ran on faust's internals once (its fetch loop, recovery and acked offsets), which
broke with every release. A module that imports either library may read or write only its
own private attributes (``self._x``, ``cls._x``); any other ``obj._name`` there fails here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
GUARDED = ("faust", "mode", "aiokafka")
SOURCES = sorted(
    path
    for folder in ("schemas", "runtime", "ingest", "evaluate", "remediate", "cli")
    for path in (ROOT / folder / "kposture").rglob("*.py")
)


def _imports_guarded(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] in GUARDED for name in names):
            return True
    return False


def _foreign_private(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
            continue
        found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_that_uses_faust_or_aiokafka_touches_no_private_attribute_of_theirs(
    path: pathlib.Path,
) -> None:
    """Private attributes are read only on the module's own objects."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not _imports_guarded(tree):
        return
    assert _foreign_private(tree) == []


def test_the_check_finds_a_private_attribute_of_another_object() -> None:
    """The check itself: ``consumer._fetcher`` in a module importing aiokafka is found."""
    tree = ast.parse("import aiokafka\nconsumer = aiokafka.X()\nconsumer._fetcher.seek()\n")
    assert _imports_guarded(tree)
    assert _foreign_private(tree) == ["line 3: consumer._fetcher"]
