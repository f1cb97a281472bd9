"""Rendering a scan report: JSON, a terminal table, SARIF 2.1.0 and JUnit XML.

Each format is a pure function of a ``scanning.ScanReport`` that returns text (or, for the
table, a rich renderable the CLI prints), so CI systems get what they already understand:
SARIF for code-scanning annotations, JUnit for test dashboards, JSON for everything else.
"""

from __future__ import annotations

import enum
import importlib.metadata
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from rich import console, table, text

from kposture.evaluate.scan import scanning
from kposture.schemas import common


class Format(enum.StrEnum):
    """The output formats of ``kposture scan``."""

    TABLE = "table"
    JSON = "json"
    SARIF = "sarif"
    JUNIT = "junit"


def render(report: scanning.ScanReport, fmt: Format) -> str | console.RenderableType:
    """The report in ``fmt``: text for the machine formats, a renderable for the table."""
    if fmt is Format.JSON:
        return to_json(report)
    if fmt is Format.SARIF:
        return to_sarif(report)
    if fmt is Format.JUNIT:
        return to_junit(report)
    return to_table(report)


def to_json(report: scanning.ScanReport) -> str:
    """``{"results": [...], "summary": {...}}`` as documented for ``kposture scan``."""
    return json.dumps(report.as_json(), indent=2)


# -- table -------------------------------------------------------------------------------------

_SEVERITY_STYLES = {
    common.Severity.CRITICAL: "bold red",
    common.Severity.HIGH: "red",
    common.Severity.MEDIUM: "yellow",
    common.Severity.LOW: "cyan",
    common.Severity.INFO: "dim",
}
_SHOWN = (common.Result.FAIL, common.Result.ERROR)


def to_table(report: scanning.ScanReport) -> console.RenderableType:
    """Failures and errors grouped by object, most severe first, then a summary line."""
    parts: list[console.RenderableType] = []
    for (file, line, ref), items in _by_object(report):
        shown = [item for item in items if item.check.result in _SHOWN]
        if not shown:
            continue
        shown.sort(key=lambda item: -item.check.severity.rank)
        where = f"{ref['namespace']}/" if ref["namespace"] else ""
        grid = table.Table(
            title=f"{ref['kind']} {where}{ref['name']}  ({file}:{line})",
            title_justify="left",
            expand=False,
        )
        grid.add_column("severity", no_wrap=True)
        grid.add_column("check", overflow="fold", ratio=2)
        grid.add_column("message", overflow="fold", ratio=3)
        grid.add_column("path", overflow="fold", ratio=2)
        for item in shown:
            check = item.check
            # Errors are rare and must not read as failures: say so next to the check.
            erred = " (error)" if check.result is common.Result.ERROR else ""
            grid.add_row(
                text.Text(str(check.severity), style=_SEVERITY_STYLES[check.severity]),
                f"{check.baseline}/{check.check_id}{erred}",
                check.message,
                check.path,
            )
        parts.append(grid)
    counts = report.summary()
    parts.append(
        text.Text(
            f"{counts['fail']} failed, {counts['error']} errors, {counts['pass']} passed, "
            f"{counts['skip']} skipped"
        )
    )
    return console.Group(*parts)


def _by_object(
    report: scanning.ScanReport,
) -> Iterator[tuple[tuple[str, int, dict[str, Any]], list[scanning.ScanResult]]]:
    # Results of one object are adjacent (``scan`` evaluates object by object).
    current: scanning.Manifest | None = None
    group: list[scanning.ScanResult] = []
    for item in report.results:
        if item.manifest is not current:
            if current is not None:
                yield (current.file, current.line, current.ref), group
            current, group = item.manifest, []
        group.append(item)
    if current is not None:
        yield (current.file, current.line, current.ref), group


# -- SARIF -------------------------------------------------------------------------------------

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

_LEVELS = {
    common.Severity.CRITICAL: "error",
    common.Severity.HIGH: "error",
    common.Severity.MEDIUM: "warning",
    common.Severity.LOW: "note",
    common.Severity.INFO: "note",
}
# GitHub code scanning ranks security alerts by this CVSS-like number.
_SECURITY_SEVERITY = {
    common.Severity.CRITICAL: "9.5",
    common.Severity.HIGH: "8.0",
    common.Severity.MEDIUM: "5.5",
    common.Severity.LOW: "3.0",
    common.Severity.INFO: "0.0",
}


def to_sarif(report: scanning.ScanReport) -> str:
    """One SARIF 2.1.0 run: a rule per check, a result per failing (or erroring) check."""
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    results: list[dict[str, Any]] = []
    for item in report.results:
        check = item.check
        rule_id = f"{check.baseline}/{check.check_id}"
        if rule_id not in index:
            index[rule_id] = len(rules)
            rules.append(
                {
                    "id": rule_id,
                    "name": check.check_id,
                    "shortDescription": {"text": check.title or check.check_id},
                    "defaultConfiguration": {"level": _LEVELS[check.severity]},
                    "properties": {
                        "tags": ["security", *check.controls],
                        "security-severity": _SECURITY_SEVERITY[check.severity],
                    },
                }
            )
        if check.result not in _SHOWN:
            continue
        failed = check.result is common.Result.FAIL
        ref = item.manifest.ref
        results.append(
            {
                "ruleId": rule_id,
                "ruleIndex": index[rule_id],
                # SARIF: only a "fail" result has a level; "could not evaluate" needs review.
                "kind": "fail" if failed else "review",
                "level": _LEVELS[check.severity] if failed else "none",
                "message": {"text": check.message or check.title},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _uri(item.manifest.file)},
                            "region": {"startLine": max(item.line, 1)},
                        },
                        "logicalLocations": [
                            {
                                "fullyQualifiedName": "/".join(
                                    filter(None, (ref["namespace"], ref["kind"], ref["name"]))
                                ),
                                "kind": "object",
                            }
                        ],
                    }
                ],
                "properties": {"path": check.path, "baselineVersion": check.baseline_version},
            }
        )
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "kposture",
                        "version": _version(),
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2)


def _uri(file: str) -> str:
    # A relative URI reference, as code-scanning tools resolve them against the checkout.
    if file == "-":
        return "stdin"
    return file.replace("\\", "/").removeprefix("./")


def _version() -> str:
    try:
        return importlib.metadata.version("kposture")
    except importlib.metadata.PackageNotFoundError:
        return "0"


# -- JUnit -------------------------------------------------------------------------------------


def to_junit(report: scanning.ScanReport) -> str:
    """One ``testsuite`` per baseline, one ``testcase`` per object and check."""
    suites: dict[str, list[scanning.ScanResult]] = {}
    for item in report.results:
        suites.setdefault(f"{item.check.baseline}@{item.check.baseline_version}", []).append(item)
    root = ET.Element("testsuites", name="kposture scan")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for name, items in suites.items():
        suite = ET.SubElement(root, "testsuite", name=name)
        counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
        for item in items:
            check = item.check
            ref = item.manifest.ref
            where = f"{ref['namespace']}/" if ref["namespace"] else ""
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{item.manifest.file}:{ref['kind']}/{where}{ref['name']}",
                name=check.check_id,
                file=item.manifest.file,
                line=str(item.line),
            )
            counts["tests"] += 1
            detail = f"{check.message}\npath: {check.path}" if check.path else check.message
            if check.result is common.Result.FAIL:
                counts["failures"] += 1
                failure = ET.SubElement(
                    case, "failure", message=check.message, type=str(check.severity)
                )
                failure.text = detail
            elif check.result is common.Result.ERROR:
                counts["errors"] += 1
                error = ET.SubElement(case, "error", message=check.message, type="error")
                error.text = detail
            elif check.result is common.Result.SKIP:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=check.message)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
