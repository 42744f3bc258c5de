"""Data and prediction drift between a reference sample and a window of captured traffic.

Numerical features: Population Stability Index over the reference's decile bins (value
by value for a feature of few distinct values) and the two-sample Kolmogorov-Smirnov
test. Categorical features: chi-squared test of homogeneity on the 2 x K contingency
table and the Jensen-Shannon distance (base 2, in [0, 1]). The prediction column is
judged like any feature and reported apart.

A feature drifts only when the test is significant *and* the effect is large:
``p < pValue`` and ``PSI > psi`` (numerical), ``p < chi2PValue`` and
``JS > jsDistance`` (categorical). At large windows a p-value flags differences
too small to matter; at small windows the effect size is noisy. Requiring both
keeps false alarms rare at every size. A window drifts when the prediction drifts
or when the share of drifted features reaches ``drift.share``. Fewer than
``window.minRows`` rows gives the verdict "insufficient data", never an alarm. A
reference sample of fewer than ``drift.minReferenceRows`` rows gives "insufficient
reference": deciles of five rows make PSI noise, and a verdict of "ok" drawn from
them would hide real drift.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlplat.stack import Monitoring

PREDICTION = "__prediction__"
N_BINS = 10
EPS = 1e-4  # floor of a bin share so an empty bin gives a finite PSI
# Samples with at most this many distinct values (labels, counts) are compared value by value:
# deciles would merge rare values into their neighbours' bins and hide a shift between them.
MAX_PSI_CATEGORIES = 20
HISTOGRAM_BINS = 12  # bars per feature in a reference-vs-current chart (most frequent categories first)
EXACT_KS_MAX_N = 10_000  # scipy's own switch from the exact to the asymptotic KS distribution

OK, DRIFT, INSUFFICIENT = "ok", "drift", "insufficient data"
INSUFFICIENT_REFERENCE = "insufficient reference"
NOT_JUDGED = (INSUFFICIENT, INSUFFICIENT_REFERENCE)


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # "numerical" | "categorical"
    n_reference: int
    n_current: int
    verdict: str  # ok | drift | insufficient data | insufficient reference
    psi: float | None = None
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    chi2: float | None = None
    chi2_p_value: float | None = None
    js_distance: float | None = None
    new_categories: list[str] = field(default_factory=list)
    missing_share: float = 0.0
    # reference and current shares over the same bins, for a chart: ``{"bins": [label...],
    # "reference": [share...], "current": [share...]}`` (``None`` when the feature was not judged)
    histogram: dict[str, list[Any]] | None = None

    @property
    def drifted(self) -> bool:
        return self.verdict == DRIFT

    @property
    def score(self) -> float | None:
        """The effect size that is compared with its threshold (PSI or JS distance)."""
        return self.psi if self.kind == "numerical" else self.js_distance

    @property
    def p_value(self) -> float | None:
        return self.ks_p_value if self.kind == "numerical" else self.chi2_p_value

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class DriftReport:
    rows: int
    reference_rows: int
    verdict: str
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    share: float  # drifted features / judged features
    thresholds: dict[str, float]

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def metrics(self) -> dict[str, float]:
        """Flat metrics for alert rules: ``drift.share``, ``drift.detected``, ``drift.prediction_psi``..."""
        if self.verdict in NOT_JUDGED:
            return {}
        out = {
            "drift.share": self.share,
            "drift.features": float(len(self.drifted_features)),
            "drift.detected": 1.0 if self.verdict == DRIFT else 0.0,
        }
        if self.prediction is not None and self.prediction.verdict not in NOT_JUDGED:
            out["drift.prediction_drifted"] = 1.0 if self.prediction.drifted else 0.0
            if self.prediction.psi is not None:
                out["drift.prediction_psi"] = self.prediction.psi
            if self.prediction.js_distance is not None:
                out["drift.prediction_js"] = self.prediction.js_distance
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "verdict": self.verdict,
            "share": self.share,
            "drifted_features": self.drifted_features,
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "thresholds": self.thresholds,
        }


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    ks_p_value: float = 0.01
    chi2_p_value: float = 0.01
    js_distance: float = 0.1
    share: float = 0.5
    min_rows: int = 100
    min_reference_rows: int = 100

    @classmethod
    def from_spec(cls, monitoring: Monitoring) -> Thresholds:
        d = monitoring.drift
        return cls(d.psi, d.ks_p_value, d.chi2_p_value, d.js_distance, getattr(d, "share", 0.5),
                   monitoring.window.min_rows, d.min_reference_rows)


# --- numerical ---------------------------------------------------------------------------


def _finite_sorted(values: Any) -> tuple[np.ndarray, int]:
    """Sorted finite float values and how many were missing (NaN, None, not a number)."""
    array = np.asarray(values)
    if array.dtype.kind not in "fiu":
        import pandas as pd

        array = pd.to_numeric(pd.Series(array, dtype="object"), errors="coerce").to_numpy(dtype=float)
    array = array.astype(float, copy=False)
    finite = array[np.isfinite(array)]
    return np.sort(finite), int(array.size - finite.size)


def ks_2samp_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS on already sorted samples: ``(statistic, p-value)``.

    Up to 10,000 rows per side this is ``scipy.stats.ks_2samp`` itself (exact
    distribution). Beyond, scipy would spend most of its time in two searchsorted
    passes and in the finite-n Kolmogorov distribution, so the statistic is taken
    by one linear merge of the sorted samples and the p-value from scipy's
    Kolmogorov limiting distribution, which is what the asymptotic test uses
    (agreement with scipy is pinned by a unit test).
    """
    from scipy import stats

    n1, n2 = a.size, b.size
    if max(n1, n2) <= EXACT_KS_MAX_N:
        result = stats.ks_2samp(a, b)
        return float(result.statistic), float(result.pvalue)
    values = np.concatenate([a, b])
    order = np.argsort(values, kind="stable")  # two sorted runs: timsort merges them in linear time
    from_a = order < n1
    cdf_a = np.cumsum(from_a) / n1
    cdf_b = np.cumsum(~from_a) / n2
    merged = values[order]
    last_of_tie = np.empty(merged.size, dtype=bool)
    np.not_equal(merged[1:], merged[:-1], out=last_of_tie[:-1])
    last_of_tie[-1] = True
    statistic = float(np.max(np.abs(cdf_a[last_of_tie] - cdf_b[last_of_tie])))
    en = n1 * n2 / (n1 + n2)
    return statistic, float(stats.kstwobign.sf(statistic * math.sqrt(en)))


def psi_sorted(reference: np.ndarray, current: np.ndarray, bins: int = N_BINS) -> float:
    """PSI = sum((p - q) * ln(p / q)) of two sorted, finite, non-empty samples (scipy's ``rel_entr`` both ways).

    The platform's one PSI: drift per numerical feature here, prediction shift in canary
    analysis (:func:`psi`). Shares are taken value by value when the two samples together have
    at most ``MAX_PSI_CATEGORIES`` distinct values, else over the reference's ``bins`` quantile
    bins; every share is floored at ``EPS`` so an empty bin gives a finite PSI.
    """
    from scipy.special import rel_entr

    ref_values = _distinct_sorted(reference, MAX_PSI_CATEGORIES)
    cur_values = _distinct_sorted(current, MAX_PSI_CATEGORIES)
    values = None
    if ref_values is not None and cur_values is not None:
        values = np.union1d(ref_values, cur_values)
    if values is not None and values.size <= MAX_PSI_CATEGORIES:
        ref_counts = np.searchsorted(reference, values, side="right") - np.searchsorted(reference, values, side="left")
        cur_counts = np.searchsorted(current, values, side="right") - np.searchsorted(current, values, side="left")
    else:
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
        ref_counts = np.diff(np.concatenate([[0], np.searchsorted(reference, edges, side="right"), [reference.size]]))
        cur_counts = np.diff(np.concatenate([[0], np.searchsorted(current, edges, side="right"), [current.size]]))
    p = np.clip(ref_counts / reference.size, EPS, None)
    q = np.clip(cur_counts / current.size, EPS, None)
    return float(np.sum(rel_entr(p, q) + rel_entr(q, p)))


def psi(reference: Any, current: Any, bins: int = N_BINS) -> float:
    """:func:`psi_sorted` of two unsorted samples; missing and non-finite values are left out.
    ``0.0`` when either sample has no value left (nothing to compare)."""
    ref, _ = _finite_sorted(reference)
    cur, _ = _finite_sorted(current)
    if not ref.size or not cur.size:
        return 0.0
    return psi_sorted(ref, cur, bins)


def _distinct_sorted(values: np.ndarray, limit: int) -> np.ndarray | None:
    """The distinct values of a sorted array, or ``None`` when there are more than ``limit``."""
    if not values.size:
        return values
    starts = np.flatnonzero(values[1:] != values[:-1]) + 1
    if starts.size + 1 > limit:
        return None
    return np.concatenate([values[:1], values[starts]])


def numerical_drift(name: str, reference: Any, current: Any, th: Thresholds, *, presorted: bool = False) -> FeatureDrift:
    if presorted:
        ref, ref_missing = np.asarray(reference, dtype=float), 0
    else:
        ref, ref_missing = _finite_sorted(reference)
    cur, cur_missing = _finite_sorted(current)
    total_cur = cur.size + cur_missing
    out = FeatureDrift(name, "numerical", int(ref.size), int(cur.size), INSUFFICIENT,
                       missing_share=cur_missing / total_cur if total_cur else 0.0)
    if ref.size < max(th.min_reference_rows, 2):
        out.verdict = INSUFFICIENT_REFERENCE
        return out
    if cur.size < th.min_rows:
        return out
    out.ks_statistic, out.ks_p_value = ks_2samp_sorted(ref, cur)
    out.psi = psi_sorted(ref, cur)
    out.verdict = DRIFT if (out.ks_p_value < th.ks_p_value and out.psi > th.psi) else OK
    out.histogram = numerical_histogram(ref, cur)
    return out


def numerical_histogram(reference: np.ndarray, current: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, list[Any]]:
    """Shares of two sorted, finite, non-empty samples over equal-width bins spanning both (a chart, not a test)."""
    lo = float(min(reference[0], current[0]))
    hi = float(max(reference[-1], current[-1]))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    ref_counts, _ = np.histogram(reference, edges)
    cur_counts, _ = np.histogram(current, edges)
    return {"bins": [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(bins)],
            "reference": [round(float(c) / reference.size, 6) for c in ref_counts],
            "current": [round(float(c) / current.size, 6) for c in cur_counts]}


# --- categorical ---------------------------------------------------------------------------


def category_counts(values: Any) -> dict[str, int]:
    import pandas as pd

    series = pd.Series(values, dtype="object")
    series = series[series.notna()].map(_category_key)
    return {str(k): int(v) for k, v in series.value_counts(sort=False).items()}


def _category_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def categorical_drift(name: str, reference: Any, current: Any, th: Thresholds) -> FeatureDrift:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    ref_counts = dict(reference) if isinstance(reference, Mapping) else category_counts(reference)
    cur_list = list(current) if not isinstance(current, Mapping) else None
    cur_counts = dict(current) if isinstance(current, Mapping) else category_counts(cur_list)
    n_ref, n_cur = sum(ref_counts.values()), sum(cur_counts.values())
    total_cur = len(cur_list) if cur_list is not None else n_cur
    out = FeatureDrift(name, "categorical", n_ref, n_cur, INSUFFICIENT,
                       new_categories=sorted(set(cur_counts) - set(ref_counts)),
                       missing_share=(total_cur - n_cur) / total_cur if total_cur else 0.0)
    if n_ref < max(th.min_reference_rows, 1):
        out.verdict = INSUFFICIENT_REFERENCE
        return out
    if n_cur < th.min_rows:
        return out
    categories = sorted(set(ref_counts) | set(cur_counts))
    table = np.array([[ref_counts.get(c, 0) for c in categories], [cur_counts.get(c, 0) for c in categories]], float)
    if len(categories) == 1:
        out.chi2, out.chi2_p_value, out.js_distance = 0.0, 1.0, 0.0
    else:
        result = chi2_contingency(table, correction=False)
        out.chi2, out.chi2_p_value = float(result.statistic), float(result.pvalue)
        out.js_distance = float(jensenshannon(table[0] / n_ref, table[1] / n_cur, base=2))
    out.verdict = DRIFT if (out.chi2_p_value < th.chi2_p_value and out.js_distance > th.js_distance) else OK
    shown = sorted(categories, key=lambda c: -(ref_counts.get(c, 0) / n_ref + cur_counts.get(c, 0) / n_cur))
    shown = shown[:HISTOGRAM_BINS]
    out.histogram = {"bins": shown, "reference": [round(ref_counts.get(c, 0) / n_ref, 6) for c in shown],
                     "current": [round(cur_counts.get(c, 0) / n_cur, 6) for c in shown]}
    return out


# --- a whole window -----------------------------------------------------------------------


def is_numerical(values: Any) -> bool:
    array = np.asarray(values)
    if array.dtype.kind in "fiu":
        return True
    if array.dtype.kind == "b":
        return False
    sample = [v for v in array[:200].tolist() if v is not None]
    return bool(sample) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sample)


def detect(
    reference: Any,
    current: Any,
    th: Thresholds = Thresholds(),
    *,
    features: Sequence[str] | None = None,
    prediction: str | None = PREDICTION,
) -> DriftReport:
    """Compare ``current`` with ``reference`` (DataFrames, or mappings column → array).

    Columns of the reference that the window lacks are judged on zero rows
    (insufficient data for that feature); extra window columns are ignored.
    """
    ref_cols = _columns(reference)
    cur_cols = _columns(current)
    names = list(features) if features is not None else [c for c in ref_cols if c != prediction]
    rows = _rows(cur_cols)
    report_features: list[FeatureDrift] = []
    for name in names:
        report_features.append(_judge(name, ref_cols.get(name, []), cur_cols.get(name, []), th))
    pred = None
    if prediction and prediction in ref_cols and prediction in cur_cols:
        pred = _judge(prediction, ref_cols[prediction], cur_cols[prediction], th)
    judged = [f for f in report_features if f.verdict not in NOT_JUDGED]
    share = sum(f.drifted for f in judged) / len(judged) if judged else 0.0
    reference_rows = _rows(ref_cols)
    if reference_rows < th.min_reference_rows:
        verdict = INSUFFICIENT_REFERENCE  # permanent for this version: said first, whatever the window holds
    elif rows < th.min_rows or (not judged and (pred is None or pred.verdict in NOT_JUDGED)):
        verdict = INSUFFICIENT
    elif (pred is not None and pred.drifted) or (judged and share >= th.share):
        verdict = DRIFT
    else:
        verdict = OK
    return DriftReport(rows, reference_rows, verdict, report_features, pred, share, asdict(th))


def _judge(name: str, ref: Any, cur: Any, th: Thresholds) -> FeatureDrift:
    if isinstance(ref, Mapping):  # a profile's category counts
        return categorical_drift(name, ref, cur, th)
    if is_numerical(ref):
        return numerical_drift(name, ref, cur, th)
    return categorical_drift(name, ref, cur, th)


def _columns(data: Any) -> dict[str, Any]:
    if isinstance(data, Mapping):
        return dict(data)
    if hasattr(data, "columns"):  # pandas
        return {str(c): data[c].to_numpy() for c in data.columns}
    raise TypeError(f"expected a DataFrame or a mapping of columns, got {type(data).__name__}")


def _rows(columns: Mapping[str, Any]) -> int:
    return max((len(v) if not isinstance(v, Mapping) else sum(v.values()) for v in columns.values()), default=0)
