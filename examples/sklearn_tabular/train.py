"""A tabular classifier trained inside a tracked run (scikit-learn).

Generates a small synthetic credit dataset (no downloads), writes train and
held-out Parquet files, and trains a gradient-boosted classifier. Parameters and
training metrics are autologged; the per-epoch validation curve is logged by hand.

    python examples/sklearn_tabular/train.py [--stack dev] [--n-estimators 60] [--seed 7]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import mlplat

HERE = Path(__file__).parent
DATA = HERE / "data"
FEATURES = ["income", "debt_ratio", "age", "utilization", "late_payments", "accounts", "inquiries", "tenure"]


def make_data(seed: int) -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    X, y = make_classification(n_samples=4000, n_features=len(FEATURES), n_informative=5, n_redundant=1,
                               class_sep=1.0, flip_y=0.03, random_state=seed)
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["label"] = y.astype(int)
    train, holdout = train_test_split(frame, test_size=0.25, random_state=seed, stratify=frame["label"])
    train_path, holdout_path = DATA / "train.parquet", DATA / "holdout.parquet"
    train.to_parquet(train_path, index=False)
    holdout.to_parquet(holdout_path, index=False)
    return train_path, holdout_path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default=None)
    parser.add_argument("--n-estimators", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--register", default=None, help="register the model under this name")
    args = parser.parse_args()

    train_path, holdout_path = make_data(args.seed)
    train = pd.read_parquet(train_path)
    X, y = train[FEATURES], train["label"]
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, random_state=args.seed)

    with mlplat.start_run(experiment="credit-risk", name=f"gbm-{args.n_estimators}", stack=args.stack,
                          datasets={"train": train_path, "holdout": holdout_path}) as run:
        model = GradientBoostingClassifier(n_estimators=args.n_estimators, learning_rate=args.learning_rate,
                                           max_depth=args.max_depth, random_state=args.seed)
        model.fit(X_fit, y_fit)
        # validation curve, one point per boosting stage
        for step, proba in enumerate(model.staged_predict_proba(X_val)):
            run.log_metric("val_auc", roc_auc_score(y_val, proba[:, 1]), step=step)
        val_auc = roc_auc_score(y_val, model.predict_proba(X_val)[:, 1])
        run.log_metric("final_val_auc", val_auc)
        print(f"run {run.run_id}: val_auc={val_auc:.4f}")
        if args.register:
            version = run.log_model(model, name=args.register, input_example=X_val.head(5),
                                    holdout={"path": str(holdout_path), "label": "label"})
            print(f"registered {args.register} version {version}")


if __name__ == "__main__":
    main()
