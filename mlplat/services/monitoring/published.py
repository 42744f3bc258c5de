"""What a finished pass (``PassReport.to_dict()``) gives a cloud's metric store, per window: the values every
provider publishes under its own names and dimensions."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

UNJUDGED = (None, "no reference", "insufficient data", "insufficient reference")
PREDICTION = "__prediction__"


@dataclass(frozen=True)
class WindowValues:
    """One window's publishable values; ``drift_share`` and ``rows`` are None when drift was not judged."""

    model: str
    version: int
    environment: str
    feature_psi: dict[str, float] = field(default_factory=dict)
    prediction_psi: float | None = None
    drift_share: float | None = None
    rows: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def max_psi(self) -> float | None:
        return max(self.feature_psi.values()) if self.feature_psi else None


def window_values(report: Mapping[str, Any]) -> Iterator[WindowValues]:
    """Each window of ``report`` with its judged drift (per-feature PSI, prediction PSI, share, rows) and its
    metrics (``quality.*``)."""
    for w in report.get("windows") or []:
        drift = w.get("drift") or {}
        judged = drift.get("verdict") not in UNJUDGED
        scores = {str(f["feature"]): float(f["psi"]) for f in drift.get("features") or []
                  if judged and f.get("psi") is not None}
        prediction = scores.pop(PREDICTION, None)
        yield WindowValues(model=str(w["model"]), version=int(w["version"]), environment=str(w["environment"]),
                           feature_psi=scores, prediction_psi=prediction,
                           drift_share=float(drift.get("share") or 0.0) if judged else None,
                           rows=int(drift.get("rows") or 0) if judged else None,
                           metrics={k: float(v) for k, v in (w.get("metrics") or {}).items()
                                    if isinstance(v, int | float)})
