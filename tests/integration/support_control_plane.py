"""A stack whose ledger is on PostgreSQL behind `mlplat server`, and the client processes that load it.

    project, url = pg_clone(base, dest, postgres, register={"ranker": 1})

:func:`pg_clone` copies the fault-injection suite's trained project (``tests/chaos/support.py``: scorer v1
in production and deployed, v2 in staging, 300 captures of v1), registers more versions in one training
process if asked, all embedded (SQLite), then moves the ledger onto a fresh PostgreSQL database
(``mlplat db export``/``import``, in process) for ``mlplat server --database URL`` to serve. The MLflow
store and the stack's key stay in the project's state directory, which the server shares.

Client processes (``python -m tests.integration.support_control_plane ROLE ...``) print ``ready``, wait
for one byte on stdin, work until a stop file appears (or their round limit), then print one JSON
document of everything they sent and what each request answered:

* ``labels URL WORKER IDS_FILE STOP_FILE ROUNDS``: label batches through the server's ``monitoring.labels``
  (a RemotePlane, as ``mlplat monitor labels`` sends them), each under its own batch id; every third batch
  is delivered twice (the second must be a replay). Labels are a function of the request id
  (:func:`label_of`), so concurrent writers never disagree.
* ``captures DB_URL KEY_DIR WORKER STOP_FILE ROUNDS``: the gateway's capture writer on the same PostgreSQL
  ledger, ``PER_ROUND`` single-row captures a round.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

from tests.conftest import REPO
from tests.integration.support_registry import AUTHOR

ENV = "dev"
PER_ROUND = 20
PACE = 0.2  # seconds between a client process's rounds: load over the whole run, not a burst at its start
LABELS_PER_BATCH = 40
# Staging integration tests time single requests; on a machine this loaded a tight budget measures the load.
LATENCY_BUDGET = "latencyBudgetMs: 5000"

TRAIN_MANY = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    import mlplat

    wanted = json.loads(sys.argv[1])
    data = Path("data"); data.mkdir(exist_ok=True)
    X, y = make_classification(n_samples=1200, n_features=6, n_informative=4, random_state=7)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]); frame["label"] = y
    frame.iloc[:900].to_parquet(data / "train.parquet", index=False)
    frame.iloc[900:].to_parquet(data / "holdout.parquet", index=False)
    train = frame.iloc[:900]
    done = []
    for name, count in wanted.items():
        for seed in range(1, count + 1):
            with mlplat.start_run(experiment=name, datasets={"train": "data/train.parquet"}, autolog=False) as run:
                model = LogisticRegression(C=1.0 / seed, max_iter=500).fit(train.drop(columns=["label"]), train["label"])
                done.append([name, run.log_model(model, name=name, input_example=train.drop(columns=["label"]).head(3),
                                                 holdout={"path": "data/holdout.parquet", "label": "label"})])
    print("VERSIONS " + json.dumps(done))
""")


def loosen_latency_budget(project: Path) -> None:
    """Staging integration tests time single requests; with sixteen clients on two cores a tight budget
    measures the machine's load, not the model server."""
    stack = project / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace("  mlplat:serving:\n", f"  mlplat:serving:\n    {LATENCY_BUDGET}\n", 1))


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """A CLI or client process in ``project``: embedded unless ``extra`` names a control plane."""
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR, "MLPLAT_CONTAINER_ENGINE": "none",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name in ("MLPLAT_STACK", "MLPLAT_CONTROL_PLANE_URL", "MLPLAT_DATABASE_URL", "MLPLAT_FAULT_KILL"):
        env.pop(name, None)
    return env | extra


def register_versions(project: Path, versions: dict[str, int]) -> list[tuple[str, int]]:
    """Train and register ``count`` versions of each model in one process (embedded); ``[(model, version)]``."""
    done = subprocess.run([sys.executable, "-c", TRAIN_MANY, json.dumps(versions)], cwd=project,
                          env=project_env(project), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(v) for v in json.loads(done.stdout.split("VERSIONS ", 1)[1])]


def move_to_postgres(project: Path, url: str) -> None:
    """The project's SQLite ledger, every row and the audit chain, into the empty database at ``url``."""
    from mlplat.db import Database, dispose_engines, open_database
    from mlplat.db_transfer import export_ledger, import_ledger

    state = project / ".mlplat" / ENV
    import_ledger(open_database(url, key_dir=state), export_ledger(Database(state / "platform.db", key_dir=state)))
    dispose_engines()  # no pooled connection of this process outlives the move


def pg_clone(base: Path, dest: Path, postgres, *, register: dict[str, int] | None = None) -> tuple[Path, str]:
    """(project, database URL): see the module docstring."""
    from tests.chaos.support import clone
    from tests.pg import fresh_database

    project = clone(base, dest)
    loosen_latency_budget(project)
    if register:
        registered = register_versions(project, register)
        assert [m for m, _ in registered] == [m for m, n in register.items() for _ in range(n)], registered
    url = fresh_database(postgres)
    move_to_postgres(project, url)
    return project, url


def pg_ledger(project: Path, url: str):
    from mlplat.db import open_database

    return open_database(url, key_dir=project / ".mlplat" / ENV)


def seed_captures(project: Path, url: str, ids: list[str], *, model: str = "scorer", version: int = 1) -> None:
    """Single-row captures under ``ids``, through the gateway's capture writer."""
    writer = capture_writer(project, url)
    for i, request_id in enumerate(ids):
        writer.put(capture_item(request_id, i, model=model, version=version))
    writer.stop()
    assert (writer.written, writer.dropped) == (len(ids), 0)


def capture_writer(project: Path, url: str):
    from mlplat.serving.capture import CaptureWriter

    writer = CaptureWriter(pg_ledger(project, url), 1.0, interval=0.02)
    writer.start()
    return writer


def capture_item(request_id: str, n: int, *, model: str = "scorer", version: int = 1) -> tuple:
    """What the gateway queues for one scored single-row request."""
    import numpy as np

    from mlplat.serving.protocol import Inputs

    row = np.array([[float(n % 7), float(n % 11), 0.5, -0.5, 1.0, float(n % 3)]])
    inputs = Inputs(rows=1, columns=tuple(f"x{i}" for i in range(6)), array=row)
    return (request_id, time.time(), model, version, "primary", ENV, inputs, [n % 2], 1.5, 200, False, None, None)


def label_of(request_id: str) -> int:
    return zlib.crc32(request_id.encode()) % 2


def promotion_rows(conn, model: str, version: int | None = None, target: str | None = None) -> list[dict]:
    sql, args = "SELECT * FROM promotions WHERE model=?", [model]
    if version is not None:
        sql, args = sql + " AND version=?", [*args, version]
    if target is not None:
        sql, args = sql + " AND target=?", [*args, target]
    return [dict(r) for r in conn.execute(sql + " ORDER BY id", tuple(args))]


def production_counts(conn) -> dict[tuple[str, str], int]:
    return {(r[0], r[1]): r[2] for r in conn.execute(
        "SELECT model, environment, count(*) FROM model_stages WHERE stage='production' GROUP BY model, environment")}


def status_counts(metrics_text: str) -> dict[tuple[str, int], int]:
    """(operation, HTTP status) -> requests, from the server's /metrics."""
    import re

    return {(m.group(1), int(m.group(2))): int(m.group(3)) for m in re.finditer(
        r'mlplat_api_requests_total\{operation="([^"]+)",status="(\d+)"\} (\d+)', metrics_text)}


# --- client processes --------------------------------------------------------------------------


def start_client(role: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.support_control_plane", role, *map(str, args)],
                            cwd=cwd, env=project_env(cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_ready(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    if line.strip() != "ready":
        out, err = process.communicate(timeout=30)
        raise AssertionError(f"client did not start: {line}{out}\n{err[-3000:]}")


def finish(process: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"client exited {process.returncode}: {err[-3000:]}"
    return json.loads(out)


def _labels(url: str, worker: int, ids_file: str, stop_file: str, rounds: int) -> dict:
    from mlplat.api.plane import RemotePlane
    from mlplat.errors import MlplatError

    ids = json.loads(Path(ids_file).read_text())
    rng = random.Random(1000 + worker)
    plane = RemotePlane(url, stack="dev", user=f"labeller{worker}@example.com")
    print("ready", flush=True)
    sys.stdin.read(1)
    batches, errors = [], []
    for n in range(rounds):
        if n >= 3 and Path(stop_file).exists():
            break
        chosen = rng.sample(ids, LABELS_PER_BATCH) + [f"ghost-{worker}-{n}"]
        labels = [{"request_id": i, "label": label_of(i)} for i in chosen]
        batch_id = f"w{worker}-b{n}"
        for delivery in (1, 2) if n % 3 == 0 else (1,):
            try:
                answer = plane.call("monitoring.labels", labels=labels, source=f"worker{worker}", batch_id=batch_id)
            except MlplatError as exc:
                errors.append({"batch_id": batch_id, "error": type(exc).__name__, "message": exc.message})
                continue
            batches.append({"batch_id": batch_id, "delivery": delivery, "ids": chosen, **answer})
        time.sleep(PACE)
    plane.close()
    return {"batches": batches, "errors": errors}


def _captures(db_url: str, key_dir: str, worker: int, stop_file: str, rounds: int) -> dict:
    from mlplat.db import open_database
    from mlplat.serving.capture import CaptureWriter

    writer = CaptureWriter(open_database(db_url, key_dir=key_dir), 1.0, interval=0.02)
    writer.start()
    print("ready", flush=True)
    sys.stdin.read(1)
    ids = []
    for n in range(rounds):
        if n >= 3 and Path(stop_file).exists():
            break
        for k in range(PER_ROUND):
            request_id = f"c{worker}-{n}-{k}"
            writer.put(capture_item(request_id, k))
            ids.append(request_id)
        time.sleep(PACE)  # traffic arrives over time, as at a gateway, not all in the first batch
    # the writer's stop() gives up on a backlog after a few seconds: let it write what was queued first
    deadline = time.monotonic() + 300
    while writer.written + writer.dropped < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop()
    return {"ids": ids, "written": writer.written, "dropped": writer.dropped}


def main(argv: list[str]) -> None:
    role, args = argv[0], argv[1:]
    if role == "labels":
        doc = _labels(args[0], int(args[1]), args[2], args[3], int(args[4]))
    elif role == "captures":
        doc = _captures(args[0], args[1], int(args[2]), args[3], int(args[4]))
    else:
        raise SystemExit(f"unknown role {role}")
    print(json.dumps(doc), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
