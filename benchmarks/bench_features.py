"""Feature store: point-in-time retrieval and online lookups, mlplat vs Feast on the same data.

1,000,000 feature rows × 10 features over 10,000 entities (90 days, with a created timestamp),
100,000 entity rows (5 % of them for entities with no history at all), 30-day TTL.

Each side runs in its own process under ``/usr/bin/time -v`` (peak RSS of the whole process):
mlplat from this virtualenv, Feast 0.67 (its local file offline store and SQLite online store)
from a separate virtualenv under benchmarks/.work/feast-venv that this script creates; Feast is
never an mlplat dependency. Both read the same Parquet file. Retrieval is timed from the entity
DataFrame in memory to a pandas DataFrame (Feast: ``get_historical_features(...).to_df()``).

Like for like: Feast leaves out entity rows that have no value inside the TTL; mlplat returns
every entity row with nulls. The results are compared on the rows both return, value by value,
and the rows only mlplat returns must be exactly the ones with no value in the TTL.

Online: both materialize the same window, then 1,000 lookups of 100 random entities × 10 features.

    python benchmarks/bench_features.py          # prints a markdown section
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "features"
VENV = HERE / ".work" / "feast-venv"
FEAST = "feast==0.67.0"
ROWS, ENTITIES, FEATURES, ENTITY_ROWS, TTL_DAYS, DAYS = 1_000_000, 10_000, 10, 100_000, 30, 90
LOOKUPS, LOOKUP_ENTITIES = 1000, 100
REPEAT = 3
NAMES = [f"f{i}" for i in range(FEATURES)]


def make_data() -> None:
    import numpy as np
    import pandas as pd

    WORK.mkdir(parents=True, exist_ok=True)
    if (WORK / "features.parquet").exists() and (WORK / "entities.parquet").exists():
        return
    rng = np.random.default_rng(2026)
    start = pd.Timestamp("2024-01-01", tz="UTC").value // 1000
    span = DAYS * 86_400 * 10**6
    ts = start + rng.integers(0, span, ROWS)
    frame = pd.DataFrame({
        "driver_id": rng.integers(0, ENTITIES, ROWS).astype("int64"),
        "event_timestamp": pd.to_datetime(ts, unit="us", utc=True),
        "created": pd.to_datetime(ts + rng.integers(0, 3_600 * 10**6, ROWS), unit="us", utc=True),
    })
    for name in NAMES:
        frame[name] = rng.random(ROWS)
    frame.to_parquet(WORK / "features.parquet", index=False)
    unseen = int(ENTITY_ROWS * 0.05)
    keys = np.concatenate([rng.integers(0, ENTITIES, ENTITY_ROWS - unseen), rng.integers(ENTITIES, ENTITIES * 2, unseen)])
    rng.shuffle(keys)
    pd.DataFrame({
        "driver_id": keys.astype("int64"),
        "event_timestamp": pd.to_datetime(start + rng.integers(0, span + TTL_DAYS * 86_400 * 10**6, ENTITY_ROWS),
                                          unit="us", utc=True),
    }).to_parquet(WORK / "entities.parquet", index=False)


def ensure_feast() -> Path:
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import feast, sys; sys.exit(feast.__version__ != '0.67.0')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", FEAST], check=True)
    return python


def lookup_keys():
    import random

    rng = random.Random(7)
    return [[{"driver_id": rng.randrange(ENTITIES)} for _ in range(LOOKUP_ENTITIES)] for _ in range(LOOKUPS)]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- workers (each in its own process) -----------------------------------------------------------------


def worker_mlplat() -> dict:
    import pandas as pd

    from mlplat.context import Context
    from mlplat.features import Entity, Feature, FeatureStore, FeatureView
    from mlplat.stack import load_stack

    spec = load_stack("dev", HERE / ".work" / "features-mlplat")  # provisioned by main(), outside this process
    store = FeatureStore(spec=spec, ctx=Context(_user="bench@example.com"))
    driver = Entity("driver", join_key="driver_id")
    view = FeatureView("stats", entities=[driver], source=str(WORK / "features.parquet"), created_timestamp_field="created",
                       ttl=f"{TTL_DAYS}d", features=[Feature(n, "float64") for n in NAMES])
    store.apply([view])
    entities = pd.read_parquet(WORK / "entities.parquet")
    refs = [f"stats:{n}" for n in NAMES]
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        result = store.get_historical_features(entities, refs)
        times.append(time.perf_counter() - t0)
    result.to_parquet(WORK / "result-mlplat.parquet", index=False)
    t0 = time.perf_counter()
    store.materialize("2024-01-01", "2024-04-01")
    materialize_s = time.perf_counter() - t0
    lookups = []
    for rows in lookup_keys():
        t0 = time.perf_counter()
        store.get_online_features(rows, refs)
        lookups.append(time.perf_counter() - t0)
    return {"times": times, "rows": len(result), "materialize_s": materialize_s, "lookups": lookups}


FEAST_REPO = """
project: bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def worker_feast() -> dict:
    import shutil
    from datetime import datetime, timedelta

    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float64
    from feast.value_type import ValueType

    repo = WORK / "feast-repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(FEAST_REPO.format(repo=repo))
    source = FileSource(path=str(WORK / "features.parquet"), timestamp_field="event_timestamp",
                        created_timestamp_column="created")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=TTL_DAYS), source=source,
                       schema=[Field(name=n, dtype=Float64) for n in NAMES])
    store = FeatureStore(repo_path=str(repo))
    store.apply([driver, view])
    entities = pd.read_parquet(WORK / "entities.parquet")
    refs = [f"stats:{n}" for n in NAMES]
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        result = store.get_historical_features(entity_df=entities, features=refs).to_df()
        times.append(time.perf_counter() - t0)
    result.to_parquet(WORK / "result-feast.parquet", index=False)
    t0 = time.perf_counter()
    store.materialize(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    materialize_s = time.perf_counter() - t0
    lookups = []
    for rows in lookup_keys():
        t0 = time.perf_counter()
        store.get_online_features(features=refs, entity_rows=rows).to_dict()
        lookups.append(time.perf_counter() - t0)
    return {"times": times, "rows": len(result), "materialize_s": materialize_s, "lookups": lookups}


# --- driver ------------------------------------------------------------------------------------------


def run_worker(python: str, name: str) -> tuple[dict, float]:
    out = WORK / f"{name}.json"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLPLAT_PROJECT_DIR", "MLPLAT_STACK")}
    proc = subprocess.run(["/usr/bin/time", "-v", python, str(Path(__file__).resolve()), "--worker", name, str(out)],
                          capture_output=True, text=True, env=env, cwd=HERE)
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return json.loads(out.read_text()), peak_kb / 1024


def compare() -> dict:
    import numpy as np
    import pandas as pd

    ours = pd.read_parquet(WORK / "result-mlplat.parquet")
    theirs = pd.read_parquet(WORK / "result-feast.parquet")
    has_value = ours[NAMES].notna().any(axis=1)
    keys = ["driver_id", "event_timestamp"]
    merged = ours[has_value].merge(theirs, on=keys, how="outer", suffixes=("", "_feast"), indicator=True)
    only_ours = int((merged["_merge"] == "left_only").sum())
    only_feast_rows = merged[merged["_merge"] == "right_only"]
    only_feast_with_value = int(only_feast_rows[[f"{n}_feast" for n in NAMES]].notna().any(axis=1).sum())
    both = merged[merged["_merge"] == "both"]
    mismatches = 0
    for n in NAMES:
        a, b = both[n].to_numpy(dtype=float), both[f"{n}_feast"].to_numpy(dtype=float)
        mismatches += int((~(np.isclose(a, b, rtol=0, atol=0) | (np.isnan(a) & np.isnan(b)))).sum())
    return {"mlplat_rows": len(ours), "mlplat_rows_with_value": int(has_value.sum()), "feast_rows": len(theirs),
            "compared_rows": len(both), "only_mlplat_with_value": only_ours,
            "only_feast_rows": len(only_feast_rows), "only_feast_with_value": only_feast_with_value,
            "value_mismatches": mismatches}


def main() -> None:
    sys.path.insert(0, str(HERE))
    from _common import fresh_project

    make_data()
    feast_python = ensure_feast()
    fresh_project("features-mlplat")
    ours, our_rss = run_worker(sys.executable, "mlplat")
    theirs, their_rss = run_worker(str(feast_python), "feast")
    check = compare()
    best = lambda r: min(r["times"])  # noqa: E731
    p = lambda r, q: percentile(r["lookups"], q) * 1000  # noqa: E731
    print("### Feature store: point-in-time retrieval and online lookups — `benchmarks/bench_features.py`\n")
    print(f"{ROWS:,} feature rows × {FEATURES} features over {ENTITIES:,} entities, {ENTITY_ROWS:,} entity rows "
          f"({TTL_DAYS}-day TTL, created timestamps), same Parquet file; best of {REPEAT} in-process runs; peak RSS "
          "of each whole process (`/usr/bin/time -v`). Feast 0.67.0 local file offline store + SQLite online store.\n")
    print("| | Feast | mlplat | ratio |")
    print("|---|---|---|---|")
    print(f"| historical retrieval (best) | {best(theirs):.2f} s | {best(ours):.3f} s | "
          f"{best(theirs) / best(ours):.0f}× faster |")
    print(f"| historical retrieval (first run) | {theirs['times'][0]:.2f} s | {ours['times'][0]:.3f} s | "
          f"{theirs['times'][0] / ours['times'][0]:.0f}× faster |")
    print(f"| peak RSS of the process | {their_rss:.0f} MB | {our_rss:.0f} MB | {our_rss / their_rss:.2f} of Feast's |")
    print(f"| rows returned | {theirs['rows']:,} | {ours['rows']:,} (every entity row) | |")
    print(f"| materialize 90 days to SQLite | {theirs['materialize_s']:.2f} s | {ours['materialize_s']:.2f} s | "
          f"{theirs['materialize_s'] / ours['materialize_s']:.0f}× faster |")
    print(f"| online lookup {LOOKUP_ENTITIES} entities × {FEATURES} features, p50 | {p(theirs, 50):.2f} ms | "
          f"{p(ours, 50):.2f} ms | {p(theirs, 50) / p(ours, 50):.0f}× faster |")
    print(f"| online lookup, p99 | {p(theirs, 99):.2f} ms | {p(ours, 99):.2f} ms | {p(theirs, 99) / p(ours, 99):.0f}× faster |")
    print()
    print(f"Like for like: {check['compared_rows']:,} rows returned by both, {check['value_mismatches']} differing values; "
          f"mlplat rows with a value that Feast lacks: {check['only_mlplat_with_value']}; Feast rows mlplat lacks with a "
          f"value: {check['only_feast_with_value']} (Feast rows with no value at all: {check['only_feast_rows']}); mlplat "
          f"rows with no value inside the TTL: {check['mlplat_rows'] - check['mlplat_rows_with_value']:,} (returned as nulls).")
    print()
    print(json.dumps({"mlplat": {k: v for k, v in ours.items() if k != "lookups"} | {"rss_mb": our_rss},
                      "feast": {k: v for k, v in theirs.items() if k != "lookups"} | {"rss_mb": their_rss},
                      "check": check}), file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        result = worker_mlplat() if sys.argv[2] == "mlplat" else worker_feast()
        Path(sys.argv[3]).write_text(json.dumps(result))
    else:
        main()
