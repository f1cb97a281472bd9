"""The schema of policy documents: field-by-field validation that collects located problems.

``Reader`` turns the plain data of one ``yaml_lines.Document`` into model objects. Each method
returns ``None`` (and records problems) rather than raising, so one pass reports every error.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, TypeVar

from kposture.evaluate.policy import baselines, cel, waivers, yaml_lines
from kposture.schemas import common

_E = TypeVar("_E", bound=enum.StrEnum)

_CHECK_KEYS = {
    "id", "title", "severity", "controls", "description", "target", "match", "validation",
    "variants", "message", "messageExpression", "path", "minVersion", "maxVersion", "fix",
    "needs",
}  # fmt: skip
_MATCH_KEYS = {
    "apiGroups", "kinds", "namespaces", "excludedNamespaces", "namespaceSelector",
    "objectSelector",
}  # fmt: skip
_RESULTS = {result.value: result for result in common.Result}


class Reader:
    """Validates documents of one file; ``document`` is the one being read."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.document = yaml_lines.Document(data=None, lines={}, styles={}, line=0)
        self.problems: list[yaml_lines.Problem] = []
        self._check_id: str | None = None

    def problem(self, path: yaml_lines.Path, message: str, *, line_offset: int = 0) -> None:
        """Record a problem at the line of ``path`` in the current document."""
        line = self.document.line_of(path) + line_offset
        self.problems.append(yaml_lines.Problem(self.filename, line, message, self._check_id))

    def raise_if_problems(self) -> None:
        """Raise ``BaselineError`` with every recorded problem, if there is any."""
        if self.problems:
            raise yaml_lines.BaselineError(sorted(self.problems, key=lambda p: p.line))

    # -- documents -------------------------------------------------------------------------

    def baseline(self, data: dict[str, Any]) -> tuple[baselines.Baseline, tuple[str, ...]] | None:
        """A ``Baseline`` document and the names it extends."""
        required = {"apiVersion", "kind", "name", "version"}
        if not self.keys((), data, required, {"description", "extends", "checks"}):
            return None
        name = self.string(("name",), data["name"])
        version = self.string(("version",), data["version"])
        self.version(("version",), version)
        checks: list[baselines.Check] = []
        seen: set[str] = set()
        raw_checks = data.get("checks", [])
        if not isinstance(raw_checks, list):
            self.problem(("checks",), "checks must be a list")
            raw_checks = []
        for index, raw in enumerate(raw_checks):
            check = self.check(("checks", index), raw)
            # Duplicates are found on the raw id, so an invalid check still claims its id.
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(raw_id, str) and raw_id in seen:
                self.problem(("checks", index, "id"), f"duplicate check id {raw_id!r}")
            if isinstance(raw_id, str):
                seen.add(raw_id)
            self._check_id = None
            if check is not None:
                checks.append(check)
        baseline = baselines.Baseline(
            name=name,
            version=version,
            description=self.string(("description",), data.get("description", "")),
            checks=tuple(checks),
        )
        return baseline, self.strings(("extends",), data.get("extends", []))

    def check(self, path: yaml_lines.Path, data: Any) -> baselines.Check | None:
        """One check of a baseline."""
        if not isinstance(data, dict):
            self.problem(path, "a check must be a mapping")
            return None
        self._check_id = data.get("id") if isinstance(data.get("id"), str) else None
        required = {"id", "title", "severity", "message"}
        if not self.keys(path, data, required, _CHECK_KEYS - required):
            return None
        if ("validation" in data) == ("variants" in data):
            self.problem(path, "a check needs exactly one of validation or variants")
            return None
        variants = self.variants(path, data)
        severity = self.enum((*path, "severity"), data["severity"], baselines.Severity)
        target = self.enum((*path, "target"), data.get("target", "object"), baselines.Target)
        message_expression = data.get("messageExpression")
        if message_expression is not None:
            self.cel((*path, "messageExpression"), message_expression)
        if severity is None or target is None or variants is None:
            return None
        return baselines.Check(
            id=self.string((*path, "id"), data["id"]),
            title=self.string((*path, "title"), data["title"]),
            severity=severity,
            controls=self.strings((*path, "controls"), data.get("controls", [])),
            variants=variants,
            message=self.string((*path, "message"), data["message"]),
            path=self.string((*path, "path"), data.get("path", "")),
            description=self.string((*path, "description"), data.get("description", "")),
            target=target,
            match=self.match((*path, "match"), data.get("match", {})),
            message_expression=message_expression,
            min_version=self.version((*path, "minVersion"), data.get("minVersion")),
            max_version=self.version((*path, "maxVersion"), data.get("maxVersion")),
            fix=self.fix((*path, "fix"), data.get("fix")),
            needs=self.strings((*path, "needs"), data.get("needs", [])),
        )

    def variants(
        self, path: yaml_lines.Path, data: dict[str, Any]
    ) -> tuple[baselines.Variant, ...] | None:
        """The version variants of a check (a plain ``validation`` is one variant from v0.0)."""
        if "validation" in data:
            source = self.cel((*path, "validation"), data["validation"])
            return (baselines.Variant(baselines.Version(0, 0), source),)
        raw = data["variants"]
        if not isinstance(raw, list) or not raw:
            self.problem((*path, "variants"), "variants must be a non-empty list")
            return None
        result: list[baselines.Variant] = []
        for index, item in enumerate(raw):
            where = (*path, "variants", index)
            optional = {"message", "messageExpression"}
            if not isinstance(item, dict) or not self.keys(
                where, item, {"minVersion", "validation"}, optional
            ):
                continue
            version = self.version((*where, "minVersion"), item["minVersion"])
            expression = item.get("messageExpression")
            if expression is not None:
                self.cel((*where, "messageExpression"), expression)
            message = item.get("message")
            result.append(
                baselines.Variant(
                    min_version=version or baselines.Version(0, 0),
                    validation=self.cel((*where, "validation"), item["validation"]),
                    message=self.string((*where, "message"), message) if message else None,
                    message_expression=expression,
                )
            )
        versions = [variant.min_version for variant in result]
        if len(set(versions)) != len(versions):
            self.problem((*path, "variants"), "two variants start at the same minVersion")
        return tuple(result)

    def match(self, path: yaml_lines.Path, data: Any) -> baselines.Match:
        """A check's ``match`` block."""
        if not isinstance(data, dict) or not self.keys(path, data, set(), _MATCH_KEYS):
            return baselines.Match()
        return baselines.Match(
            api_groups=self.strings((*path, "apiGroups"), data.get("apiGroups", [])),
            kinds=self.strings((*path, "kinds"), data.get("kinds", [])),
            namespaces=self.strings((*path, "namespaces"), data.get("namespaces", [])),
            excluded_namespaces=self.strings(
                (*path, "excludedNamespaces"), data.get("excludedNamespaces", [])
            ),
            namespace_selector=self.selector(
                (*path, "namespaceSelector"), data.get("namespaceSelector")
            ),
            object_selector=self.selector((*path, "objectSelector"), data.get("objectSelector")),
        )

    def selector(self, path: yaml_lines.Path, data: Any) -> baselines.LabelSelector | None:
        """A label selector, or ``None`` when absent."""
        if data is None:
            return None
        if not isinstance(data, dict) or not self.keys(
            path, data, set(), {"matchLabels", "matchExpressions"}
        ):
            return None
        labels = data.get("matchLabels", {})
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            self.problem((*path, "matchLabels"), "matchLabels must map strings to strings")
            labels = {}
        expressions: list[tuple[str, str, tuple[str, ...]]] = []
        for index, item in enumerate(data.get("matchExpressions", [])):
            where = (*path, "matchExpressions", index)
            if not isinstance(item, dict) or not self.keys(
                where, item, {"key", "operator"}, {"values"}
            ):
                continue
            operator = item["operator"]
            if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
                self.problem((*where, "operator"), f"unknown selector operator {operator!r}")
            values = self.strings((*where, "values"), item.get("values", []))
            expressions.append((self.string((*where, "key"), item["key"]), operator, values))
        return baselines.LabelSelector(dict(labels), tuple(expressions))

    def fix(self, path: yaml_lines.Path, data: Any) -> baselines.Fix | None:
        """A check's optional ``fix``."""
        if data is None:
            return None
        if not isinstance(data, dict) or not self.keys(
            path, data, {"patch", "risk"}, {"description"}
        ):
            return None
        risk = self.enum((*path, "risk"), data["risk"], baselines.Risk)
        if not isinstance(data["patch"], dict):
            self.problem((*path, "patch"), "patch must be a mapping (an apply-patch template)")
            return None
        if risk is None:
            return None
        description = self.string((*path, "description"), data.get("description", ""))
        return baselines.Fix(patch=data["patch"], risk=risk, description=description)

    def waiver(self, data: dict[str, Any]) -> waivers.Waiver | None:
        """An ``Exception`` document."""
        required = {"apiVersion", "kind", "name", "scope", "checks", "reason", "owner", "expires"}
        if not self.keys((), data, required, {"ticket"}):
            return None
        scope = data["scope"]
        scope_keys = {"clusters", "namespaces", "kinds", "names", "objectSelector"}
        if not isinstance(scope, dict) or not self.keys(("scope",), scope, set(), scope_keys):
            return None
        return waivers.Waiver(
            name=self.string(("name",), data["name"]),
            scope=waivers.Scope(
                clusters=self.strings(("scope", "clusters"), scope.get("clusters", [])),
                namespaces=self.strings(("scope", "namespaces"), scope.get("namespaces", [])),
                kinds=self.strings(("scope", "kinds"), scope.get("kinds", [])),
                names=self.strings(("scope", "names"), scope.get("names", [])),
                object_selector=self.selector(
                    ("scope", "objectSelector"), scope.get("objectSelector")
                ),
            ),
            checks=self.strings(("checks",), data["checks"]),
            reason=self.string(("reason",), data["reason"]),
            owner=self.string(("owner",), data["owner"]),
            ticket=self.string(("ticket",), data.get("ticket", "")),
            expires=self.expiry(("expires",), data["expires"]),
        )

    def suite(self, data: dict[str, Any]) -> baselines.FixtureSuite | None:
        """A ``BaselineTest`` document: objects with the expected result per check."""
        if not self.keys((), data, {"apiVersion", "kind", "baseline", "cases"}, set()):
            return None
        cases: list[baselines.FixtureCase] = []
        for index, item in enumerate(data["cases"] if isinstance(data["cases"], list) else []):
            where: yaml_lines.Path = ("cases", index)
            if not isinstance(item, dict) or not self.keys(
                where, item, {"name", "object", "expect"}, {"namespaceObject", "inventory"}
            ):
                continue
            expect: dict[str, common.Result] = {}
            raw_expect = item["expect"] if isinstance(item["expect"], dict) else {}
            for check_id, value in raw_expect.items():
                if value not in _RESULTS:
                    self.problem((*where, "expect", check_id), f"unknown result {value!r}")
                    continue
                expect[str(check_id)] = _RESULTS[value]
            cases.append(
                baselines.FixtureCase(
                    name=self.string((*where, "name"), item["name"]),
                    object=item["object"],
                    expect=expect,
                    namespace_object=item.get("namespaceObject"),
                    inventory=item.get("inventory"),
                    line=self.document.line_of(where),
                )
            )
        baseline = self.string(("baseline",), data["baseline"])
        return baselines.FixtureSuite(baseline=baseline, cases=tuple(cases), file=self.filename)

    # -- fields ----------------------------------------------------------------------------

    def keys(
        self, path: yaml_lines.Path, data: dict[str, Any], required: set[str], optional: set[str]
    ) -> bool:
        """Report missing and unknown keys; true when every required key is present."""
        complete = True
        for key in sorted(required - data.keys()):
            self.problem(path, f"missing required field {key!r}")
            complete = False
        for key in data.keys() - required - optional:
            self.problem((*path, key), f"unknown field {key!r}")
        return complete

    def string(self, path: yaml_lines.Path, value: Any) -> str:
        """A string field ("" and a problem when it is not one)."""
        if not isinstance(value, str):
            self.problem(path, f"{_name(path)} must be a string, not {type(value).__name__}")
            return ""
        return value

    def strings(self, path: yaml_lines.Path, value: Any) -> tuple[str, ...]:
        """A list of strings."""
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problem(path, f"{_name(path)} must be a list of strings")
            return ()
        return tuple(value)

    def enum(self, path: yaml_lines.Path, value: Any, kind: type[_E]) -> _E | None:
        """One value of a string enum."""
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            self.problem(path, f"{_name(path)} must be one of {allowed}, not {value!r}")
            return None

    def version(self, path: yaml_lines.Path, value: Any) -> baselines.Version | None:
        """An optional policy version (``v1.25``)."""
        if value is None:
            return None
        try:
            return baselines.Version.parse(str(value))
        except ValueError as exc:
            self.problem(path, f"{_name(path)}: {exc}")
            return None

    def expiry(self, path: yaml_lines.Path, value: Any) -> dt.datetime | None:
        """An RFC 3339 time with an offset, or ``never``."""
        if value == "never":
            return None
        if isinstance(value, dt.datetime):  # YAML timestamps arrive already parsed
            parsed = value
        else:
            try:
                parsed = dt.datetime.fromisoformat(str(value))
            except ValueError:
                self.problem(path, f"expires must be an RFC 3339 time or 'never', not {value!r}")
                return None
        if parsed.tzinfo is None:
            self.problem(path, "expires needs a UTC offset (for example 2025-01-31T00:00:00Z)")
            return None
        return parsed

    def cel(self, path: yaml_lines.Path, value: Any) -> str:
        """A CEL expression that must compile and read only the known variables."""
        source = self.string(path, value)
        if not source:
            return source
        try:
            cel.compile(source, variables=baselines.CEL_VARIABLES)
        except cel.CelSyntaxError as exc:
            line = getattr(exc, "line", 1) or 1
            column = getattr(exc, "column", 0)
            # In a block scalar (| or >) the expression starts on the line after the indicator.
            offset = line - 1 + (1 if self.document.styles.get(path) in ("|", ">") else 0)
            detail = getattr(exc, "message", None) or str(exc)
            self.problem(path, f"{_name(path)}: {detail} at column {column}", line_offset=offset)
        return source


def _name(path: yaml_lines.Path) -> str:
    return str(path[-1]) if path else "document"
