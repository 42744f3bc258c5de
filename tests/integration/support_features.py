"""Helpers for the feature store tests: a project whose platform database has the feature tables,
and a brute-force point-in-time reference to compare the DuckDB implementation with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mlplat.context import Context
from mlplat.db import Database
from mlplat.stack import load_stack
from tests.conftest import write_project

BASE = pd.Timestamp("2024-01-01", tz="UTC")


def feature_project(root: Path, monkeypatch) -> tuple[Path, Any]:
    """A project with the dev stack whose platform database is migrated (no MLflow store: offline and
    online features do not need one). Returns (project root, stack spec)."""
    from mlplat_providers.local.layout import StateLayout

    project = write_project(root)
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(project))
    monkeypatch.setenv("MLPLAT_USER", "ds@example.com")
    monkeypatch.delenv("MLPLAT_STACK", raising=False)
    spec = load_stack("dev", project)
    layout = StateLayout(spec.state_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    Database(layout.platform_db).migrate()
    return project, spec


def store_for(spec) -> Any:
    from mlplat.features import FeatureStore

    return FeatureStore(spec=spec, ctx=Context(_user="ds@example.com"))


def seconds(values) -> pd.DatetimeIndex:
    """Offsets in seconds from BASE → UTC timestamps (an index, so frames align by position)."""
    return pd.DatetimeIndex([BASE + pd.Timedelta(seconds=int(v)) for v in values], dtype="datetime64[us, UTC]")


def brute_force(source: pd.DataFrame, entities: pd.DataFrame, key: str, features: list[str], *, ttl_s: int | None,
                created: str | None, ts: str = "event_timestamp") -> list[dict[str, Any]]:
    """For each entity row: the source row with the same key, event time <= the row's time and
    >= time - ttl, latest event time first, then latest created time (missing lowest), then last row."""
    rows = source.reset_index(drop=True)
    by_key = {k: group for k, group in rows.groupby(key)}  # the index keeps each row's position
    out = []
    for _, entity in entities.iterrows():
        at = entity[ts]
        best, best_rank = None, None
        group = by_key.get(entity[key], rows.iloc[0:0])
        for i, row in group.iterrows():
            if row[ts] > at:
                continue
            if ttl_s is not None and row[ts] < at - pd.Timedelta(seconds=ttl_s):
                continue
            c = row[created] if created else None
            rank = (row[ts], c is not None and not pd.isna(c), c if c is not None and not pd.isna(c) else BASE, i)
            if best_rank is None or rank > best_rank:
                best, best_rank = row, rank
        out.append({f: (None if best is None or pd.isna(best[f]) else best[f]) for f in features})
    return out


def plain(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value
