"""Field paths inside Kubernetes objects: leaves of a patch, pre-images, pointers, owners (pure).

A path is a tuple of segments; a segment is a map key, or a ``(key, value)`` selector of one
element of a list merged by key (containers are merged by ``name`` under server-side apply, so
``containers[name=app]`` names the same container wherever it sits in the list). Paths print as
``spec.template.spec.containers[name=app].securityContext.privileged`` and parse back, so the
pre-image in an audit event is enough to roll an action back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

Selector = tuple[str, str]
Segment = str | Selector
Path = tuple[Segment, ...]

MERGE_KEYED_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})
"""Lists that server-side apply merges by their elements' ``name`` (not replaced whole)."""

_IDENTITY = frozenset({"apiVersion", "kind"})
_IDENTITY_METADATA = frozenset({"name", "namespace", "uid", "resourceVersion"})
_SELECTOR_RE = re.compile(r"^(?P<key>[^\[\]]+)\[(?P<field>[A-Za-z]+)=(?P<value>[^\]]*)\]$")


def render(path: Path) -> str:
    """``spec.containers[name=app].securityContext`` for a path (keys holding dots are quoted)."""
    parts: list[str] = []
    for segment in path:
        if isinstance(segment, tuple):
            parts[-1] = f"{parts[-1]}[{segment[0]}={segment[1]}]"
        elif "." in segment or "[" in segment or '"' in segment:
            parts.append(json.dumps(segment))
        else:
            parts.append(segment)
    return ".".join(parts)


def parse(text: str) -> Path:
    """The path that :func:`render` printed as ``text``."""
    out: list[Segment] = []
    for part in _split(text):
        if part.startswith('"'):
            out.append(json.loads(part))
            continue
        match = _SELECTOR_RE.match(part)
        if match:
            out.extend([match["key"], (match["field"], match["value"])])
        else:
            out.append(part)
    return tuple(out)


def _split(text: str) -> Iterator[str]:
    current, quoted = "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "." and not quoted:
            yield current
            current = ""
        else:
            current += char
    if current:
        yield current


def leaves(patch: Mapping[str, Any]) -> list[tuple[Path, Any]]:
    """Every value the apply patch sets, with its path; identity fields are left out."""
    out: list[tuple[Path, Any]] = []
    for key, value in patch.items():
        if key in _IDENTITY:
            continue
        if key == "metadata" and isinstance(value, Mapping):
            rest = {k: v for k, v in value.items() if k not in _IDENTITY_METADATA}
            if rest:
                _walk(rest, ("metadata",), out)
        else:
            _walk(value, (key,), out)
    return out


def _walk(value: Any, path: Path, out: list[tuple[Path, Any]]) -> None:
    if isinstance(value, Mapping) and value:
        for key, child in value.items():
            _walk(child, (*path, key), out)
    elif path and path[-1] in MERGE_KEYED_LISTS and isinstance(value, list):
        for item in value:
            selector: Selector = ("name", str(item["name"]))
            rest = {k: v for k, v in item.items() if k != "name"}
            _walk(rest, (*path, selector), out)
    else:
        out.append((path, value))


def get(obj: Any, path: Path) -> tuple[bool, Any]:
    """``(True, value)`` when ``path`` exists in ``obj``, else ``(False, None)``."""
    node = obj
    for segment in path:
        if isinstance(segment, tuple):
            if not isinstance(node, list):
                return False, None
            found = [i for i in node if isinstance(i, Mapping) and i.get(segment[0]) == segment[1]]
            if not found:
                return False, None
            node = found[0]
        elif isinstance(node, Mapping) and segment in node:
            node = node[segment]
        else:
            return False, None
    return True, node


def shallowest_missing(obj: Any, path: Path) -> Path | None:
    """The shortest prefix of ``path`` missing from ``obj``, or None when all of it exists."""
    for end in range(1, len(path) + 1):
        if not get(obj, path[:end])[0]:
            return path[:end]
    return None


def pointer(obj: Any, path: Path) -> str:
    """The JSON Pointer (RFC 6901) of ``path`` in ``obj``, selectors resolved to indices.

    Raises ``KeyError`` when a selected list element does not exist.
    """
    node, tokens = obj, []
    for segment in path:
        if isinstance(segment, tuple):
            index = next(
                (
                    i
                    for i, item in enumerate(node if isinstance(node, list) else ())
                    if isinstance(item, Mapping) and item.get(segment[0]) == segment[1]
                ),
                None,
            )
            if index is None:
                raise KeyError(f"no element with {segment[0]}={segment[1]}")
            tokens.append(str(index))
            node = node[index]
        else:
            tokens.append(segment.replace("~", "~0").replace("/", "~1"))
            node = node.get(segment) if isinstance(node, Mapping) else None
    return "/" + "/".join(tokens)


def owners(managed_fields: Sequence[Mapping[str, Any]] | None, path: Path) -> list[str]:
    """The field managers whose ``managedFields`` entry owns the field at ``path``.

    Each name is ``manager (Operation)``, for example ``argocd-controller (Apply)``.
    """
    found = []
    for entry in managed_fields or ():
        node: Any = entry.get("fieldsV1") or {}
        for segment in path:
            if isinstance(segment, tuple):
                key = "k:" + json.dumps({segment[0]: segment[1]}, separators=(",", ":"))
            else:
                key = f"f:{segment}"
            node = node.get(key) if isinstance(node, Mapping) else None
            if node is None:
                break
        if node is not None:
            found.append(f"{entry.get('manager', '?')} ({entry.get('operation', '?')})")
    return found
