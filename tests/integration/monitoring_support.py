"""Helpers for the monitoring tests: captured traffic written the way the gateway writes it."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["income", "debt_ratio", "age", "utilization", "late_payments", "accounts", "inquiries", "tenure"]


def load_model(project: Path, name: str, version: int):
    """The registered sklearn estimator, loaded from its verified folder as the gateway does."""
    import mlflow.sklearn

    from mlplat.context import Context
    from mlplat.services import registry

    ctx = Context(project_dir=project)
    folder = registry.verified_model_dir(ctx.stack("dev"), ctx, name, version)
    return mlflow.sklearn.load_model(str(folder))


def insert_captures(db_path: Path, *, model: str, version: int, frame: pd.DataFrame, predictions, start_ts: float,
                    prefix: str, environment: str = "dev", latency_ms: float = 5.0, step: float = 1.0) -> list[str]:
    """One single-row request per frame row, in the gateway's capture format (inputs dict, outputs list)."""
    ids = []
    rows = []
    for i, (record, pred) in enumerate(zip(frame.to_dict(orient="records"), list(predictions))):
        request_id = f"{prefix}-{i:05d}"
        ids.append(request_id)
        pred = pred.item() if hasattr(pred, "item") else pred
        rows.append((request_id, start_ts + i * step, model, version, "primary", environment,
                     json.dumps(record), json.dumps([pred]), latency_ms, 200, 0))
    conn = sqlite3.connect(db_path, timeout=60)
    try:
        with conn:
            conn.executemany("INSERT INTO captures (request_id, ts, model, version, variant, environment, inputs, "
                             "outputs, latency_ms, status, shadow) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    finally:
        conn.close()
    return ids


def holdout(project_or_repo: Path, n: int, seed: int) -> pd.DataFrame:
    frame = pd.read_parquet(project_or_repo)
    return frame.sample(n=n, replace=n > len(frame), random_state=seed).reset_index(drop=True)


def shifted(frame: pd.DataFrame, column: str, by_std: float) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column] + by_std * float(np.std(frame[column]))
    return out
