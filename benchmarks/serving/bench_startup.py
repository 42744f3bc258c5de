"""Serving start-up: time from process start to the first 200, before and after the import diet.

    python benchmarks/serving/bench_startup.py [--runs 5]

Same model as bench_serving.py (GradientBoosting saved with skops). Two processes are timed from
`Popen` to the first 200 answered to a scoring request (polled every 10 ms):

* the model server (`python -m mlplat.serving.model_server`: the staging endpoint, the container's
  server), and
* a gateway worker over a one-version ledger (gateway_proc.py: what each `mlplat serve` worker
  runs after its stack is read).

Beside the wall time, the CPU time the process used until then (user + system, from /proc), which
the load of other jobs on the machine changes much less.

"before" runs the same command after importing `skops.io` the way the model loader did before
(which, through scikit-learn's `all_estimators()`, imports PyTorch's array-API adapter and torch);
"after" is the command as it is. Runs alternate before/after so both see the same machine load.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_serving as base  # noqa: E402

WORK = base.WORK.parent / "startup"
PY = base.PY
# the loader's import of skops as it was: everything all_estimators() walks, torch included
BEFORE = "import runpy, sys, skops.io; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
BEFORE_MODULE = ("import runpy, sys, skops.io; sys.argv = sys.argv[1:]; "
                 "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def first_200(argv: list[str], port: int, path: str, body: bytes, timeout: float = 120) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {proc.stderr.read()[-2000:]!r}")
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                             headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - started, cpu_seconds(proc.pid)
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{argv[:4]} did not answer within {timeout:g} s")
    finally:
        base.stop(proc)


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
    base.WORK = WORK
    import shutil

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    v1, _ = base.make_models()
    db = base.platform_db("gateway", [(1, "direct", {})])
    body = json.dumps({"dataframe_records": [dict(zip(base.FEATURES, [0.3, -1.2, 0.5, 0.1, 1.4, -0.2, 0.0, 0.7]))]})

    def server(port: int) -> list[str]:
        return ["mlplat.serving.model_server", "--model-dir", str(v1), "--port", str(port)]

    def gateway(port: int) -> list[str]:
        return [str(HERE / "gateway_proc.py"), json.dumps({"db": str(db), "models": {"1": str(v1)}, "port": port,
                                                             "sampling": 0.0, "controller": False})]

    cases = {
        "model server": (lambda port, before: [PY, "-c", BEFORE_MODULE, *server(port)] if before
                         else [PY, "-m", *server(port)], "/invocations"),
        "gateway worker": (lambda port, before: [PY, "-c", BEFORE, *gateway(port)] if before
                           else [PY, *gateway(port)], "/endpoints/credit/invocations"),
    }
    load = [round(os.getloadavg()[0], 1)]
    lines = ["| process | before: wall s, median (min–max) | after: wall s | after / before | before: CPU s, median "
             "| after: CPU s | after / before |", "|---|---|---|---|---|---|---|"]
    for label, (argv, path) in cases.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(runs):
            for before in (True, False):
                port = base.free_port()
                wall, used = first_200(argv(port, before), port, path, body.encode())
                times[before].append(round(wall, 3))
                cpu[before].append(round(used, 2))
        load.append(round(os.getloadavg()[0], 1))
        b, a = statistics.median(times[True]), statistics.median(times[False])
        cb, ca = statistics.median(cpu[True]), statistics.median(cpu[False])
        print(json.dumps({"process": label, "wall": times, "cpu": cpu}), flush=True)
        lines.append(f"| {label} | {b:.2f} ({min(times[True]):.2f}–{max(times[True]):.2f}) | "
                     f"{a:.2f} ({min(times[False]):.2f}–{max(times[False]):.2f}) | {a / b:.2f}x | {cb:.2f} | {ca:.2f} | "
                     f"{ca / cb:.2f}x |")
    print(f"\n{runs} runs each, alternating; load average {load}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
