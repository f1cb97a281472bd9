"""Projection: keep only the fields that checks read, and digest them.

Events of an object change mostly in fields no check reads (status, replicas, annotations of
other tools). Projecting each object to the union of its checks' CEL field paths makes the
evaluation input small and gives a digest that changes only when a verdict could change, so the
stream processor can skip the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

Trie = dict[str, "Trie"]
"""Nested keys; ``{}`` at a node means "keep the whole value here"; ``"*"`` any list item."""

PRESENT = "?"
"""A trie key that marks a presence test (``has()``); no Kubernetes field is named so."""


def build(paths: Iterable[tuple[str, ...]]) -> Trie | None:
    """A trie from field paths below ``object``; ``None`` means "keep the whole object"."""
    root: Trie = {}
    for path in paths:
        if not path or path[0] != "object":
            continue
        if len(path) == 1:
            return None
        node = root
        for key in path[1:]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not child:
                break  # an existing empty node is a leaf: its whole value is kept already
            node = child
        else:
            node.clear()  # this path ends here: keep the whole value, drop narrower paths
    return root


def project(value: Any, trie: Trie | None) -> Any:
    """The parts of ``value`` that ``trie`` names (the whole value for ``None``).

    A ``"?"`` child (``PRESENT``) says a check tests the key's presence; a node holding only
    that keeps the key with an empty value, since nothing reads what is under it.
    """
    if trie is None or not trie:
        return value
    if type(value) is dict or isinstance(value, Mapping):
        star = trie.get("*")
        out: dict[str, Any] = {}
        if star is None:
            for key, sub in value.items():
                child = trie.get(key)
                if child is not None:
                    # Inline the common leaf case: this runs for every kept field of every event.
                    out[key] = sub if not child else project(sub, child)
        else:
            for key, sub in value.items():
                out[key] = project(sub, trie.get(key, star))
        return out
    if type(value) is list:
        star = trie.get("*")
        if star is not None:
            return [project(item, star) for item in value]
        if len(trie) == 1 and PRESENT in trie:
            return []
        # A list read other than element by element (size(), in, index): keep it whole.
        return value
    return value


def digest(value: Any, *, salt: str = "") -> str:
    """A stable hash of a projected object (key order does not matter)."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(salt.encode() + b"\0" + data, digest_size=16).hexdigest()
