"""Serving throughput and latency, side by side in one run, plus rollback under load.

    python benchmarks/serving/bench_serving.py [--seconds 10]

Same scikit-learn model (GradientBoosting, 60 trees, 8 features), 1-row JSON requests
(`dataframe_records`), one worker per server, each server in its own process, the load
generator (loadgen.py, asyncio keep-alive connections) in another. Concurrency 1 and 16.
Servers: `mlflow models serve`, mlplat's single-model server, the mlplat gateway with one
version, the gateway with a 2-variant canary (50/50, capture of every request on), and a
bare FastAPI app calling model.predict on a numpy array (the ceiling).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "benchmarks" / ".work" / "serving"
PY = sys.executable
FEATURES = ["income", "debt_ratio", "age", "utilization", "late_payments", "accounts", "inquiries", "tenure"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_models() -> tuple[Path, Path]:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = make_classification(n_samples=3000, n_features=8, n_informative=5, random_state=7)
    frame = pd.DataFrame(X, columns=FEATURES)
    model = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=7).fit(frame, y)
    out = []
    for name in ("v1", "v2"):
        path = WORK / name
        mlflow.sklearn.save_model(model, str(path), signature=infer_signature(frame, model.predict(frame)),
                                  pip_requirements=["scikit-learn"], skops_trusted_types=["sklearn.tree._tree.Tree"])
        out.append(path)
    return out[0], out[1]


def platform_db(name: str, steps: list[tuple]) -> Path:
    from mlplat.db import Database
    from mlplat.services import rollout as ro

    path = WORK / name / "platform.db"
    path.parent.mkdir(parents=True)
    db = Database(path)
    db.migrate()
    for version, strategy, kw in steps:  # one transaction each: the audit head file follows each commit
        with db.transaction() as conn:
            ro.deploy(conn, model="credit", environment="production", version=version, strategy=strategy,
                      actor="bench", method="trusted-local", **kw)
    return path


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def load(port: int, path: str, seconds: float, concurrency: int, trace: Path | None = None) -> dict:
    argv = [PY, str(HERE / "loadgen.py"), "127.0.0.1", str(port), path, str(WORK / "body.json"), str(seconds),
            str(concurrency)]
    if trace:
        argv += ["--trace", str(trace)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def servers(v1: Path, v2: Path):
    """(label, argv builder, health path, scoring path)."""
    def gateway(db: Path, sampling: float):
        return lambda port: [PY, str(HERE / "gateway_proc.py"), json.dumps(
            {"db": str(db), "models": {"1": str(v1), "2": str(v2)}, "port": port, "sampling": sampling})]

    from mlplat.services.rollout import CanaryPolicy

    policy = CanaryPolicy((50, 100), 10 ** 6, 1.0, 10 ** 6, 10 ** 6, 10 ** 9)  # stays at 50 % for the run
    one = platform_db("gateway-1", [(1, "direct", {})])
    canary = platform_db("gateway-canary", [(1, "direct", {}), (2, "canary", {"canary": policy})])
    return [
        ("mlflow models serve", lambda port: [str(Path(PY).parent / "mlflow"), "models", "serve", "-m", str(v1),
                                              "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
         "/ping", "/invocations"),
        ("bare FastAPI + model.predict (ceiling)", lambda port: [PY, str(HERE / "bare_app.py"), str(v1), str(port)],
         None, "/invocations"),
        ("mlplat model server", lambda port: [PY, "-m", "mlplat.serving.model_server", "--model-dir", str(v1),
                                              "--port", str(port), "--name", "credit"], "/ping", "/invocations"),
        ("mlplat gateway, 1 version", gateway(one, 0.0), "/ping", "/endpoints/credit/invocations"),
        ("mlplat gateway, canary 50/50 + capture", gateway(canary, 1.0), "/ping", "/endpoints/credit/invocations"),
    ]


def rollback_under_load(v1: Path, v2: Path, seconds: float = 6.0) -> dict:
    from mlplat.db import Database
    from mlplat.services import rollout as ro

    db_path = platform_db("rollback", [(1, "direct", {}), (2, "direct", {})])
    port = free_port()
    proc = subprocess.Popen([PY, str(HERE / "gateway_proc.py"), json.dumps(
        {"db": str(db_path), "models": {"1": str(v1), "2": str(v2)}, "port": port, "sampling": 1.0})],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/ping", proc)
        trace = WORK / "rollback-trace.txt"
        argv = [PY, str(HERE / "loadgen.py"), "127.0.0.1", str(port), "/endpoints/credit/invocations",
                str(WORK / "body.json"), str(seconds), "16", "--trace", str(trace)]
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        time.sleep(seconds / 3)
        db = Database(db_path)
        with db.transaction() as conn:
            ro.rollback(conn, model="credit", environment="production", actor="bench", method="trusted-local")
        issued = time.time()
        out, _ = gen.communicate(timeout=60)
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        stop(proc)
    rows = [line.split() for line in trace.read_text().splitlines()]
    rows = [(float(t), int(s), v[0] if v else "") for t, s, *v in rows]
    first_v1 = min((t for t, s, v in rows if t > issued and v == "1"), default=None)
    last_v2 = max((t for t, s, v in rows if v == "2"), default=None)
    return {"requests": summary["requests"], "failed": summary["failed"] + sum(1 for _, s, _ in rows if s != 200),
            "first_v1_after_s": None if first_v1 is None else round(first_v1 - issued, 3),
            "last_v2_after_s": None if last_v2 is None else round(last_v2 - issued, 3)}


def main() -> None:
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 10.0
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    v1, v2 = make_models()
    body = {"dataframe_records": [dict(zip(FEATURES, [0.3, -1.2, 0.5, 0.1, 1.4, -0.2, 0.0, 0.7]))]}
    (WORK / "body.json").write_text(json.dumps(body))
    results = []
    for label, argv, health, path in servers(v1, v2):
        port = free_port()
        proc = subprocess.Popen(argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore",
                                     # mlflow models serve runs `uvicorn` through a shell: it must be on PATH
                                     "PATH": str(Path(PY).parent) + os.pathsep + os.environ.get("PATH", "")})
        try:
            if health:
                wait_up(f"http://127.0.0.1:{port}{health}", proc)
            else:
                wait_up(f"http://127.0.0.1:{port}/docs", proc)
            load(port, path, 1.0, 4)  # warm-up
            row = {"server": label}
            for c in (1, 16):
                row[c] = load(port, path, seconds, c)
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            stop(proc)
    rollback = rollback_under_load(v1, v2)
    print(json.dumps({"rollback": rollback}), flush=True)
    report(results, rollback, seconds)


def report(results: list[dict], rollback: dict, seconds: float) -> None:
    base = results[0]
    ceiling = next(r for r in results if r["server"].startswith("bare"))
    lines = ["| server | c | req/s | p50 ms | p99 ms | RPS vs MLflow | p99 vs MLflow | RPS vs bare |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in (1, 16):
            m, b, ce = r[c], base[c], ceiling[c]
            lines.append(f"| {r['server']} | {c} | {m['rps']:.0f} | {m['p50_ms']} | {m['p99_ms']} | "
                         f"{m['rps'] / b['rps']:.2f}x | {m['p99_ms'] / b['p99_ms']:.2f}x | {m['rps'] / ce['rps']:.2f}x |")
    print(f"\n{seconds:g} s per cell, failures: "
          + ", ".join(f"{r['server']}: {r[1]['failed'] + r[16]['failed']}" for r in results))
    print("\n".join(lines))
    print(f"\nrollback under load (c=16): {rollback}")


if __name__ == "__main__":
    main()
