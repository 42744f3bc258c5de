"""The control plane: what going through `mlplat server` costs against opening the ledger in the process.

One project (the dev stack, 20 registered versions of two models), its ledger in SQLite and, moved with
`mlplat db export/import` (in process), on PostgreSQL (a private server started with initdb/pg_ctl as
the tests start theirs). Two `mlplat server` processes serve the two ledgers on loopback.

* ledger round trip: a light read (`audit.log`, limit 1) N times, through the server (RemotePlane, one
  keep-alive connection) and embedded (the same operation in this process on the same ledger);
* `mlplat models list` as a user runs it (a new process each time), embedded and in server mode;
* capture ingestion: the gateway's capture writer (batched, its own thread) into PostgreSQL;
* 16 writer processes at once sending label batches through the server on PostgreSQL.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

from _common import BIN, REPO, fresh_project, median, table, time_command

N = 2000
WARM_UP = 200
CLI_REPEAT = 10
CAPTURES = 50_000
WRITERS = 16
BATCHES = 30  # per writer
LABELS = 100  # per batch

TRAIN = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    import mlplat

    data = Path("data"); data.mkdir(exist_ok=True)
    X, y = make_classification(n_samples=1200, n_features=6, n_informative=4, random_state=7)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]); frame["label"] = y
    frame.iloc[:900].to_parquet(data / "train.parquet", index=False)
    frame.iloc[900:].to_parquet(data / "holdout.parquet", index=False)
    train = frame.iloc[:900]
    for name in ("bench-a", "bench-b"):
        for seed in range(1, 11):
            with mlplat.start_run(experiment=name, datasets={"train": "data/train.parquet"}, autolog=False) as run:
                model = LogisticRegression(C=1.0 / seed, max_iter=500).fit(train.drop(columns=["label"]), train["label"])
                run.log_model(model, name=name, holdout={"path": "data/holdout.parquet", "label": "label"})
""")

WRITER = textwrap.dedent("""
    import json, sys, time
    from mlplat.api.plane import RemotePlane
    from mlplat.errors import MlplatError

    url, worker, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    plane = RemotePlane(url, stack="dev", user=f"writer{worker}@example.com")
    plane.call("audit.log", limit=1)  # connected
    print("ready", flush=True)
    sys.stdin.read(1)
    stored, failures, started = 0, [], time.perf_counter()
    for b in range(batches):
        first = (worker * batches + b) * size
        labels = [{"request_id": f"bench-{i}", "label": i % 2} for i in range(first, first + size)]
        try:
            stored += plane.call("monitoring.labels", labels=labels, source="bench", batch_id=f"w{worker}-{b}")["stored"]
        except MlplatError as exc:
            failures.append(f"{type(exc).__name__}: {exc.message}")
    print(json.dumps({"stored": stored, "failures": failures, "seconds": time.perf_counter() - started}), flush=True)
""")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def round_trips(plane, n: int) -> list[float]:
    for _ in range(WARM_UP):
        plane.call("audit.log", limit=1)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        plane.call("audit.log", limit=1)
        times.append((time.perf_counter() - start) * 1000)
    return times


def capture_rate(db, n: int) -> tuple[float, int]:
    """Rows per second from the first queued capture to the last one committed; (rate, dropped)."""
    import numpy as np

    from mlplat.serving.capture import CaptureWriter
    from mlplat.serving.protocol import Inputs

    writer = CaptureWriter(db, 1.0)
    writer.start()
    columns = tuple(f"x{i}" for i in range(6))
    items = [(f"bench-{i}", time.time(), "bench-a", 1, "primary", "dev",
              Inputs(rows=1, columns=columns, array=np.array([[i % 7, i % 11, 0.5, -0.5, 1.0, i % 3]], dtype=float)),
              [i % 2], 1.5, 200, False, None, None) for i in range(n)]
    start = time.perf_counter()
    for item in items:
        writer.put(item)
    while writer.written + writer.dropped < n:
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    writer.stop()
    return n / seconds, writer.dropped


def writers_at_once(url: str, cwd) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), str(BATCHES), str(LABELS)], cwd=cwd, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(WRITERS)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate()[1][-2000:]
    start = time.perf_counter()
    for p in procs:
        p.stdin.write("g")
        p.stdin.flush()
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=1200)
        docs.append(json.loads(out) if p.returncode == 0 else {"stored": 0, "failures": [err[-500:]], "seconds": 0})
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "stored": sum(d["stored"] for d in docs),
            "failures": [f for d in docs for f in d["failures"]], "exits": [p.returncode for p in procs]}


def main() -> None:
    from rich.console import Console

    from mlplat.api.plane import EmbeddedPlane, RemotePlane
    from mlplat.context import Context
    from mlplat.db import Database, dispose_engines, open_database
    from mlplat.db_transfer import export_ledger, import_ledger
    from tests.pg import fresh_database
    from tests.pg import start_server as start_postgres
    from tests.server_support import start_server

    root = fresh_project("control-plane")
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com"}
    env.pop("MLPLAT_CONTROL_PLANE_URL", None)
    subprocess.run([sys.executable, "-c", TRAIN], cwd=root, env=env, check=True, capture_output=True)
    state = root / ".mlplat" / "dev"
    postgres = start_postgres()
    servers = []
    try:
        url = fresh_database(postgres)
        import_ledger(open_database(url, key_dir=state), export_ledger(Database(state / "platform.db", key_dir=state)))
        os.environ["MLPLAT_PROJECT_DIR"] = str(root)
        servers = [start_server(root, "dev"), start_server(root, "dev", database_url=url)]
        on_sqlite, on_pg = servers
        quiet = Console(file=open(os.devnull, "w"))
        ctx = Context(project_dir=root, console=quiet, err=quiet, _user="ds@example.com", ledger_owner=True)
        spec = ctx.stack("dev")
        pg_ctx = Context(project_dir=root, console=quiet, err=quiet, _user="ds@example.com", ledger_owner=True,
                         database_url=url)
        listed = EmbeddedPlane(spec, ctx).call("models.list")["versions"]

        # 1. ledger round trip
        trips = {}
        for label, plane in (("through the server, PostgreSQL", RemotePlane(on_pg.url, stack="dev", user="ds")),
                             ("embedded, PostgreSQL", EmbeddedPlane(spec, pg_ctx)),
                             ("through the server, SQLite", RemotePlane(on_sqlite.url, stack="dev", user="ds")),
                             ("embedded, SQLite", EmbeddedPlane(spec, ctx))):
            trips[label] = round_trips(plane, N)
            plane.close()
        rows = []
        for label, times in trips.items():
            ledger = label.split(", ")[1]
            embedded = trips[f"embedded, {ledger}"]
            rows.append((f"`audit.log limit=1` {label}", f"{statistics.median(times):.2f} ms",
                         f"{percentile(times, 99):.2f} ms",
                         f"{percentile(times, 99) / percentile(embedded, 99):.2f}×"))
        p99 = percentile(trips["through the server, PostgreSQL"], 99)
        p99_sqlite = percentile(trips["through the server, SQLite"], 99)
        print(f"### Ledger round trip on loopback (N={N} after {WARM_UP} warm-up calls, one client)\n")
        print(table(rows, ("call", "p50", "p99", "p99 vs embedded, same ledger")))
        print(f"\nTarget p99 ≤ 5 ms through the server: {'met' if p99 <= 5 else 'NOT met'} on PostgreSQL "
              f"({p99:.2f} ms), {'met' if p99_sqlite <= 5 else 'NOT met'} on SQLite ({p99_sqlite:.2f} ms).")

        # 2. the CLI, a new process each time
        argv = [str(BIN / "mlplat"), "models", "list", "--stack", "dev"]
        cli = {}
        for label, extra in (("embedded (SQLite)", {}), ("server mode, server on the same SQLite ledger",
                                                         on_sqlite.client_env()),
                             ("server mode, server on PostgreSQL", on_pg.client_env())):
            run_env = {**env, **extra}
            time_command(argv, repeat=2, env=run_env)  # page cache, not the interpreter
            cli[label] = median(time_command(argv, repeat=CLI_REPEAT, env=run_env))
        base = cli["embedded (SQLite)"]
        print(f"\n### `mlplat models list` ({len(listed)} versions), median of {CLI_REPEAT} runs, a new process each\n")
        print(table([(label, f"{t * 1000:.0f} ms", f"{t / base:.2f}×") for label, t in cli.items()],
                    ("mode", "wall time", "vs embedded")))
        ratio = cli["server mode, server on the same SQLite ledger"] / base
        ratio_pg = cli["server mode, server on PostgreSQL"] / base
        print(f"\nTarget ≤ 1.5× embedded: {'met' if max(ratio, ratio_pg) <= 1.5 else 'NOT met'} "
              f"({ratio:.2f}× on the same ledger, {ratio_pg:.2f}× with the server on PostgreSQL).")

        # 3. capture ingestion into PostgreSQL, the gateway's writer
        dispose_engines()
        rate, dropped = capture_rate(open_database(url, key_dir=state), CAPTURES)
        rate_sqlite, dropped_sqlite = capture_rate(Database(state / "platform.db"), CAPTURES)
        print(f"\n### Capture ingestion: {CAPTURES:,} single-row captures through the gateway's capture writer\n")
        print(table([("PostgreSQL", f"{rate:,.0f} rows/s", dropped), ("SQLite (WAL, synchronous=FULL)",
                                                                        f"{rate_sqlite:,.0f} rows/s", dropped_sqlite)],
                    ("ledger", "rows/s (queued → committed)", "dropped")))
        print(f"\nTarget ≥ 5,000 rows/s into PostgreSQL: {'met' if rate >= 5000 and not dropped else 'NOT met'} "
              f"({rate:,.0f} rows/s).")

        # 4. 16 writer processes through the server on PostgreSQL
        result = writers_at_once(on_pg.url, root)
        requests = WRITERS * BATCHES
        conn = open_database(url, key_dir=state).connect()
        rows_in = conn.execute("SELECT count(*) FROM monitor_labels").fetchone()[0]
        conn.close()
        print(f"\n### {WRITERS} writer processes at once through the server on PostgreSQL "
              f"({BATCHES} label batches of {LABELS} each)\n")
        print(table([(requests, f"{result['seconds']:.2f} s", f"{requests / result['seconds']:.0f}",
                      f"{result['stored'] / result['seconds']:,.0f}", len(result["failures"]),
                      f"{rows_in:,} of {requests * LABELS:,}")],
                    ("requests", "wall time", "requests/s", "labels/s", "failures", "labels in the ledger")))
        print(f"\nTarget 0 failures: {'met' if not result['failures'] and rows_in == requests * LABELS else 'NOT met'}."
              + (f" First failures: {result['failures'][:3]}" if result["failures"] else ""))
    finally:
        for server in servers:
            server.stop()
        dispose_engines()
        postgres.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
