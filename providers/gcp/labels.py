"""Cost tags as GCP labels: a deterministic normalisation, and the originals where labels cannot hold them.

GCP labels allow keys and values of at most 63 characters made of lowercase letters, digits, ``_`` and
``-``; a key starts with a lowercase letter and is not empty; a resource carries at most 64 labels.
https://cloud.google.com/resource-manager/docs/labels-overview#requirements

A cost tag becomes a label by: lower-casing; ``@`` → ``_at_``; every other character outside
``[a-z0-9_-]`` (``.``, spaces, ``/``, ``:``, non-ASCII letters) → ``_``; a key not starting with a letter
gets the prefix ``k_``; a result longer than 63 characters keeps its first 54 and ends with ``-`` and 8
hex digits of the original's SHA-256 (so two long values stay distinct). ``CC-1042`` → ``cc-1042``,
``search-ml@example.com`` → ``search-ml_at_example_com``. The program and the runtime use these same
functions (labels on buckets, endpoints, models); :func:`originals` lists what changed so the original
text is kept in resource descriptions and the stack's outputs.

A value with no letter or digit left (``"!!!"``, ``"研究"``) or two tags landing on one key cannot be
normalised: :class:`LabelError` names the tag and how to fix it. Stdlib only.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from mlplat.errors import StackError

MAX_LENGTH = 63
MAX_LABELS = 64
_VALID = re.compile(r"^[a-z0-9_-]{0,63}$")
_VALID_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_OUTSIDE = re.compile(r"[^a-z0-9_-]")


class LabelError(StackError):
    """A cost tag that cannot become a GCP label."""

    def __init__(self, message: str, *, key: str, hint: str):
        super().__init__(message, hint=hint)
        self.key = key


def _shorten(text: str, original: str) -> str:
    if len(text) <= MAX_LENGTH:
        return text
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()[:8]
    return f"{text[:MAX_LENGTH - 9]}-{digest}"


def _clean(text: str) -> str:
    return _OUTSIDE.sub("_", text.lower().replace("@", "_at_"))


def normalise_value(value: str, *, key: str = "") -> str:
    """The label value for a tag value; ``LabelError`` when nothing of it survives."""
    cleaned = _clean(value)
    if value and not re.search(r"[a-z0-9]", cleaned):
        raise LabelError(f"cost tag {key or '?'}={value!r} cannot be a GCP label value: no letter or digit of it "
                         "fits [a-z0-9_-]", key=key or "?",
                         hint=f"give tag {key or '?'} a value with ASCII letters or digits (e.g. a slug of it) "
                         "under mlplat:tags")
    return _shorten(cleaned, value)


def normalise_key(key: str) -> str:
    """The label key for a tag key; ``LabelError`` when nothing of it survives."""
    cleaned = _clean(key)
    if not re.search(r"[a-z0-9]", cleaned):
        raise LabelError(f"cost tag key {key!r} cannot be a GCP label key: no letter or digit of it fits [a-z0-9_-]",
                         key=key, hint="rename the tag under mlplat:tags with ASCII letters or digits")
    if not cleaned[0].isalpha():
        cleaned = f"k_{cleaned}"
    return _shorten(cleaned, key)


def labels_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The labels of a resource carrying ``tags`` (deterministic; keys sorted as given)."""
    labels: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, value in tags.items():
        label_key = normalise_key(str(key))
        if label_key in sources:
            raise LabelError(f"cost tags {sources[label_key]!r} and {key!r} both become the GCP label key "
                             f"{label_key!r}", key=str(key),
                             hint="rename one of them under mlplat:tags so their keys differ in letters or digits")
        sources[label_key] = str(key)
        labels[label_key] = normalise_value(str(value), key=str(key))
    if len(labels) > MAX_LABELS:
        raise LabelError(f"{len(labels)} cost tags; a GCP resource carries at most {MAX_LABELS} labels",
                         key=next(iter(tags)), hint="drop tags under mlplat:tags")
    return labels


def originals(tags: Mapping[str, str]) -> dict[str, str]:
    """``label key → "original key=original value"`` for every tag the labels do not hold verbatim."""
    out = {}
    for key, value in tags.items():
        label_key, label_value = normalise_key(str(key)), normalise_value(str(value), key=str(key))
        if label_key != key or label_value != value:
            out[label_key] = f"{key}={value}"
    return out


def describe(text: str, tags: Mapping[str, str]) -> str:
    """``text`` followed by the cost tags the labels changed, for resources that have a description."""
    changed = originals(tags)
    if not changed:
        return text
    return f"{text} [cost tags: {'; '.join(changed[k] for k in sorted(changed))}]"


def label_problem(key: str, value: str) -> str | None:
    """Why GCP would refuse the label ``key: value``, or ``None``."""
    if not _VALID_KEY.match(key):
        return (f"label key {key!r} is refused: 1-63 lowercase letters, digits, '_' or '-', starting with a "
                "lowercase letter")
    if not _VALID.match(value):
        return f"label {key}={value!r} is refused: values are 0-63 lowercase letters, digits, '_' or '-'"
    return None
