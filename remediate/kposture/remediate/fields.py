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


def applied_by(
    managed_fields: Sequence[Mapping[str, Any]] | None, live: Mapping[str, Any], *, manager: str
) -> dict[str, Any]:
    """The apply configuration of the fields ``manager`` owns through Apply, at live values.

    Server-side apply removes a field that a manager applied before and leaves out of its next
    apply. Every new patch therefore carries the fields this manager already owns, so one fix
    never undoes an earlier one.
    """
    out: dict[str, Any] = {}
    for entry in managed_fields or ():
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            merge_apply(out, _owned_map(entry.get("fieldsV1") or {}, live))
    out.pop("status", None)
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        for key in _IDENTITY_METADATA:
            metadata.pop(key, None)
    return out


def _owned_map(node: Mapping[str, Any], live: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(live, Mapping):
        return out
    for key, child in node.items():
        if not key.startswith("f:"):
            continue
        name = key[2:]
        if name not in live:
            continue
        value = live[name]
        if not child or not isinstance(child, Mapping):
            out[name] = value  # a leaf (or an atomic value) owned whole
        elif isinstance(value, Mapping):
            out[name] = _owned_map(child, value)
        elif isinstance(value, list):
            out[name] = _owned_list(child, value)
        else:
            out[name] = value
    return out


def _owned_list(node: Mapping[str, Any], live: list[Any]) -> list[Any]:
    items: list[Any] = []
    for key, child in node.items():
        if key.startswith("k:"):
            identity = json.loads(key[2:])
            element = next(
                (
                    e
                    for e in live
                    if isinstance(e, Mapping) and all(e.get(k) == v for k, v in identity.items())
                ),
                None,
            )
            if element is not None:
                items.append({**_owned_map(child, element), **identity})
        elif key.startswith("v:"):
            items.append(json.loads(key[2:]))
    return items


def merge_apply(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` into ``base`` in place, as one apply configuration (``overlay`` wins).

    Maps merge recursively; lists of maps that all carry a ``name`` merge element by element
    on it (as server-side apply does for containers); any other value is replaced.
    """
    for key, value in overlay.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merge_apply(current, value)
        elif isinstance(current, list) and _named_list(current) and _named_list(value):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    merge_apply(by_name[item["name"]], item)
                else:
                    current.append(dict(item))
        else:
            base[key] = value
    return base


def _named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and "name" in v for v in value)
    )
