"""Serving at the machine's limit: gateway workers and micro-batching against the peers, one run.

    python benchmarks/serving/bench_workers.py [--seconds 10] [--only LABEL_PREFIX ...]

Same scikit-learn model as bench_serving.py (GradientBoosting, 60 trees, 8 features), one row per
request. Servers, each in its own processes:

* `mlflow models serve` (one worker), and MLServer 1.7 with its scikit-learn runtime and adaptive
  batching on (max 64 rows, 2 ms: the gateway's batching defaults), installed into its own venv
  under benchmarks/.work (`pip install mlserver mlserver-sklearn "uvloop<0.22"`: MLServer 1.7's
  inference workers call asyncio.get_event_loop(), which uvloop 0.22 refuses), never a project
  dependency;
* the bare FastAPI ceiling (bare_app.py) with one worker and with `uvicorn --workers 2`;
* the mlplat gateway (gateway_proc.py): one version or a 2-variant canary (50/50, every request
  captured), with 1 and 2 workers (the supervisor of `mlplat serve --workers N`), batching on;
  and one worker with batching off, the gateway as it was before both.

Each server answers its own protocol: MLServer the Open Inference Protocol (`/v2/models/credit/infer`,
one FP64 [1, 8] tensor), the others MLflow's `dataframe_records`. Concurrency 1 runs the asyncio
load generator of bench_serving.py (loadgen.py, as the earlier figures); concurrency 16 and 64 run
`wrk` (one thread, keep-alive connections, a Lua script for the POST body, its `--latency`
percentiles), whose own CPU time is reported beside each cell, with the load average before it.
Then a rollback under load (c=16) through a 2-worker gateway: failed requests, and per worker the
first v1 and last v2 response after the rollback committed.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_serving as base  # noqa: E402  (same models, ledgers, start/stop helpers)

WORK = base.WORK
PY = base.PY
MLSERVER_VENV = HERE.parents[0] / ".work" / "mlserver-venv"
CONCURRENCY = (1, 16, 64)
BATCH = {"max_batch_size": 64, "max_batch_time": 0.002}


def mlserver_folder(v1: Path, port: int) -> Path:
    """An MLServer model repository: settings.json and the model's folder with a joblib file."""
    import joblib

    from mlplat.services.model_loading import load_native

    root = WORK / f"mlserver-{port}"
    (root / "credit").mkdir(parents=True)
    joblib.dump(load_native(v1), root / "credit" / "model.joblib")
    (root / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": base.free_port(), "metrics_port": base.free_port(), "debug": False}))
    (root / "credit" / "model-settings.json").write_text(json.dumps({
        "name": "credit", "implementation": "mlserver_sklearn.SKLearnModel", **BATCH,
        "parameters": {"uri": "./model.joblib"}}))
    return root


def servers(v1: Path, v2: Path) -> list[tuple]:
    """(label, argv builder, health path, scoring path, body file, env)."""
    from mlplat.services.rollout import CanaryPolicy

    records, tensor = str(WORK / "body.json"), str(WORK / "body-v2.json")
    policy = CanaryPolicy((50, 100), 10 ** 6, 1.0, 10 ** 6, 10 ** 6, 10 ** 9)  # stays at 50 % for the run

    def gateway(name: str, steps: list[tuple], sampling: float, workers: int, batching: bool = True):
        db = base.platform_db(name, steps)
        return lambda port: [PY, str(HERE / "gateway_proc.py"), json.dumps(
            {"db": str(db), "models": {"1": str(v1), "2": str(v2)}, "port": port, "sampling": sampling,
             "workers": workers, "batching": batching})]

    one, canary = [(1, "direct", {})], [(1, "direct", {}), (2, "canary", {"canary": policy})]
    path = "/endpoints/credit/invocations"
    mlserver = str(MLSERVER_VENV / "bin" / "mlserver")
    return [
        ("mlflow models serve", lambda port: [str(Path(PY).parent / "mlflow"), "models", "serve", "-m", str(v1),
                                              "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
         "/ping", "/invocations", records, {}),
        ("MLServer sklearn, adaptive batching", lambda port: [mlserver, "start", str(mlserver_folder(v1, port))],
         "/v2/health/ready", "/v2/models/credit/infer", tensor, {}),
        ("bare FastAPI, 1 worker", lambda port: [PY, str(HERE / "bare_app.py"), str(v1), str(port)],
         "/docs", "/invocations", records, {}),
        ("bare FastAPI, 2 workers", lambda port: [PY, "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE),
                                                  "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                                                  "--log-level", "warning", "--no-access-log"],
         "/docs", "/invocations", records, {"BARE_MODEL_DIR": str(v1)}),
        ("mlplat gateway, 1 worker, no batching (before)", gateway("gw-before", one, 0.0, 1, batching=False),
         "/ping", path, records, {}),
        ("mlplat gateway, 1 worker", gateway("gw-1", one, 0.0, 1), "/ping", path, records, {}),
        ("mlplat gateway, 2 workers", gateway("gw-2", one, 0.0, 2), "/ping", path, records, {}),
        ("mlplat canary 50/50 + capture, 1 worker", gateway("gw-canary-1", canary, 1.0, 1), "/ping", path, records,
         {}),
        ("mlplat canary 50/50 + capture, 2 workers", gateway("gw-canary-2", canary, 1.0, 2), "/ping", path, records,
         {}),
    ]


def worker_pid(port: int) -> str:
    """The worker that answers a new connection: mlplat's x-mlplat-worker header, bare_app's /pid."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/pid", timeout=5) as r:
            return str(json.loads(r.read())["pid"])
    except urllib.error.HTTPError:  # not bare_app: the gateway names its worker on every response
        pass
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
        return r.headers["x-mlplat-worker"]


def wait_workers(port: int, count: int, timeout: float = 180) -> None:
    """Until ``count`` different workers have answered new connections (each loads the model itself)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(seen)} of {count} answered within {timeout:g} s")
        try:
            seen.add(worker_pid(port))
        except OSError:
            time.sleep(0.05)


def wrk_script(body_file: str) -> Path:
    body = Path(body_file).read_text()
    script = WORK / (Path(body_file).stem + ".lua")
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body)}\n")
    return script


def wrk(port: int, path: str, body_file: str, seconds: float, concurrency: int) -> dict:
    """One wrk run: req/s, p50/p99 (its --latency distribution), failures, and wrk's own CPU use."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
                           "-s", str(wrk_script(body_file)), f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = done.stdout
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 2)

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"requests": requests, "failed": errors + (int(non2xx.group(1)) if non2xx else 0),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": ms("50%"), "p99_ms": ms("99%"), "loadgen_cpu": round(cpu / seconds, 2)}


def cell(port: int, path: str, body: str, seconds: float, concurrency: int) -> dict:
    load = round(os.getloadavg()[0], 1)
    if concurrency == 1:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        argv = [PY, str(HERE / "loadgen.py"), "127.0.0.1", str(port), path, body, str(seconds), "1"]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = json.loads(done.stdout.strip().splitlines()[-1])
        out["loadgen_cpu"] = round(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
                                   / seconds, 2)
    else:
        out = wrk(port, path, body, seconds, concurrency)
    out["load"] = load
    return out


def rollback_under_load(v1: Path, v2: Path, seconds: float = 6.0) -> dict:
    """c=16 through a 2-worker gateway, rollback committed after a third of the run."""
    from mlplat.db import Database
    from mlplat.services import rollout as ro

    db_path = base.platform_db("rollback-workers", [(1, "direct", {}), (2, "direct", {})])
    port = base.free_port()
    proc = subprocess.Popen([PY, str(HERE / "gateway_proc.py"), json.dumps(
        {"db": str(db_path), "models": {"1": str(v1), "2": str(v2)}, "port": port, "sampling": 1.0, "workers": 2})],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base.wait_up(f"http://127.0.0.1:{port}/ping", proc)
        wait_workers(port, 2)
        base.load(port, "/endpoints/credit/invocations", 1.0, 4)  # warm-up
        trace = WORK / "rollback-workers-trace.txt"
        argv = [PY, str(HERE / "loadgen.py"), "127.0.0.1", str(port), "/endpoints/credit/invocations",
                str(WORK / "body.json"), str(seconds), "16", "--trace", str(trace)]
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        time.sleep(seconds / 3)
        with Database(db_path).transaction() as conn:
            ro.rollback(conn, model="credit", environment="production", actor="bench", method="trusted-local")
        issued = time.time()
        out, _ = gen.communicate(timeout=60)
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        base.stop(proc)
    rows = [line.split() for line in trace.read_text().splitlines()]
    per_worker: dict[str, dict] = {}
    for t, version, worker in ((float(r[0]), r[2], r[3]) for r in rows):
        w = per_worker.setdefault(worker, {"responses": 0, "first_v1_after_s": None, "last_v2_after_s": None})
        w["responses"] += 1
        if t > issued and version == "1" and w["first_v1_after_s"] is None:
            w["first_v1_after_s"] = round(t - issued, 3)
        if version == "2":
            w["last_v2_after_s"] = round(t - issued, 3)
    return {"requests": summary["requests"], "failed": summary["failed"] + sum(1 for r in rows if r[1] != "200"),
            "workers": per_worker}


def main() -> None:
    args = sys.argv[1:]
    seconds = float(args[args.index("--seconds") + 1]) if "--seconds" in args else 10.0
    only = [args[i + 1] for i, a in enumerate(args) if a == "--only"]
    if not (MLSERVER_VENV / "bin" / "mlserver").is_file():
        raise SystemExit(f"MLServer is not installed: python3 -m venv {MLSERVER_VENV} && "
                         f"{MLSERVER_VENV}/bin/pip install mlserver mlserver-sklearn 'uvloop<0.22'")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    v1, v2 = base.make_models()
    values = [0.3, -1.2, 0.5, 0.1, 1.4, -0.2, 0.0, 0.7]
    (WORK / "body.json").write_text(json.dumps({"dataframe_records": [dict(zip(base.FEATURES, values))]}))
    (WORK / "body-v2.json").write_text(json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 8], "datatype": "FP64", "data": values}]}))
    results = []
    started = time.time()
    for label, argv, health, path, body, env in servers(v1, v2):
        if only and not any(label.startswith(o) for o in only):
            continue
        port = base.free_port()
        proc = subprocess.Popen(argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", **env,
                                     "PATH": str(Path(PY).parent) + os.pathsep + os.environ.get("PATH", "")})
        try:
            base.wait_up(f"http://127.0.0.1:{port}{health}", proc, timeout=180)
            if "2 workers" in label:
                wait_workers(port, 2)
            cell(port, path, body, 2.0, 16)  # warm-up: every worker, every model
            row = {"server": label}
            for c in CONCURRENCY:
                row[c] = cell(port, path, body, seconds, c)
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            base.stop(proc)
    rollback = rollback_under_load(v1, v2) if not only else None
    print(json.dumps({"rollback": rollback}), flush=True)
    report(results, rollback, seconds, time.time() - started)


def report(results: list[dict], rollback: dict | None, seconds: float, took: float) -> None:
    by = {r["server"]: r for r in results}
    bare, mls = by.get("bare FastAPI, 1 worker"), by.get("MLServer sklearn, adaptive batching")
    lines = ["| server | c | req/s | p50 ms | p99 ms | RPS vs bare 1 worker | RPS vs MLServer | p99 vs MLServer "
             "| load gen CPU | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in CONCURRENCY:
            m = r[c]
            vs_bare = f"{m['rps'] / bare[c]['rps']:.2f}x" if bare else "-"
            vs_mls = f"{m['rps'] / mls[c]['rps']:.2f}x" if mls else "-"
            p99_mls = f"{m['p99_ms'] / mls[c]['p99_ms']:.2f}x" if mls else "-"
            lines.append(f"| {r['server']} | {c} | {m['rps']:.0f} | {m['p50_ms']} | {m['p99_ms']} | {vs_bare} | "
                         f"{vs_mls} | {p99_mls} | {m['loadgen_cpu']:.2f} | {m['load']} |")
    print(f"\n{seconds:g} s per cell, run took {took:.0f} s; failures: "
          + ", ".join(f"{r['server']}: {sum(r[c]['failed'] for c in CONCURRENCY)}" for r in results))
    print("\n".join(lines))
    if rollback:
        print(f"\nrollback under load, 2 workers (c=16): {json.dumps(rollback)}")


if __name__ == "__main__":
    main()
