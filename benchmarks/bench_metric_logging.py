"""10,000 metric points from a training loop: mlplat's buffered run vs plain `mlflow.log_metric`,
on the same SQLite tracking store, in the same process and run of this script."""
from __future__ import annotations

import os
import time

from _common import fresh_project, table

POINTS = 10_000


def main() -> None:
    root = fresh_project("metric-logging")
    os.environ["MLPLAT_PROJECT_DIR"] = str(root)
    import mlflow

    import mlplat

    # mlplat: in-loop time, then the time to drain the buffer at the end of the run
    run = mlplat.start_run(experiment="bench", name="mlplat", autolog=False)
    start = time.perf_counter()
    for step in range(POINTS):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    in_loop_mlplat = time.perf_counter() - start
    run.end()
    total_mlplat = time.perf_counter() - start
    points = len(run.tracker.metric_history(run.run_id, "loss"))
    assert points == POINTS, points

    # MLflow: the same store, the fluent API a user would call in the loop
    uri = f"sqlite:///{root / '.mlplat' / 'dev' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    with mlflow.start_run(run_name="mlflow"):
        start = time.perf_counter()
        for step in range(POINTS):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        in_loop_mlflow = time.perf_counter() - start

    rows = [
        ("mlflow.log_metric", f"{in_loop_mlflow:.2f} s", f"{in_loop_mlflow / POINTS * 1e6:.0f} µs", "1 (baseline)"),
        ("mlplat run.log_metric", f"{in_loop_mlplat:.4f} s", f"{in_loop_mlplat / POINTS * 1e6:.1f} µs",
         f"1/{in_loop_mlflow / in_loop_mlplat:.0f}"),
    ]
    print(f"### Metric logging: {POINTS:,} points in a training loop (same SQLite store)\n")
    print(table(rows, ("logger", "in-loop time", "per point", "ratio of MLflow's time")))
    print(f"\nmlplat's end-of-run flush of all {POINTS:,} points took {total_mlplat - in_loop_mlplat:.2f} s "
          f"(batched writes); every point was read back.")


if __name__ == "__main__":
    main()
