"""Errors of the feature store: each says what, where, and how to fix it; none writes anything."""
from __future__ import annotations

import difflib
from collections.abc import Iterable

from mlplat.errors import Denied, MlplatError, NotFound, StackError


class FeatureDefinitionError(StackError):
    """A definitions module, entity or feature view is invalid (exit 3, like a bad stack file)."""


class FeatureDataError(MlplatError):
    """An entity DataFrame or a source table does not have the columns or types it must have (exit 1)."""


class UnknownFeature(NotFound):
    """A feature view, version or feature that is not registered (exit 4)."""


class BreakingChange(Denied):
    """A breaking change to a feature view version that a production model uses (exit 6)."""


def nearest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` or an empty string."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean '{found[0]}'? " if found else ""
