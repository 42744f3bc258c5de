"""A tabular classifier trained with XGBoost inside a tracked run.

Generates a small synthetic churn dataset (no downloads), writes train and held-out Parquet
files, and trains an ``XGBClassifier``. Its parameters are autologged, the per-round validation
log loss is logged by hand. Registered versions are stored in XGBoost's own UBJ format, which
loads without running code from the file (no pickle).

    python examples/xgboost_tabular/train.py [--stack dev] [--n-estimators 80] [--seed 11]
        [--register churn-xgb] [--predictions-out FILE]

``--predictions-out`` writes the model's in-process predictions on the first held-out rows (JSON:
``columns``, ``rows``, ``predictions``), the answer a served version must give.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from xgboost import XGBClassifier

import mlplat

HERE = Path(__file__).parent
DATA = HERE / "data"
FEATURES = ["tenure_months", "monthly_spend", "support_calls", "late_invoices", "plan_changes", "logins_30d",
            "discount_share", "devices"]
LABEL = "churned"


def make_data(seed: int) -> tuple[Path, Path]:
    DATA.mkdir(exist_ok=True)
    X, y = make_classification(n_samples=3000, n_features=len(FEATURES), n_informative=5, n_redundant=1,
                               class_sep=1.1, flip_y=0.03, random_state=seed)
    frame = pd.DataFrame(X, columns=FEATURES)
    frame[LABEL] = y.astype(int)
    train, holdout = train_test_split(frame, test_size=0.25, random_state=seed, stratify=frame[LABEL])
    train_path, holdout_path = DATA / "train.parquet", DATA / "holdout.parquet"
    train.to_parquet(train_path, index=False)
    holdout.to_parquet(holdout_path, index=False)
    return train_path, holdout_path


def write_predictions(model: XGBClassifier, holdout_path: Path, out: Path, rows: int = 20) -> None:
    X = pd.read_parquet(holdout_path)[FEATURES].head(rows)
    out.write_text(json.dumps({"columns": FEATURES, "rows": X.values.tolist(),
                               "predictions": model.predict(X).tolist()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default=None)
    parser.add_argument("--n-estimators", type=int, default=80)
    parser.add_argument("--max-depth", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--register", default=None, help="register the model under this name")
    parser.add_argument("--predictions-out", type=Path, default=None,
                        help="write the in-process predictions on the first held-out rows here (JSON)")
    args = parser.parse_args()

    train_path, holdout_path = make_data(args.seed)
    train = pd.read_parquet(train_path)
    X_fit, X_val, y_fit, y_val = train_test_split(train[FEATURES], train[LABEL], test_size=0.2,
                                                  random_state=args.seed)

    with mlplat.start_run(experiment="churn-xgb", name=f"xgb-{args.n_estimators}", stack=args.stack,
                          datasets={"train": train_path, "holdout": holdout_path}) as run:
        # n_jobs=1 and a fixed seed: the same data gives the same trees on every machine
        model = XGBClassifier(n_estimators=args.n_estimators, max_depth=args.max_depth,
                              learning_rate=args.learning_rate, random_state=args.seed, n_jobs=1,
                              eval_metric="logloss")
        model.fit(X_fit, y_fit, eval_set=[(X_val, y_val)], verbose=False)
        for step, loss in enumerate(model.evals_result()["validation_0"]["logloss"]):
            run.log_metric("val_logloss", loss, step=step)
        val_auc = roc_auc_score(y_val, model.predict_proba(X_val)[:, 1])
        run.log_metric("final_val_auc", val_auc)
        print(f"run {run.run_id}: val_auc={val_auc:.4f}")
        if args.register:
            version = run.log_model(model, name=args.register, input_example=X_val.head(5),
                                    holdout={"path": str(holdout_path), "label": LABEL})
            print(f"registered {args.register} version {version}")
    if args.predictions_out:
        write_predictions(model, holdout_path, args.predictions_out)


if __name__ == "__main__":
    main()
