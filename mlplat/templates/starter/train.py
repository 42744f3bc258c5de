"""Train {{ model }} inside a tracked run on stack {{ stack }} (written by `mlplat init`).

The data is scikit-learn's breast cancer dataset, split once by `mlplat init` into data/train.csv and
{{ holdout }} (the held-out set the stack's gate evaluates on). Parameters and training metrics are
autologged; the validation curve is logged by hand. With --register the model becomes a registered
version with its lineage (run, data hashes, code commit, environment).

    python train.py [--stack {{ stack }}] [--n-estimators 60] [--register]
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

HERE = Path(__file__).resolve().parent
TRAIN = HERE / "data" / "train.csv"
HOLDOUT = HERE / "{{ holdout }}"
LABEL = "{{ label }}"
MODEL = "{{ model }}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default=os.environ.get("MLPLAT_STACK", "{{ stack }}"))
    parser.add_argument("--n-estimators", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--register", action="store_true", help=f"register the model as {MODEL}")
    args = parser.parse_args()

    train = pd.read_csv(TRAIN)
    X, y = train.drop(columns=[LABEL]), train[LABEL]
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, random_state=args.seed, stratify=y)

    with mlplat.start_run(experiment=MODEL, name=f"gbm-{args.n_estimators}", stack=args.stack,
                          datasets={"train": TRAIN, "holdout": HOLDOUT}) as run:
        model = GradientBoostingClassifier(n_estimators=args.n_estimators, learning_rate=args.learning_rate,
                                           max_depth=args.max_depth, random_state=args.seed)
        model.fit(X_fit, y_fit)
        for step, proba in enumerate(model.staged_predict_proba(X_val)):  # one point per boosting stage
            run.log_metric("val_auc", roc_auc_score(y_val, proba[:, 1]), step=step)
        val_auc = roc_auc_score(y_val, model.predict_proba(X_val)[:, 1])
        run.log_metric("final_val_auc", val_auc)
        print(f"run {run.run_id}: val_auc={val_auc:.4f}")
        if args.register:
            version = run.log_model(model, name=MODEL, input_example=X_val.head(5),
                                    holdout={"path": str(HOLDOUT.relative_to(HERE)), "label": LABEL})
            print(f"registered {MODEL} version {version}")


if __name__ == "__main__":
    main()
