"""Errors of the feature store: each says what, where, and how to fix it; none writes anything."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

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


def refuse_unchangeable(problems: list[str], where: str, what: str) -> None:
    """Raise when a provider cannot make ``problems`` (``"<view>@<version>: why"`` each) to what it already holds
    (``what``: "an existing feature group"), naming the way out: each view's next version."""
    if problems:
        bumps = ", ".join(sorted({p.split(":")[0].split("@")[0] + " version=N+1" for p in problems}))
        raise FeatureDefinitionError(f"these changes cannot be made to {what}:\n  - " + "\n  - ".join(problems),
                                     where=where, hint=f"declare a new version instead ({bumps}); nothing was created")


def refuse_invalid_views(definitions: Any, problems_of: Callable[[dict[str, Any]], list[str]], service: str,
                         hint: str) -> None:
    """Raise, before anything is written, when ``service`` would refuse any view of ``definitions`` (a
    ``Definitions``): ``problems_of`` answers why for one view document."""
    problems = [f"{view.ref}: {p}" for view in definitions.views for p in problems_of(view.to_dict())]
    if problems:
        raise FeatureDefinitionError(f"{service} would refuse these feature views:\n  - " + "\n  - ".join(problems),
                                     where=definitions.path or "feature definitions", hint=hint)
