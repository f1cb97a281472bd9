"""Projection: keep only the fields that checks read, and digest them.

Events of an object change mostly in fields no check reads (status, replicas, annotations of
other tools). Projecting each object to the union of its checks' CEL field paths makes the
evaluation input small and gives a digest that changes only when a verdict could change, so the
stream processor can skip the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

Trie = dict[str, "Trie"]
"""Nested keys; ``{}`` at a node means "keep the whole value here"; ``"*"`` any list item."""

PRESENT = "?"
"""A trie key that marks a presence test (``has()``); no Kubernetes field is named so."""

Projector = Callable[[Any], Any]
"""A compiled projection: a function from a value to the parts of it that one trie names."""


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


def compile(trie: Trie | None) -> Projector:
    """``project(value, trie)`` as a function of ``value``, specialised once for ``trie``.

    The stream processor projects every event through the trie of its kind, and the generic
    walk pays a call, type tests and trie lookups at every node. The functions built here do
    only what their node needs: a node whose children are all kept whole is one dict
    comprehension. Values other than dicts and lists (rare: objects come from JSON) fall back
    to ``project``, so the result is always ``project(value, trie)``.
    """
    if trie is None or not trie:
        return _whole
    return _compile_node(trie)


def _whole(value: Any) -> Any:
    return value


def _compile_node(trie: Trie) -> Projector:
    # ``None`` stands for a child kept whole (an empty trie node).
    children: dict[str, Projector | None] = {
        key: _compile_node(child) if child else None for key, child in trie.items()
    }
    star = trie.get("*")
    if star is not None:
        return _compile_items(trie, children, _compile_node(star) if star else None)
    if all(child is None for child in children.values()):
        kept = frozenset(children)

        def leaves(value: Any) -> Any:
            if type(value) is dict:
                return {key: sub for key, sub in value.items() if key in kept}
            return project(value, trie)

        return leaves

    def fields(value: Any) -> Any:
        if type(value) is dict:
            out: dict[str, Any] = {}
            for key, sub in value.items():
                if key in children:
                    child = children[key]
                    out[key] = sub if child is None else child(sub)
            return out
        return project(value, trie)

    return fields


def _compile_items(
    trie: Trie, children: dict[str, Projector | None], star: Projector | None
) -> Projector:
    # A ``"*"`` node: every list item (or every key not named otherwise) goes through ``star``.
    def items(value: Any) -> Any:
        if type(value) is list:
            return list(value) if star is None else [star(item) for item in value]
        if type(value) is dict:
            out: dict[str, Any] = {}
            for key, sub in value.items():
                child = children.get(key, star)
                out[key] = sub if child is None else child(sub)
            return out
        return project(value, trie)

    return items


def digest(value: Any, *, salt: str = "") -> str:
    """A stable hash of a projected object (key order does not matter)."""
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(salt.encode() + b"\0" + data, digest_size=16).hexdigest()


def digester(*, salt: str) -> Callable[[Any], str]:
    """``digest(value, salt=salt)`` as a function of ``value``, with the salt hashed once."""
    seeded = hashlib.blake2b(salt.encode() + b"\0", digest_size=16)

    def digest_(value: Any) -> str:
        hasher = seeded.copy()
        hasher.update(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
        return hasher.hexdigest()

    return digest_
