"""Drift on 100,000 reference × 100,000 current rows × 20 numerical features: mlplat vs Evidently.

Both read the same arrays. Features f00–f04 are shifted by one standard deviation
(real drift), f05–f07 by 0.05 standard deviations (statistically detectable at this
size, too small to matter), the rest are unchanged. Each side runs in its own
process (Evidently in its own virtualenv under benchmarks/.work, never an mlplat
dependency), imports its library first, loads the data, then times ``REPEAT``
runs; peak memory is what the first run allocates at its peak (tracemalloc, which
numpy and pandas report their buffers to; libraries and data already loaded), and
the whole process's peak RSS besides.

    python benchmarks/bench_drift.py            # prints a markdown section
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "drift"
VENV = HERE / ".work" / "evidently-venv"
EVIDENTLY = "evidently==0.7.23"
PINS = ["pandas>=2.2,<2.3"]  # evidently 0.7.23 imports a helper pandas 2.3 removed
ROWS, FEATURES, REPEAT = 100_000, 20, 3
SHIFTED, TINY = range(0, 5), range(5, 8)


def make_data() -> None:
    import numpy as np

    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    ref = rng.normal(0.0, 1.0, (ROWS, FEATURES))
    cur = rng.normal(0.0, 1.0, (ROWS, FEATURES))
    cur[:, list(SHIFTED)] += 1.0
    cur[:, list(TINY)] += 0.05
    np.save(WORK / "reference.npy", ref)
    np.save(WORK / "current.npy", cur)


def ensure_evidently() -> Path:
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import evidently, sys; sys.exit(evidently.__version__ != '0.7.23')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", EVIDENTLY, *PINS], check=True)
    return python


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(side: str) -> None:
    import numpy as np
    import pandas as pd

    if side == "mlplat":
        import scipy.spatial.distance  # noqa: F401 - drift imports these lazily; load them before the baseline
        import scipy.special  # noqa: F401
        import scipy.stats  # noqa: F401

        from mlplat.services.monitoring import drift

        def run(ref, cur):
            report = drift.detect(ref, cur, drift.Thresholds(), prediction=None)
            return {f.feature: f.drifted for f in report.features}, report.verdict == drift.DRIFT
    else:
        from evidently import Report
        from evidently.presets import DataDriftPreset

        def run(ref, cur):
            snapshot = Report([DataDriftPreset()]).run(cur, ref)
            verdicts, dataset = {}, False
            for metric in snapshot.dict()["metrics"]:
                config = metric["config"]
                if config["type"].endswith("ValueDrift"):
                    verdicts[config["column"]] = float(metric["value"]) >= config["threshold"]
                elif config["type"].endswith("DriftedColumnsCount"):
                    dataset = metric["value"]["share"] >= config["drift_share"]
            return verdicts, dataset

    columns = [f"f{i:02d}" for i in range(FEATURES)]
    ref = pd.DataFrame(np.load(WORK / "reference.npy"), columns=columns)
    cur = pd.DataFrame(np.load(WORK / "current.npy"), columns=columns)
    import tracemalloc

    baseline = _rss_mb()
    tracemalloc.start()  # numpy and pandas report their buffers to tracemalloc
    run(ref, cur)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        verdicts, dataset = run(ref, cur)
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "baseline_mb": baseline, "peak_mb": _peak_mb(), "traced_peak_mb": traced_peak,
                      "verdicts": verdicts, "dataset_drift": dataset}))


def measure(python: Path, side: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([str(python), str(Path(__file__).resolve()), "--worker", side], check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import statistics

    make_data()
    evidently_python = ensure_evidently()
    ours = measure(Path(sys.executable), "mlplat")
    theirs = measure(evidently_python, "evidently")
    t_ours, t_theirs = statistics.median(ours["times"]), statistics.median(theirs["times"])
    m_ours, m_theirs = ours["traced_peak_mb"], theirs["traced_peak_mb"]
    same = ours["verdicts"] == theirs["verdicts"] and ours["dataset_drift"] == theirs["dataset_drift"]
    drifted = sorted(k for k, v in ours["verdicts"].items() if v)
    print(f"### Drift: {ROWS:,} reference × {ROWS:,} current rows × {FEATURES} numerical features — "
          f"`benchmarks/bench_drift.py`\n")
    print("| tool | time (median of 3) | peak memory allocated by the drift run | whole-process peak RSS "
          "| ratio (time, memory) |")
    print("|---|---|---|---|---|")
    print(f"| Evidently {EVIDENTLY.split('==')[1]} DataDriftPreset | {t_theirs:.2f} s | {m_theirs:.0f} MB | "
          f"{theirs['peak_mb']:.0f} MB | 1, 1 |")
    print(f"| mlplat drift.detect (PSI + KS) | {t_ours:.3f} s | {m_ours:.0f} MB | {ours['peak_mb']:.0f} MB | "
          f"1/{t_theirs / t_ours:.1f}, 1/{m_theirs / max(m_ours, 1):.1f} |")
    print()
    print(f"Verdicts: {'identical' if same else 'DIFFERENT'} per feature and for the dataset "
          f"(drifted: {', '.join(drifted) or 'none'}; dataset drift {ours['dataset_drift']} vs "
          f"{theirs['dataset_drift']}). Targets ≥ 10× faster: {'met' if t_theirs / t_ours >= 10 else 'NOT met'} "
          f"({t_theirs / t_ours:.1f}×); ≤ ½ peak memory: "
          f"{'met' if m_ours <= m_theirs / 2 else 'NOT met'}.")
    if not same:
        diff = {k: (ours["verdicts"].get(k), theirs["verdicts"].get(k)) for k in ours["verdicts"]
                if ours["verdicts"].get(k) != theirs["verdicts"].get(k)}
        print(f"\nDisagreements (mlplat, Evidently): {diff}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
