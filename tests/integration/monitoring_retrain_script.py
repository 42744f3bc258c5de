"""The retraining entrypoint the retrain test's stack names: train on the original data plus the
labelled rows of the monitoring window, inside a tracked run, and register a new version."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier

import mlplat

FEATURES = ["income", "debt_ratio", "age", "utilization", "late_payments", "accounts", "inquiries", "tenure"]

window_path = Path(os.environ["MLPLAT_RETRAIN_DATA"])
name = os.environ["MLPLAT_RETRAIN_MODEL"]
train_path = Path("ex/data/train.parquet")
holdout_path = Path("ex/data/holdout.parquet")
train = pd.read_parquet(train_path)
window = pd.read_parquet(window_path)
labelled = window[window["__label__"].notna()]
data = pd.concat([train[FEATURES + ["label"]],
                  labelled[FEATURES].assign(label=labelled["__label__"].astype(int))], ignore_index=True)
with mlplat.start_run(experiment=f"{name}-retrain", name=f"retrain-{os.environ['MLPLAT_RETRAIN_TRIGGER']}",
                      datasets={"train": train_path, "window": window_path, "holdout": holdout_path},
                      tags={"mlplat.retrain.trigger": os.environ["MLPLAT_RETRAIN_TRIGGER"]}) as run:
    model = GradientBoostingClassifier(n_estimators=40, random_state=3).fit(data[FEATURES], data["label"])
    version = run.log_model(model, name=name, input_example=data[FEATURES].head(5),
                            holdout={"path": str(holdout_path), "label": "label"})
    print(f"registered {name} version {version} from {len(labelled)} labelled window rows")
