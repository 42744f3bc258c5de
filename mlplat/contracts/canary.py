"""Canary metrics: what one provider observed of a running canary rollout, per variant.

The canary judge (:class:`mlplat.services.rollout.CanaryJudge`) is provider-neutral: the
same thresholds, the same re-check of a latency or prediction-shift breach on fresh
traffic, the same decisions and audit entries on every provider. What differs is where
the numbers come from; a provider hands them to the judge through a
:class:`CanaryMetrics` source (the local gateway: the requests it served; AWS: the
endpoint's CloudWatch metrics and rollback alarms).
"""
from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` (linear interpolation), ``None`` without values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] if lo == hi else ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class VariantStats:
    """What one variant served during an analysis window.

    ``latencies_ms`` are latency samples: one per request where the provider sees requests,
    one per metric period where it sees aggregates (then each is that period's p95).
    ``predictions`` may be empty where a provider does not see them; prediction shift is
    then not judged.
    """

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies_ms, 95)

    def summary(self) -> dict[str, Any]:
        p95 = self.p95_ms
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "p50_ms": _round(percentile(self.latencies_ms, 50)), "p95_ms": _round(p95),
                "mean_prediction": _round(sum(self.predictions) / len(self.predictions)) if self.predictions else None}


@dataclass(frozen=True)
class CanaryWindow:
    """One look at a running canary step.

    ``mark`` is where the candidate's traffic stands at this look, in the source's own
    terms (a sample count, a timestamp); the judge only hands it back to
    :meth:`CanaryMetrics.since`. ``alarms`` are breaches the provider detected itself
    (each rolls back at once, like an error-rate breach); ``metrics`` are extra facts the
    verdict records (where the numbers came from, the alarms read).
    """

    stable: VariantStats
    candidate: VariantStats
    mark: float
    alarms: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)


class CanaryMetrics(abc.ABC):
    """Per-variant statistics of running canary rollouts, as one provider observes them.

    ``rollout`` is a row of the platform database's ``rollouts`` table (``id``, ``model``,
    ``environment``, ``stable_version``, ``candidate_version``, ``step_index``,
    ``step_started_at``, ``created_at``). Both methods only read; neither changes the rollout.
    """

    @abc.abstractmethod
    def window(self, rollout: Mapping[str, Any], now: float) -> CanaryWindow | None:
        """The stable variant since the rollout started and the candidate since its current step
        started, up to ``now``. ``None`` when the source has no view of the current step yet
        (its routing not reloaded): the judge then decides nothing for this rollout."""

    @abc.abstractmethod
    def since(self, rollout: Mapping[str, Any], mark: float, now: float) -> VariantStats | None:
        """The candidate's traffic of the current step that came after ``mark`` (a window's
        ``mark``), up to ``now``, none of it served before ``mark``. ``None`` when ``mark`` no
        longer places anything (the samples it counted are gone): the judge then marks again."""
