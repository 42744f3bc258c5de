"""Pipeline step: train the credit-risk classifier inside a tracked run and register the version.

Reads ``$MLPLAT_INPUT_DATASET`` (the prepare step's output). When monitoring retrains the model,
``$MLPLAT_RETRAIN_DATA`` names the monitoring window's rows; those with a label join the training
set. The version is registered with its held-out set, which the pipeline's gate evaluates it on.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import mlplat

FEATURES = ["income", "debt_ratio", "age", "utilization", "late_payments", "accounts", "inquiries", "tenure"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="credit-risk")
    parser.add_argument("--n-estimators", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    data = Path(os.environ["MLPLAT_INPUT_DATASET"])
    train_path, holdout_path = data / "train.parquet", data / "holdout.parquet"
    train = pd.read_parquet(train_path)
    datasets: dict[str, object] = {"train": train_path, "holdout": holdout_path}
    window = os.environ.get("MLPLAT_RETRAIN_DATA")
    if window:
        rows = pd.read_parquet(window)
        if "__label__" in rows.columns and set(FEATURES) <= set(rows.columns):
            labelled = rows[rows["__label__"].notna()]
            train = pd.concat([train, labelled[FEATURES].assign(label=labelled["__label__"].astype(int))],
                              ignore_index=True)
            print(f"retraining with {len(labelled)} labelled rows of the monitoring window")
        datasets["window"] = Path(window)
    X, y = train[FEATURES], train["label"]
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, random_state=args.seed)
    with mlplat.start_run(experiment=args.model, name=f"pipeline-gbm-{args.n_estimators}", datasets=datasets) as run:
        model = GradientBoostingClassifier(n_estimators=args.n_estimators, learning_rate=0.1, max_depth=3,
                                           random_state=args.seed).fit(X_fit, y_fit)
        val_auc = roc_auc_score(y_val, model.predict_proba(X_val)[:, 1])
        run.log_metric("final_val_auc", val_auc)
        version = run.log_model(model, name=args.model, input_example=X_val.head(5),
                                holdout={"path": str(holdout_path), "label": "label"})
        print(f"registered {args.model} version {version} (val_auc={val_auc:.4f})")


if __name__ == "__main__":
    main()
