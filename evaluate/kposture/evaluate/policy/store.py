"""The policy in force: built-in baselines from settings, overridden by published documents.

Baselines and exceptions are published to the compacted baselines topic as ``PolicyDocument``
records carrying their YAML source. Every evaluator reads the whole topic and keeps the newest
document per key here; ``build`` turns them into a ``PolicySet``: one compiled ``Engine`` and
the exceptions in force.

Which baselines run: every baseline named in ``settings.evaluate.baselines`` (a built-in, or
the published document of the same name if there is one, at the version the setting pins),
plus every other published baseline at its latest version. So a fresh install runs the
built-ins with no set-up, and publishing a baseline replaces the built-in of that name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import hashlib
import pathlib
from collections.abc import Iterable, Mapping, Sequence

from kposture.evaluate.engine import evaluating
from kposture.evaluate.policy import baselines, loading, waivers
from kposture.schemas import common, policy


class PolicyError(ValueError):
    """A policy document or reference is invalid; the message says which and why."""

    retriable = False


@dataclasses.dataclass(frozen=True)
class PolicySet:
    """The compiled policy in force: the engine, the exceptions, and a fingerprint of both."""

    engine: evaluating.Engine
    waivers: tuple[waivers.Waiver, ...]
    index: Mapping[tuple[str, str], tuple[common.Severity, tuple[str, ...]]]

    @property
    def fingerprint(self) -> str:
        """Changes whenever a check changes (not when only exceptions change)."""
        return self.engine.fingerprint

    @property
    def versions(self) -> dict[str, str]:
        """The version of each baseline in force, by name."""
        return {p.baseline: p.version for p in self.engine.policies}

    def meta(self, baseline: str, check: str) -> tuple[common.Severity, tuple[str, ...]] | None:
        """``(severity, controls)`` of a check in force, ``None`` if it is not."""
        return self.index.get((baseline, check))


class PolicyStore:
    """The newest published document per key, and the built-in references from settings."""

    def __init__(self, builtin_refs: Sequence[str]) -> None:
        self._refs = tuple(builtin_refs)
        self._baselines: dict[str, baselines.Baseline] = {}
        self._waivers: dict[str, tuple[waivers.Waiver, ...]] = {}

    def apply(self, key: str, document: policy.PolicyDocument | None) -> None:
        """Take a record of the baselines topic; ``None`` (a tombstone) withdraws ``key``.

        Raises ``PolicyError`` if the document is invalid; the previous one stays in force.
        """
        kind, _, name = key.partition("/")
        if document is None:
            if kind == policy.DocumentKind.BASELINE:
                self._baselines.pop(name, None)
            elif kind == policy.DocumentKind.EXCEPTION:
                self._waivers.pop(name, None)
            return
        if document.key != key:
            raise PolicyError(f"record key {key!r} does not match document {document.key!r}")
        parsed = parse(document)
        if document.kind is policy.DocumentKind.BASELINE:
            self._baselines[name] = parsed.baselines[0]
        else:
            self._waivers[name] = parsed.waivers

    def build(self) -> PolicySet:
        """Compile the policy in force now; ``PolicyError`` if a built-in reference is unknown."""
        policies: list[baselines.Policy] = []
        named: set[str] = set()
        for ref in self._refs:
            name, version = baselines.split_ref(ref)
            named.add(name)
            try:
                source = self._baselines.get(name) or loading.builtin(name)
                policies.append(source.at(version))
            except (KeyError, ValueError) as exc:
                raise PolicyError(f"baseline reference {ref!r}: {exc}") from exc
        policies.extend(b.at(None) for n, b in sorted(self._baselines.items()) if n not in named)
        compiled = evaluating.Engine(policies)
        index = {
            (p.baseline, rule.id): (rule.check.severity, tuple(rule.check.controls))
            for p in policies
            for rule in p.rules
        }
        active = tuple(w for name in sorted(self._waivers) for w in self._waivers[name])
        return PolicySet(engine=compiled, waivers=active, index=index)


def parse(document: policy.PolicyDocument) -> loading.Documents:
    """Validate a published document with the loader; ``PolicyError`` says what is wrong.

    The source may hold other documents too (fixture tests, other baselines of the file it was
    published from); only the one the record names is taken.
    """
    if hashlib.sha256(document.source.encode()).hexdigest() != document.digest:
        raise PolicyError(f"{document.key}: digest does not match the source")
    try:
        parsed = loading.load_documents(document.source, filename=f"{document.key}@published")
    except loading.BaselineError as exc:
        raise PolicyError(f"{document.key}: {exc}") from exc
    if document.kind is policy.DocumentKind.BASELINE:
        found = [b for b in parsed.baselines if b.name == document.name]
        if not found:
            raise PolicyError(f"{document.key}: the source declares no baseline {document.name!r}")
        if found[0].version != document.version:
            raise PolicyError(
                f"{document.key}: source version {found[0].version} != {document.version}"
            )
        return loading.Documents(baselines=(found[0],))
    chosen = tuple(w for w in parsed.waivers if w.name == document.name)
    if not chosen:
        raise PolicyError(f"{document.key}: the source declares no exception {document.name!r}")
    return loading.Documents(waivers=chosen)


def documents_from_paths(
    paths: Iterable[pathlib.Path], *, publisher: str | None = None, now: dt.datetime | None = None
) -> list[policy.PolicyDocument]:
    """Validate files (or directories of ``*.yaml``) and make one document per baseline/exception.

    Each document carries its whole file as ``source``, exactly as reviewed. Raises
    ``loading.BaselineError`` (file, line, check id) when a file does not validate.
    """
    who = publisher or _user()
    when = now or common.utcnow()
    out: list[policy.PolicyDocument] = []
    for path in _files(paths):
        text = path.read_text(encoding="utf-8")
        parsed = loading.load_documents(text, filename=str(path))
        digest = hashlib.sha256(text.encode()).hexdigest()
        entries = [(policy.DocumentKind.BASELINE, b.name, b.version) for b in parsed.baselines]
        entries += [
            (policy.DocumentKind.EXCEPTION, w.name, _waiver_version(w)) for w in parsed.waivers
        ]
        out.extend(
            policy.PolicyDocument(
                kind=kind,
                name=name,
                version=version,
                source=text,
                digest=digest,
                publisher=who,
                published_at=when,
            )
            for kind, name, version in entries
        )
    return out


def _waiver_version(waiver: waivers.Waiver) -> str:
    # Exceptions carry no version of their own; the expiry is what changes between edits.
    return waiver.expires.isoformat() if waiver.expires is not None else "never"


def _files(paths: Iterable[pathlib.Path]) -> list[pathlib.Path]:
    found: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.y*ml") if p.suffix in (".yaml", ".yml")))
        else:
            found.append(path)
    return found


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"
