"""Loading policy documents: strict validation of YAML into baselines, exceptions and fixtures.

Three document kinds share one file format (``apiVersion: kposture.io/v1``): ``Baseline``,
``Exception`` and ``BaselineTest``. Validation is strict (unknown keys, wrong types, bad enum
values, duplicate check ids, CEL that does not compile are all errors) and collects every
problem before raising ``yaml_lines.BaselineError``, so one lint run shows them all.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import pathlib
from collections.abc import Callable

from kposture.evaluate.policy import baselines, schema, waivers, yaml_lines

API_VERSION = "kposture.io/v1"
BaselineError = yaml_lines.BaselineError


# Aliases: inside ``Documents`` the field names shadow the module names.
_Baselines = tuple[baselines.Baseline, ...]
_Waivers = tuple[waivers.Waiver, ...]
_Suites = tuple[baselines.FixtureSuite, ...]


@dataclasses.dataclass(frozen=True)
class Documents:
    """Everything one file (or text) declared."""

    baselines: _Baselines = ()
    waivers: _Waivers = ()
    suites: _Suites = ()


def load_documents(
    source: str | pathlib.Path,
    *,
    filename: str | None = None,
    known: tuple[baselines.Baseline, ...] | None = None,
) -> Documents:
    """Parse and validate every document of a file (``Path``) or of YAML text (``str``).

    ``filename`` names the source in errors (default: the file's name, or ``<string>``).
    ``extends`` resolves against the baselines of the same source first, then against
    ``known`` (default: the built-in baselines).
    """
    if isinstance(source, pathlib.Path):
        text = source.read_text(encoding="utf-8")
        filename = filename or source.name
    else:
        text = source
        filename = filename or "<string>"
    reader = schema.Reader(filename)
    found_baselines: list[tuple[baselines.Baseline, tuple[str, ...], yaml_lines.Document]] = []
    found_waivers: list[waivers.Waiver] = []
    suites: list[baselines.FixtureSuite] = []
    for document in yaml_lines.parse(text, filename=filename):
        reader.document = document
        data = document.data
        if not isinstance(data, dict):
            reader.problem((), "a document must be a mapping with apiVersion and kind")
            continue
        if data.get("apiVersion") != API_VERSION:
            reader.problem(("apiVersion",), f"apiVersion must be {API_VERSION!r}")
        kind = data.get("kind")
        if kind == "Baseline":
            parsed = reader.baseline(data)
            if parsed is not None:
                found_baselines.append((*parsed, document))
        elif kind == "Exception":
            waiver = reader.waiver(data)
            if waiver is not None:
                found_waivers.append(waiver)
        elif kind == "BaselineTest":
            suite = reader.suite(data)
            if suite is not None:
                suites.append(suite)
        else:
            reader.problem(("kind",), "kind must be Baseline, Exception or BaselineTest")
    if known is not None:
        pool = {baseline.name: baseline for baseline in known}
        resolved = _resolve_extends(found_baselines, reader, pool.get)
    else:
        resolved = _resolve_extends(found_baselines, reader, _builtin_or_none)
    reader.raise_if_problems()
    return Documents(tuple(resolved), tuple(found_waivers), tuple(suites))


def _resolve_extends(
    found: list[tuple[baselines.Baseline, tuple[str, ...], yaml_lines.Document]],
    reader: schema.Reader,
    lookup: Callable[[str], baselines.Baseline | None],
) -> list[baselines.Baseline]:
    # A baseline that extends another holds the parent's checks first, then its own, as
    # upstream "restricted" is "baseline" plus the restricted checks.
    local = {baseline.name: baseline for baseline, _, _ in found}
    result: list[baselines.Baseline] = []
    for baseline, parents, document in found:
        reader.document = document
        checks: list[baselines.Check] = []
        for parent_name in parents:
            parent = local.get(parent_name)
            if parent is None and parent_name != baseline.name:
                parent = lookup(parent_name)
            if parent is None:
                reader.problem(("extends",), f"extends unknown baseline {parent_name!r}")
                continue
            checks.extend(parent.checks)
        own_ids = {check.id for check in baseline.checks}
        for check in checks:
            if check.id in own_ids:
                reader.problem(("checks",), f"check {check.id!r} is also defined by a parent")
        result.append(dataclasses.replace(baseline, checks=(*checks, *baseline.checks)))
    return result


BUILTIN_PACKAGE = "kposture.evaluate"


def builtin_names() -> tuple[str, ...]:
    """The names of the built-in baselines shipped as package data."""
    folder = importlib.resources.files(BUILTIN_PACKAGE).joinpath("builtin")
    return tuple(
        sorted(
            entry.name.removesuffix(".yaml")
            for entry in folder.iterdir()
            if entry.name.endswith(".yaml") and not entry.name.endswith(".tests.yaml")
        )
    )


@functools.cache
def builtin(name: str) -> baselines.Baseline:
    """A built-in baseline by name (parsed once per process; the data is immutable)."""
    if name not in builtin_names():
        raise KeyError(f"no built-in baseline {name!r} (have: {', '.join(builtin_names())})")
    resource = importlib.resources.files(BUILTIN_PACKAGE).joinpath("builtin", f"{name}.yaml")
    text = resource.read_text(encoding="utf-8")
    documents = load_documents(text, filename=f"{name}.yaml")
    return next(b for b in documents.baselines if b.name == name)


def builtin_path(name: str) -> pathlib.Path:
    """The file of a built-in baseline, for ``run_fixture_tests`` and ``kposture baseline``."""
    resource = importlib.resources.files(BUILTIN_PACKAGE).joinpath("builtin", f"{name}.yaml")
    return pathlib.Path(str(resource))


def _builtin_or_none(name: str) -> baselines.Baseline | None:
    # Loaded lazily, by name, so built-ins may extend built-ins without loading each other
    # in a circle.
    return builtin(name) if name in builtin_names() else None


def policy(ref: str) -> baselines.Policy:
    """Resolve a built-in reference such as ``pss-restricted@v1.25`` (no version: latest)."""
    name, version = baselines.split_ref(ref)
    return builtin(name).at(version)
