"""The baseline model: what a baseline, a check and a fix are, and how versions select rules.

A ``Baseline`` is what an author writes (and ``loading`` parses): checks whose rules may change
with the policy version. ``Baseline.at(version)`` resolves it into a ``Policy``, the flat list of
``Rule`` objects that hold for one version and that the engine compiles. Everything here is
frozen data; nothing compiles or evaluates CEL.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

from kposture.schemas import common, findings

Severity = common.Severity
Risk = findings.Risk

CEL_VARIABLES = ("object", "namespaceObject", "inventory")
"""What a check's CEL may read: the object (or Pod view), its namespace, and for cross-object
checks the ``inventory`` views it declares in ``needs``."""

_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)$")


@dataclasses.dataclass(frozen=True, order=True)
class Version:
    """A policy version such as ``v1.25`` (ordered by major, then minor)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``v<major>.<minor>``; raise ``ValueError`` on anything else."""
        found = _VERSION_RE.match(text)
        if found is None:
            raise ValueError(f"not a version (expected v<major>.<minor>): {text!r}")
        return cls(int(found.group(1)), int(found.group(2)))

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}"


class Target(enum.StrEnum):
    """What a check's ``object`` is."""

    OBJECT = "object"  # the matched object itself
    # A Pod-shaped view of every pod spec: Pods and the templates of the workload controllers.
    POD_SPEC = "podSpec"


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions``)."""

    match_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Each expression is (key, operator In|NotIn|Exists|DoesNotExist, values).
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement of the selector."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


@dataclasses.dataclass(frozen=True)
class Match:
    """Which objects a check applies to; empty tuples mean "no restriction".

    For ``podSpec`` checks, ``kinds`` narrows the pod-bearing kinds (all of them by default).
    ``namespaces`` and ``excluded_namespaces`` hold exact names; an object that a check's match
    rejects gets a ``skip`` result.
    """

    api_groups: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    excluded_namespaces: tuple[str, ...] = ()
    namespace_selector: LabelSelector | None = None
    object_selector: LabelSelector | None = None


@dataclasses.dataclass(frozen=True)
class Fix:
    """A mechanical fix: an apply-patch template and how risky applying it is.

    ``patch`` is a partial object (as for server-side apply) whose strings may hold ``{{ name }}``
    placeholders, filled by ``render_patch``. For ``podSpec`` checks the patch is written
    against the Pod view (``metadata``/``spec``); ``workloads.reroot`` moves it under the
    template of the real object.
    """

    patch: Mapping[str, Any]
    risk: Risk
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Variant:
    """The rule of a check from ``min_version`` on (until the next variant starts)."""

    min_version: Version
    validation: str
    message: str | None = None
    message_expression: str | None = None


@dataclasses.dataclass(frozen=True)
class Check:
    """One check as written: metadata plus one or more version variants of its rule.

    ``min_version``/``max_version`` bound the policy versions the check exists in (inclusive).
    ``needs`` names inventory views (for example ``networkPolicies``) that a cross-object check
    reads as ``inventory.<view>``, each a list of objects kept by the caller from its state;
    single-object checks need none.
    """

    id: str
    title: str
    severity: Severity
    controls: tuple[str, ...]
    variants: tuple[Variant, ...]
    message: str
    path: str = ""
    description: str = ""
    target: Target = Target.OBJECT
    match: Match = dataclasses.field(default_factory=Match)
    message_expression: str | None = None
    min_version: Version | None = None
    max_version: Version | None = None
    fix: Fix | None = None
    needs: tuple[str, ...] = ()

    def variant_at(self, version: Version) -> Variant | None:
        """The variant in force at ``version``, or ``None`` if the check does not exist then."""
        if self.min_version is not None and version < self.min_version:
            return None
        if self.max_version is not None and version > self.max_version:
            return None
        chosen: Variant | None = None
        for variant in self.variants:
            if variant.min_version <= version and (
                chosen is None or variant.min_version >= chosen.min_version
            ):
                chosen = variant
        return chosen


@dataclasses.dataclass(frozen=True)
class Rule:
    """A check resolved for one policy version: exactly one validation expression."""

    check: Check
    validation: str
    message: str
    message_expression: str | None

    @property
    def id(self) -> str:
        """The check id."""
        return self.check.id


@dataclasses.dataclass(frozen=True)
class Policy:
    """A baseline resolved at one version: the rules the engine runs."""

    baseline: str
    version: str
    rules: tuple[Rule, ...]

    @property
    def ref(self) -> str:
        """``<baseline>@<version>``, as accepted by ``Baseline.at`` and the CLI."""
        return f"{self.baseline}@{self.version}"


@dataclasses.dataclass(frozen=True)
class FixtureCase:
    """One declared test of a baseline: an object and the expected result per check id."""

    name: str
    object: Mapping[str, Any]
    expect: Mapping[str, common.Result]
    namespace_object: Mapping[str, Any] | None = None
    inventory: Mapping[str, Any] | None = None
    line: int = 0


@dataclasses.dataclass(frozen=True)
class FixtureSuite:
    """The fixture tests of one baseline reference (``name`` or ``name@version``)."""

    baseline: str
    cases: tuple[FixtureCase, ...]
    file: str = ""


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A named, versioned set of checks.

    ``version`` is the newest policy version the baseline describes; it is what "no version"
    selects. Versions newer than it evaluate with its rules, as upstream Pod Security Admission
    treats future versions as "latest".
    """

    name: str
    version: str
    description: str
    checks: tuple[Check, ...]

    def at(self, version: str | None = None) -> Policy:
        """Resolve the rules in force at ``version`` (``None``/``"latest"``: the newest)."""
        newest = Version.parse(self.version)
        wanted = newest if version in (None, "latest") else Version.parse(str(version))
        effective = min(wanted, newest)
        rules: list[Rule] = []
        for check in self.checks:
            variant = check.variant_at(effective)
            if variant is None:
                continue
            rules.append(
                Rule(
                    check=check,
                    validation=variant.validation,
                    message=variant.message if variant.message is not None else check.message,
                    message_expression=(
                        variant.message_expression
                        if variant.message_expression is not None
                        else check.message_expression
                    ),
                )
            )
        return Policy(baseline=self.name, version=str(effective), rules=tuple(rules))


def split_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name@v1.25`` into ``("name", "v1.25")``; a bare name gives ``(name, None)``."""
    name, _, version = ref.partition("@")
    return name, (version or None)


def render_patch(template: Any, values: Mapping[str, str]) -> Any:
    """Copy a fix's patch template, replacing ``{{ key }}`` in strings with ``values[key]``.

    Deliberately not a template language (no expressions, no loops): a fix is a fixed shape,
    and the placeholders only name the object (``name``, ``namespace``, ``container``...).
    Unknown placeholders raise ``KeyError`` so a broken fix never applies half-filled.
    """
    if isinstance(template, str):
        return _PLACEHOLDER_RE.sub(lambda found: values[found.group(1)], template)
    if isinstance(template, Mapping):
        return {key: render_patch(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render_patch(item, values) for item in template]
    return template


_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
