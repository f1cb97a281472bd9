"""Multi-document YAML with the line of every value, and the loader's error type.

Policy authors need errors that point at a line (``pss.yaml:42: check 'runAsNonRoot': ...``),
so documents are composed into YAML nodes first and converted to plain Python data while the
start line of each value is recorded under its path (``("checks", 3, "validation")``). The data
stays plain dicts and lists: patches and fixture objects are passed on unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file, located as precisely as the loader could."""

    file: str
    line: int
    message: str
    check_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        what = f"check {self.check_id!r}: " if self.check_id else ""
        return f"{where}{what}{self.message}"


class BaselineError(ValueError):
    """A baseline, exception or fixture file is invalid.

    Every problem found is in ``problems`` (the loader does not stop at the first); ``file``,
    ``line`` and ``check_id`` repeat those of the first problem for the common single-error case.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        self.file = first.file
        self.line = first.line
        self.check_id = first.check_id
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclasses.dataclass
class Document:
    """One YAML document: its data, and the line and scalar style of every value by path."""

    data: Any
    lines: dict[Path, int]
    styles: dict[Path, str | None]
    line: int

    def line_of(self, path: Path) -> int:
        """The line of the value at ``path``, or of its nearest located parent."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, self.line)


def parse(text: str, *, filename: str) -> list[Document]:
    """Split ``text`` into documents; raise ``BaselineError`` on invalid YAML or duplicate keys."""
    problems: list[Problem] = []
    documents: list[Document] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        raise BaselineError([Problem(filename, line, f"invalid YAML: {exc.problem}")]) from exc
    constructor = yaml.constructor.SafeConstructor()
    for node in nodes:
        if node is None:
            continue
        document = Document(data=None, lines={}, styles={}, line=node.start_mark.line + 1)
        document.data = _convert(
            node,
            (),
            document=document,
            constructor=constructor,
            problems=problems,
            filename=filename,
        )
        documents.append(document)
    if problems:
        raise BaselineError(problems)
    return documents


def _convert(
    node: yaml.Node,
    path: Path,
    *,
    document: Document,
    constructor: yaml.constructor.SafeConstructor,
    problems: list[Problem],
    filename: str,
) -> Any:
    document.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if key in result:
                # PyYAML silently keeps the last duplicate; a reviewer would read the first.
                problems.append(
                    Problem(filename, key_node.start_mark.line + 1, f"duplicate key {key!r}")
                )
                continue
            result[key] = _convert(
                value_node,
                (*path, key),
                document=document,
                constructor=constructor,
                problems=problems,
                filename=filename,
            )
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(
                item,
                (*path, index),
                document=document,
                constructor=constructor,
                problems=problems,
                filename=filename,
            )
            for index, item in enumerate(node.value)
        ]
    document.styles[path] = node.style if isinstance(node, yaml.ScalarNode) else None
    return constructor.construct_object(node, deep=True)
