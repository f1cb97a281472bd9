"""Scanning manifests without a cluster: parse files, evaluate them together, gate on severity.

``kposture scan`` (CI/CD, no Kafka) reads files and hands their text here. Parsing keeps the
file and line of every object, so reports point at the document and, when the offending
field can be located, at its line. ``scan`` then runs the same ``evaluating.Engine`` as the
stream processor over all objects at once: the scanned Namespaces are the ``namespaceObject``
of the objects inside them, and cross-object checks (``needs``) see the scanned objects as
their inventory, exactly as the evaluator sees its state.

Nothing here reads files or prints: callers pass text in and render the ``ScanReport``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import yaml_lines
from kposture.schemas import common

DEFAULT_BASELINES = ("pss-restricted", "cis-1.12", "nsa-cisa-1.2")
"""What ``kposture scan`` evaluates when no ``--baseline`` is given (latest versions)."""

DEFAULT_FAIL_ON = common.Severity.LOW
"""The default gate: any failing (or erroring) check of severity ``low`` or above fails the
scan; ``info`` findings alone never do."""


class ManifestError(ValueError):
    """A manifest cannot be read as Kubernetes objects; names the file and the line."""

    def __init__(self, file: str, line: int, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class Manifest:
    """One Kubernetes object found in a file.

    ``line`` is where its document (or its ``items`` entry) starts; ``lines`` maps field
    paths below the object to their lines, when the format tracked them (YAML does).
    """

    file: str
    line: int
    object: Mapping[str, Any]
    lines: Mapping[yaml_lines.Path, int] = dataclasses.field(default_factory=dict)

    @property
    def ref(self) -> dict[str, Any]:
        """The object's identity as reports show it (``namespace`` is ``None`` if unset)."""
        metadata = self.object.get("metadata") or {}
        return {
            "apiVersion": str(self.object.get("apiVersion", "")),
            "kind": str(self.object.get("kind", "")),
            "namespace": metadata.get("namespace") or None,
            "name": str(metadata.get("name") or metadata.get("generateName") or ""),
        }

    def line_of(self, path: str) -> int:
        """The line of the deepest located prefix of a result's dotted ``path``."""
        keys: list[str | int] = []
        best = self.line
        for part in _PATH_PART_RE.findall(path):
            name, index = part
            if index == "*":
                break
            keys.append(int(index) if index else name)
            if tuple(keys) not in self.lines:
                break
            best = self.lines[tuple(keys)]
        return best


_PATH_PART_RE = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


@dataclasses.dataclass(frozen=True)
class Parsed:
    """The objects of one file, and the documents that were not Kubernetes objects."""

    manifests: tuple[Manifest, ...]
    ignored: tuple[str, ...] = ()


def parse_manifests(text: str, *, filename: str) -> Parsed:
    """Split a multi-document YAML (or JSON) text into objects; expand ``kind: *List``.

    A ``.json`` file is parsed as one JSON document (so its errors carry JSON's line);
    anything else, stdin included, as YAML, of which JSON is a subset. Empty documents are
    dropped; mappings without ``apiVersion`` and ``kind`` (Helm values, say) are listed in
    ``ignored``. Raises ``ManifestError`` on invalid syntax or a document that is not a
    mapping.
    """
    documents: list[tuple[Any, int, Mapping[yaml_lines.Path, int]]] = []
    if filename.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(filename, exc.lineno, f"invalid JSON: {exc.msg}") from exc
        documents.append((data, 1, {}))
    else:
        try:
            parsed = yaml_lines.parse(text, filename=filename)
        except yaml_lines.BaselineError as exc:
            raise ManifestError(filename, exc.line, exc.problems[0].message) from exc
        documents.extend((doc.data, doc.line, doc.lines) for doc in parsed)
    manifests: list[Manifest] = []
    ignored: list[str] = []
    for data, line, lines in documents:
        manifests.extend(_objects(data, line, lines, filename=filename, ignored=ignored))
    return Parsed(tuple(manifests), tuple(ignored))


def _objects(
    data: Any,
    line: int,
    lines: Mapping[yaml_lines.Path, int],
    *,
    filename: str,
    ignored: list[str],
) -> Iterable[Manifest]:
    if data is None:
        return
    if not isinstance(data, dict):
        raise ManifestError(filename, line, "a manifest must be a mapping (a Kubernetes object)")
    if not data.get("apiVersion") or not data.get("kind"):
        ignored.append(f"{filename}:{line}: not a Kubernetes object (no apiVersion or kind)")
        return
    items = data.get("items")
    if str(data["kind"]).endswith("List") and isinstance(items, list):
        # kubectl's "kind: List" (and typed lists such as PodList) wrap objects in items.
        per_item = _split_items(lines)
        for index, item in enumerate(items):
            item_lines = per_item.get(index, {})
            yield from _objects(
                item, item_lines.get((), line), item_lines, filename=filename, ignored=ignored
            )
        return
    yield Manifest(file=filename, line=line, object=data, lines=lines)


def _split_items(lines: Mapping[yaml_lines.Path, int]) -> dict[int, dict[yaml_lines.Path, int]]:
    # One pass over the list's lines, re-rooted under each item (not one pass per item).
    per_item: dict[int, dict[yaml_lines.Path, int]] = {}
    for path, line in lines.items():
        if len(path) >= 2 and path[0] == "items" and isinstance(path[1], int):
            per_item.setdefault(path[1], {})[path[2:]] = line
    return per_item


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """One check's verdict on one scanned object, with where the object (or field) is."""

    manifest: Manifest
    check: evaluating.CheckResult

    @property
    def line(self) -> int:
        """The line of the offending field if it was located, else of the object."""
        return self.manifest.line_of(self.check.path) if self.check.path else self.manifest.line

    def as_json(self) -> dict[str, Any]:
        """The result as ``kposture scan --output json`` writes it."""
        return {
            "file": self.manifest.file,
            "object": self.manifest.ref,
            "baseline": self.check.baseline,
            "baseline_version": self.check.baseline_version,
            "check": self.check.check_id,
            "controls": list(self.check.controls),
            "result": str(self.check.result),
            "severity": str(self.check.severity),
            "message": self.check.message,
            "path": self.check.path,
        }


@dataclasses.dataclass(frozen=True)
class ScanReport:
    """Every result of a scan, in file order, then in the engine's check order."""

    results: tuple[ScanResult, ...]

    def summary(self) -> dict[str, int]:
        """How many results of each kind (``pass``, ``fail``, ``error``, ``skip``)."""
        counts = {str(result): 0 for result in common.Result}
        for item in self.results:
            counts[str(item.check.result)] += 1
        return counts

    def blocking(self, threshold: common.Severity) -> list[ScanResult]:
        """The results that fail the gate: ``fail`` or ``error`` at or above ``threshold``.

        Errors count: a check that could not be evaluated has not shown the object is fine.
        """
        gate = (common.Result.FAIL, common.Result.ERROR)
        return [
            item
            for item in self.results
            if item.check.result in gate and item.check.severity.rank >= threshold.rank
        ]

    def as_json(self) -> dict[str, Any]:
        """The whole report as ``kposture scan --output json`` writes it."""
        return {
            "results": [item.as_json() for item in self.results],
            "summary": self.summary(),
        }


def scan(manifests: Sequence[Manifest], *, evaluator: evaluating.Engine) -> ScanReport:
    """Evaluate every manifest with ``evaluator``, all of them forming one inventory."""
    namespaces = {
        str((m.object.get("metadata") or {}).get("name")): m.object
        for m in manifests
        if m.object.get("kind") == "Namespace" and m.object.get("apiVersion") == "v1"
    }
    inventory = build_inventory((m.object for m in manifests), views=evaluator.inventory_views)
    results: list[ScanResult] = []
    for manifest in manifests:
        namespace = (manifest.object.get("metadata") or {}).get("namespace")
        checks = evaluator.evaluate(
            manifest.object,
            namespace_obj=namespaces.get(str(namespace)) if namespace else None,
            inventory=inventory,
        )
        results.extend(ScanResult(manifest, check) for check in checks)
    return ScanReport(tuple(results))


def build_inventory(
    objects: Iterable[Mapping[str, Any]], *, views: Iterable[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """The inventory views that cross-object checks read, from a set of objects.

    A view is named after the kind it lists, in lower camel case and plural, as the built-in
    baselines name them (``networkPolicies`` lists the NetworkPolicy objects). A view no
    scanned object belongs to is an empty list: "there is none" is exactly what those checks
    look for.
    """
    inventory: dict[str, list[Mapping[str, Any]]] = {view: [] for view in views}
    for obj in objects:
        view = view_name(str(obj.get("kind", "")))
        if view in inventory:
            inventory[view].append(obj)
    return inventory


def view_name(kind: str) -> str:
    """The inventory view listing objects of ``kind`` (``NetworkPolicy`` -> ``networkPolicies``)."""
    if not kind:
        return ""
    camel = kind[0].lower() + kind[1:]
    return plural(camel)


def plural(word: str) -> str:
    """English plural as Kubernetes resource names use it (policy -> policies, ingress -> ...es)."""
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"
