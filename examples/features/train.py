"""Train on a point-in-time correct training set built by the feature store, inside a tracked run.

    python examples/features/make_data.py
    mlplat features apply --definitions examples/features/definitions.py --yes
    python examples/features/train.py [--stack dev] [--version 2] [--register NAME]

The run records the feature view versions it read (run tags mlplat.features.<view>=<version>
and the artifact mlplat/features.json). With --register NAME it registers the model, whose lineage
names those view versions; the serving gateway then fills the features in from the online store
by entity key (driver_id, customer_id), from the same view versions.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import mlplat
from mlplat.features import FeatureStore

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", default=None)
    parser.add_argument("--version", type=int, default=2, help="driver_stats version to train on")
    parser.add_argument("--register", default=None, help="register the model under this name")
    args = parser.parse_args()

    orders_path = HERE / "data" / "orders.parquet"
    if not orders_path.exists():
        raise SystemExit("no data yet: run `python examples/features/make_data.py` first")
    orders = pd.read_parquet(orders_path)
    features = [f"driver_stats@{args.version}:conv_rate", f"driver_stats@{args.version}:acc_rate",
                f"driver_stats@{args.version}:avg_daily_trips", "customer_profile:lifetime_orders"]
    store = FeatureStore(stack=args.stack)
    with mlplat.start_run(experiment="driver-completion", name=f"logreg-fs-v{args.version}", stack=args.stack,
                          datasets={"orders": orders_path}) as run:
        training = store.get_historical_features(orders[["order_id", "driver_id", "customer_id", "event_timestamp",
                                                         "completed"]], features)
        columns = ["conv_rate", "acc_rate", "avg_daily_trips", "lifetime_orders"]
        missing = float(training[columns].isna().any(axis=1).mean())
        run.log_metric("rows_with_missing_features", missing)
        X = training[columns].astype("float64").fillna(training[columns].astype("float64").median())
        y = training["completed"]
        X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.25, random_state=7, stratify=y)
        model = LogisticRegression(max_iter=500).fit(X_fit, y_fit)
        auc = roc_auc_score(y_val, model.predict_proba(X_val)[:, 1])
        run.log_metric("val_auc", auc)
        print(f"run {run.run_id}: {len(training)} rows ({missing:.1%} with a missing feature), val_auc={auc:.4f}")
        if args.register:
            holdout = HERE / "data" / "holdout.parquet"
            X_val.assign(completed=y_val.to_numpy()).to_parquet(holdout, index=False)
            version = run.log_model(model, name=args.register, input_example=X_val.head(5), reference_data=X_fit,
                                    holdout={"path": str(holdout), "label": "completed"})
            print(f"registered {args.register} version {version}")


if __name__ == "__main__":
    main()
