"""Pipeline step: a synthetic credit dataset (no downloads), split into train and held-out sets.

Writes ``train.parquet`` and ``holdout.parquet`` into ``$MLPLAT_OUTPUT_DATASET``. Seeded: the
same files on every run (the step's cache keys on them).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

FEATURES = ["income", "debt_ratio", "age", "utilization", "late_payments", "accounts", "inquiries", "tenure"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rows", type=int, default=4000)
    args = parser.parse_args()
    out = Path(os.environ["MLPLAT_OUTPUT_DATASET"])
    X, y = make_classification(n_samples=args.rows, n_features=len(FEATURES), n_informative=5, n_redundant=1,
                               class_sep=1.0, flip_y=0.03, random_state=args.seed)
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["label"] = y.astype(int)
    train, holdout = train_test_split(frame, test_size=0.25, random_state=args.seed, stratify=frame["label"])
    train.to_parquet(out / "train.parquet", index=False)
    holdout.to_parquet(out / "holdout.parquet", index=False)
    print(f"prepared {len(train)} training and {len(holdout)} held-out rows")


if __name__ == "__main__":
    main()
