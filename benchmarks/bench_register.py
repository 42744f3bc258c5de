"""Registering a scikit-learn model: mlplat's `run.log_model` vs MLflow's default `mlflow.sklearn.log_model`
(pip requirements inferred in a subprocess), on the same SQLite store, in the same process and run of
this script. Also: promotion to staging of that small model, gate included, without a container engine."""
from __future__ import annotations

import os
import statistics
import sys
import time

from _common import REPO, fresh_project, table, timed_promotion

REPEAT = 3


def main() -> None:
    root = fresh_project("register")
    os.environ["MLPLAT_PROJECT_DIR"] = str(root)
    os.environ.setdefault("MLPLAT_USER", "ds@example.com")
    os.environ["MLPLAT_CONTAINER_ENGINE"] = "none"  # the process path; bench_container_promote.py times images
    import logging

    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier

    import mlplat

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    data = root / "data"
    data.mkdir()
    X, y = make_classification(n_samples=4000, n_features=8, n_informative=5, random_state=7)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    frame["label"] = y
    frame.iloc[:3000].to_parquet(data / "train.parquet", index=False)
    frame.iloc[3000:].to_parquet(data / "holdout.parquet", index=False)
    train = frame.iloc[:3000]
    model = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=7).fit(
        train.drop(columns=["label"]), train["label"])
    example = train.drop(columns=["label"]).head(5)

    # mlplat: inside a tracked run (lineage, reference sample, profile, sealed manifest, platform DB, audit)
    mlplat_times, version = [], None
    for i in range(REPEAT + 1):
        with mlplat.start_run(experiment="bench-register", datasets={"train": "data/train.parquet"},
                              autolog=False) as run:
            start = time.perf_counter()
            version = run.log_model(model, name="bench-mlplat", input_example=example,
                                    holdout={"path": "data/holdout.parquet", "label": "label"})
            if i:  # the first call pays one-off imports (mlflow.sklearn, pyarrow writers)
                mlplat_times.append(time.perf_counter() - start)

    # MLflow's default: log_model with registration, pip requirements inferred
    uri = f"sqlite:///{root / '.mlplat' / 'dev' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("bench-register")
    mlflow_times = []
    for i in range(REPEAT + 1):
        with mlflow.start_run():
            start = time.perf_counter()
            mlflow.sklearn.log_model(model, name="model", input_example=example,
                                     registered_model_name="bench-mlflow", serialization_format="cloudpickle")
            if i:
                mlflow_times.append(time.perf_counter() - start)

    m_mlplat, m_mlflow = statistics.median(mlplat_times), statistics.median(mlflow_times)
    rows = [
        ("mlflow.sklearn.log_model (default: pip inference) + register", f"{m_mlflow:.3f} s", "1 (baseline)"),
        ("mlplat run.log_model (pins from the run, + reference sample, manifest, seal, audit)",
         f"{m_mlplat:.3f} s", f"1/{m_mlflow / m_mlplat:.0f}"),
    ]
    print(f"### Registering a scikit-learn model (GradientBoosting, 60 trees; median of {REPEAT} after a warm-up) "
          f"— `benchmarks/bench_register.py`\n")
    print(table(rows, ("call", "wall time", "ratio of MLflow's time")))
    target = "met" if m_mlflow / m_mlplat >= 20 else "NOT met"
    print(f"\nTarget ≤ 1/20 of MLflow's default: {target} (1/{m_mlflow / m_mlplat:.0f}). "
          f"Same SQLite store, same model, same process; mlplat also writes the 3,000-row reference sample "
          f"with predictions and the profile that monitoring reads.")

    # Promotion to staging: gate + package + staging endpoint (local process) + integration tests + stage
    steps = timed_promotion(root, "bench-mlplat", version)
    total = steps.pop("total")
    print("\n### Promotion to staging of the same model, gate included, no container engine\n")
    print(table([(s, f"{t:.2f} s") for s, t in steps.items()] + [("total (in process)", f"{total:.2f} s")],
                ("step", "wall time")))
    print("\nThe endpoint step starts `python -m mlplat.serving.model_server` as a local process (imports MLflow, "
          "loads the model); the integration step sends 50 held-out rows, 2 malformed payloads and 40 timed "
          "single-row requests. No peer offers this pipeline, so there is no ratio.")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
