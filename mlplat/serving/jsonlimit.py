"""Bounded JSON decoding for request bodies that anyone on the network may send.

Python's decoder recurses once per nesting level and raises ``RecursionError``
near a thousand levels, and it keeps the last value of a repeated object key
without a word. Request bodies therefore go through :func:`loads`, which refuses
bodies nested deeper than ``max_depth`` and objects with a repeated key, naming
where, with :class:`JSONLimitError` (a ``ValueError``). The dashboard's JSON
endpoints use it too.
"""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_DEPTH = 64
# a JSON string (escapes included): removed before brackets are counted
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# +1 for an opening bracket, -1 for a closing one: the running sum is the nesting depth
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class JSONLimitError(ValueError):
    """A body that is valid JSON (or not) but outside the limits; ``path`` says where, if known."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path


class _Marked(dict):
    """An object that had a repeated key: which one (found again on the error path only)."""

    repeated: str = ""


def _repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return ""


def too_deep(text: bytes, limit: int) -> bool:
    """Whether well-formed JSON ``text`` nests deeper than ``limit``."""
    if text.count(b"[") + text.count(b"{") <= limit:  # cheap bound: the common case ends here
        return False
    if b"\\" in text:  # an escaped quote would break the parity rule below: remove strings exactly
        steps = _STEP[np.frombuffer(_STRING.sub(b"", text), dtype=np.uint8)]
    else:
        codes = np.frombuffer(text, dtype=np.uint8)
        outside = (np.cumsum(codes == ord('"'), dtype=np.int32) & 1) == 0  # after an even number of quotes
        steps = _STEP[codes] * outside
    return int(np.cumsum(steps, dtype=np.int32).max()) > limit


def loads(body: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``body``; ``ValueError`` (``json.JSONDecodeError`` or :class:`JSONLimitError`) when it cannot be used."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    text = body if isinstance(body, str) else raw.decode("utf-8")
    marked: list[_Marked] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            out = _Marked(out)
            out.repeated = _repeated(items)
            marked.append(out)
        return out

    try:
        value = json.JSONDecoder(object_pairs_hook=pairs).decode(text)
    except RecursionError:
        raise JSONLimitError(f"JSON nested deeper than {max_depth} levels") from None
    if too_deep(raw, max_depth):
        raise JSONLimitError(f"JSON nested deeper than {max_depth} levels")
    if marked:
        path, key = _find_marked(value)
        where = f" in {path}" if path else ""
        raise JSONLimitError(f"key '{key}' appears more than once{where}; each key may appear once per object", path)
    return value


def _find_marked(value: Any) -> tuple[str, str]:
    """The path and key of the first object with a repeated key (iterative: the depth is bounded already)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Marked):
            return path, node.repeated
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
    return "", ""
