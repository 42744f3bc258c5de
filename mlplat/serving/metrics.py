"""The gateway's live statistics: Prometheus series per model / version / variant, and the
per-variant samples of each running canary rollout that its controller judges."""
from __future__ import annotations

from typing import Any

import numpy as np

from mlplat.contracts.canary import VariantStats

BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STATS_CAP = 20_000


class Metrics:
    """Prometheus counters and a latency histogram per model / version / variant."""

    def __init__(self, environment: str):
        self.environment = environment
        self.series: dict[tuple[str, int, str], list[Any]] = {}
        self.shadow: dict[tuple[str, int], list[int]] = {}  # requests, rows, disagreeing rows, errors, dropped
        self.batches: dict[tuple[str, int], list[int]] = {}  # batched calls, requests, rows, fallbacks

    def observe(self, model: str, version: int, variant: str, status: int, seconds: float) -> None:
        key = (model, version, variant)
        entry = self.series.get(key)
        if entry is None:
            entry = self.series[key] = [0, 0, 0, [0] * (len(BUCKETS_S) + 1), 0.0]
        entry[0] += 1
        if status >= 500:
            entry[1] += 1
        elif status >= 400:
            entry[2] += 1
        buckets = entry[3]
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        entry[4] += seconds

    def observe_shadow(self, model: str, version: int, rows: int, disagree: int, error: bool,
                       dropped: bool = False) -> None:
        entry = self.shadow.setdefault((model, version), [0, 0, 0, 0, 0])
        if dropped:
            entry[4] += 1
            return
        entry[0] += 1
        entry[1] += rows
        entry[2] += disagree
        entry[3] += int(error)

    def observe_batch(self, model: str, version: int, requests: int, rows: int, fell_back: bool) -> None:
        """One model call made for ``requests`` (> 1) requests; ``fell_back``: it failed and each
        request was then predicted alone."""
        entry = self.batches.setdefault((model, version), [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += requests
        entry[2] += rows
        entry[3] += int(fell_back)

    def render(self) -> str:
        env = self.environment
        lines = [
            "# HELP mlplat_requests_total Scoring requests by model, version and variant.",
            "# TYPE mlplat_requests_total counter",
        ]
        series = sorted(self.series.items())
        label = lambda m, v, var: f'model="{m}",version="{v}",variant="{var}",environment="{env}"'  # noqa: E731
        for (m, v, var), e in series:
            lines.append(f"mlplat_requests_total{{{label(m, v, var)}}} {e[0]}")
        lines += ["# HELP mlplat_errors_total Requests that failed in the model or gateway (HTTP 5xx).",
                  "# TYPE mlplat_errors_total counter"]
        for (m, v, var), e in series:
            lines.append(f"mlplat_errors_total{{{label(m, v, var)}}} {e[1]}")
        lines += ["# HELP mlplat_client_errors_total Requests refused as invalid (HTTP 4xx).",
                  "# TYPE mlplat_client_errors_total counter"]
        for (m, v, var), e in series:
            lines.append(f"mlplat_client_errors_total{{{label(m, v, var)}}} {e[2]}")
        lines += ["# HELP mlplat_request_duration_seconds Time from request to response inside the gateway.",
                  "# TYPE mlplat_request_duration_seconds histogram"]
        for (m, v, var), e in series:
            running = 0
            for bound, count in zip(BUCKETS_S, e[3]):
                running += count
                lines.append(f'mlplat_request_duration_seconds_bucket{{{label(m, v, var)},le="{bound}"}} {running}')
            running += e[3][-1]
            lines.append(f'mlplat_request_duration_seconds_bucket{{{label(m, v, var)},le="+Inf"}} {running}')
            lines.append(f"mlplat_request_duration_seconds_sum{{{label(m, v, var)}}} {e[4]:.6f}")
            lines.append(f"mlplat_request_duration_seconds_count{{{label(m, v, var)}}} {e[0]}")
        if self.shadow:
            names = (("mlplat_shadow_requests_total", "Requests mirrored to a shadow version.", 0),
                     ("mlplat_shadow_rows_total", "Rows scored by a shadow version.", 1),
                     ("mlplat_shadow_disagreements_total", "Rows where shadow and primary predictions differ.", 2),
                     ("mlplat_shadow_errors_total", "Mirrored requests the shadow version failed.", 3),
                     ("mlplat_shadow_dropped_total", "Mirrored requests dropped because the shadow lagged.", 4))
            for metric, help_text, index in names:
                lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
                for (m, v), e in sorted(self.shadow.items()):
                    lines.append(f'{metric}{{model="{m}",version="{v}",environment="{env}"}} {e[index]}')
        if self.batches:
            names = (("mlplat_batches_total", "Model calls that predicted several requests at once.", 0),
                     ("mlplat_batched_requests_total", "Requests predicted in those calls.", 1),
                     ("mlplat_batched_rows_total", "Rows predicted in those calls.", 2),
                     ("mlplat_batch_fallbacks_total", "Batched calls that failed, after which each request was "
                      "predicted alone.", 3))
            for metric, help_text, index in names:
                lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
                for (m, v), e in sorted(self.batches.items()):
                    lines.append(f'{metric}{{model="{m}",version="{v}",environment="{env}"}} {e[index]}')
        return "\n".join(lines) + "\n"


class RolloutStats:
    """Live statistics of one canary rollout: stable over the whole rollout, candidate per step."""

    def __init__(self) -> None:
        self.stable = VariantStats()
        self.candidate: dict[int, VariantStats] = {}

    def record(self, variant: str, step: int | None, latency_ms: float, error: bool, predictions: Any) -> None:
        if variant == "stable":
            stats = self.stable
        elif variant == "canary" and step is not None:
            stats = self.candidate.get(step)
            if stats is None:
                stats = self.candidate[step] = VariantStats()
        else:
            return
        stats.requests += 1
        stats.errors += int(error)
        stats.latencies_ms.append(latency_ms)
        if predictions is not None:
            array = np.asarray(predictions)
            if array.dtype.kind in "fiub":
                if array.ndim == 2 and array.shape[1]:
                    array = array[:, -1]
                stats.predictions.extend(array.reshape(-1)[:64].astype(float).tolist())
        for values in (stats.latencies_ms, stats.predictions):
            if len(values) > STATS_CAP:
                del values[: STATS_CAP // 2]
