"""Helpers for the fault-injection suite: a trained project built once, cloned per trial; commands run
through :mod:`tests.chaos.inject` and SIGKILLed at a seeded choice of their own step boundaries; the
invariants every kill must leave intact; and the trial table the suite reports.

Clones copy the state folder of a project built once. Paths recorded inside it (MLflow artifact
locations, model sources) still point at the original, which the trials only read, never write.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from tests.conftest import REPO, write_project
from tests.integration.monitoring_support import insert_captures
from tests.integration.support_registry import AUTHOR, stack_text, train

BIN = Path(sys.executable).parent
SEED = 20240517
MODEL = "scorer"
ENV = "dev"
KILLED = -signal.SIGKILL
# A tolerant canary: the suite tests crash safety, not the judge; two steps keep the trials short.
CANARY = "canary: {steps: [50, 100], bakeSeconds: 0, maxLatencyRatio: 50, minRequests: 20}"
# Transactions opened only to (re)check migrations that are already applied change nothing; kills there
# test nothing the neighbouring points do not.
IDLE_LABELS = ("registry.database",)


def chaos_stack() -> str:
    text = stack_text(["risk-office@example.com", AUTHOR], risk="low")
    return text.replace("canary: {steps: [1, 10, 50, 100], bakeSeconds: 30}", CANARY)


def env_for(project: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(project), "MLPLAT_USER": AUTHOR,
           "MLPLAT_CONTAINER_ENGINE": "none",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    env.pop("MLPLAT_STACK", None)
    for name in ("MLPLAT_CHAOS_KILL", "MLPLAT_CHAOS_CENSUS", "MLPLAT_FAULT_KILL"):
        if name not in extra:
            env.pop(name, None)
    return env


def mlplat(project: Path, *args: str, kill: str | None = None, census: Path | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """``mlplat ARGS`` in ``project`` through the kill-point wrapper."""
    extra = {}
    if kill:
        extra["MLPLAT_CHAOS_KILL"] = kill
    if census:
        extra["MLPLAT_CHAOS_CENSUS"] = str(census)
    return subprocess.run([sys.executable, "-m", "tests.chaos.inject", *args], cwd=project,
                          env=env_for(project, **extra), capture_output=True, text=True, timeout=timeout)


def popen_mlplat(project: Path, *args: str, kill: str | None = None) -> subprocess.Popen:
    extra = {"MLPLAT_CHAOS_KILL": kill} if kill else {}
    return subprocess.Popen([sys.executable, "-m", "tests.chaos.inject", *args], cwd=project,
                            env=env_for(project, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ok(result: subprocess.CompletedProcess, what: str = "") -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{what or result.args}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def db(project: Path, name: str = "platform.db") -> sqlite3.Connection:
    conn = sqlite3.connect(project / ".mlplat" / ENV / name, isolation_level=None, timeout=60)
    conn.row_factory = sqlite3.Row
    return conn


# --- the project every trial starts from -------------------------------------------------------


def build_base(root: Path) -> Path:
    """up; scorer v1 in production and deployed (direct); v2 in staging; feature views applied;
    300 captured requests of v1 for monitoring. Returns the project folder."""
    import pandas as pd

    project = write_project(root / "project", {"dev": chaos_stack()})
    ok(mlplat(project, "up", "--stack", "dev", "--yes"), "up")
    assert train(project, seed=1) == 1
    assert train(project, seed=2) == 2
    for version, target in ((1, "staging"), (1, "production"), (2, "staging")):
        ok(mlplat(project, "models", "promote", MODEL, str(version), "--to", target), f"promote v{version} {target}")
    ok(mlplat(project, "deploy", MODEL, "1"), "deploy v1")
    features = project / "examples" / "features"
    features.mkdir(parents=True)
    for name in ("definitions.py", "make_data.py"):
        shutil.copy(REPO / "examples" / "features" / name, features / name)
    subprocess.run([sys.executable, str(features / "make_data.py")], check=True, capture_output=True, cwd=project)
    ok(mlplat(project, "features", "apply", "-d", "examples/features/definitions.py", "--yes"), "features apply")
    frame = pd.read_parquet(project / "data" / "holdout.parquet").drop(columns=["label"])
    insert_captures(project / ".mlplat" / ENV / "platform.db", model=MODEL, version=1, frame=frame.head(300),
                    predictions=[0] * 300, start_ts=time.time() - 3600, prefix="base", environment=ENV)
    return project


def build_canary(base: Path, dest: Path) -> Path:
    """The base with v2 deployed as a canary of v1 (step 1 of 2, 50 %)."""
    project = clone(base, dest)
    ok(mlplat(project, "deploy", MODEL, "2", "--strategy", "canary"), "deploy v2 canary")
    return project


def shared_bases(tmp_path_factory, worker_id: str) -> tuple[Path, Path]:
    """(base, canary) projects, built once per test session (once across xdist workers, under a file lock)."""
    top = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        top = top.parent  # shared by the workers of this session
    root = top / "chaos-base"
    root.mkdir(exist_ok=True)
    with open(top / "chaos-base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").is_file():
            for name in ("project", "canary"):
                shutil.rmtree(root / name, ignore_errors=True)
            build_base(root)
            build_canary(root / "project", root / "canary")
            (root / "done").write_text("ok")
    return root / "project", root / "canary"


def clone(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, symlinks=True, ignore=shutil.ignore_patterns("*.lock", "tmp"))
    return dest


# --- kill points --------------------------------------------------------------------------------


def census(project: Path, args: Iterable[str], out: Path) -> list[tuple[str, str]]:
    """Run the command once to the end, recording every kill point it passes, in order."""
    ok(mlplat(project, *args, census=out), f"census of {' '.join(args)}")
    points = [tuple(p) for p in json.loads(out.read_text())]
    return [p for p in points if p[1] not in IDLE_LABELS and p[0] != "begin"]


def pick(points: list[tuple[str, str]], rng: random.Random) -> tuple[str, str]:
    """A seeded choice of point: ``(KIND:LABEL:N for the wrapper, a readable name)``.

    The boundary kind and label are chosen first, then one of their occurrences, so a step passed once
    (the stage change, a server start) is as likely as the progress writes repeated around every step."""
    distinct = list(dict.fromkeys(points))
    kind, label = distinct[rng.randrange(len(distinct))]
    n = rng.randint(1, points.count((kind, label)))
    return f"{kind}:{label}:{n}", f"{kind} {label}#{n}"


# --- invariants ---------------------------------------------------------------------------------


def project_processes(project: Path, exclude: Iterable[int] = ()) -> list[tuple[int, str]]:
    """Processes started for ``project``: its path in their command line or MLPLAT_PROJECT_DIR."""
    needle = str(project).encode()
    skip = {os.getpid(), *exclude}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if needle in cmdline or b"MLPLAT_PROJECT_DIR=" + needle + b"\x00" in environ + b"\x00":
            found.append((int(entry), cmdline.replace(b"\x00", b" ").decode(errors="replace")[:200]))
    return found


def no_orphans(project: Path, exclude: Iterable[int] = (), timeout: float = 20.0) -> list[tuple[int, str]]:
    """Wait until no process of ``project`` is left (servers get SIGTERM when their parent dies);
    return what outlived ``timeout`` after killing it, so one failure does not leak into the next trial."""
    deadline = time.monotonic() + timeout
    while True:
        left = project_processes(project, exclude)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def check_invariants(project: Path, *, production: dict[str, int] | None = None, settled: bool = False) -> None:
    """Everything a kill at any point must leave intact.

    ``production``: model -> the number of production versions it must have (1 once one was promoted).
    ``settled``: after a successful rerun — no promotion or materialization is left running.
    """
    for name in ("platform.db", "mlflow.db", "online.db"):
        if (project / ".mlplat" / ENV / name).is_file():
            with db(project, name) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", name
    if not (project / ".mlplat" / ENV / "platform.db").is_file():
        return  # killed before `up` created the ledger: nothing to check yet
    conn = db(project)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"model_stages", "promotions", "endpoints", "rollouts", "model_versions", "audit_log"} <= tables:
            assert not settled, f"the ledger lacks tables after a successful rerun: {sorted(tables)}"
            return  # killed while `up` was still migrating the ledger; the rerun finishes it
        for row in conn.execute("SELECT model, environment, count(*) AS n FROM model_stages WHERE stage='production' "
                                "GROUP BY model, environment"):
            assert row["n"] == 1, f"{row['n']} production versions of {row['model']} in {row['environment']}"
        for model, n in (production or {}).items():
            got = conn.execute("SELECT count(*) FROM model_stages WHERE model=? AND environment=? AND "
                               "stage='production'", (model, ENV)).fetchone()[0]
            assert got == n, f"{model}: {got} production versions, want {n}"
        running = conn.execute("SELECT model, environment, count(*) AS n FROM promotions WHERE state='running' "
                               "GROUP BY model, environment HAVING n > 1").fetchall()
        assert not running, [dict(r) for r in running]
        for e in conn.execute("SELECT * FROM endpoints"):
            routes = json.loads(e["routes"])
            assert sum(r["weight"] for r in routes) == 100, dict(e)
            if e["rollout_id"] is not None:
                state = conn.execute("SELECT state FROM rollouts WHERE id=?", (e["rollout_id"],)).fetchone()
                assert state is not None and state[0] == "running", (dict(e), state and state[0])
        live = conn.execute("SELECT model, environment, count(*) AS n FROM rollouts WHERE state='running' "
                            "GROUP BY model, environment HAVING n > 1").fetchall()
        assert not live, [dict(r) for r in live]
        for r in conn.execute("SELECT r.id, r.model FROM rollouts r WHERE r.state='running' AND NOT EXISTS "
                              "(SELECT 1 FROM endpoints e WHERE e.rollout_id=r.id)"):
            raise AssertionError(f"rollout {r['id']} of {r['model']} is running but no endpoint routes it")
        if settled:
            left = conn.execute("SELECT id, model, version, target FROM promotions WHERE state='running'").fetchall()
            assert not left, [dict(r) for r in left]
        versions = [dict(r) for r in conn.execute("SELECT * FROM model_versions")]
        staged = {(r["model"], r["version"]) for r in conn.execute("SELECT model, version FROM model_stages")}
    finally:
        conn.close()
    check_versions(project, versions, staged)
    state = project / ".mlplat" / ENV
    if not settled and not ((state / "mlflow.db").is_file() and (state / "keys" / "platform.key").is_file()):
        return  # killed inside `up` before the stack's stores all existed: `up` is the only command that works
    verified = subprocess.run([str(BIN / "mlplat"), "audit", "verify", "--stack", "dev"], cwd=project,
                              env=env_for(project), capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, f"audit verify: {verified.stdout}{verified.stderr}"


def check_versions(project: Path, versions: list[dict], staged: set[tuple[str, int]]) -> None:
    """No half-written model version: every platform row has a stage and files matching its seal, and
    MLflow's registry and the platform agree on which versions exist."""
    from mlplat.services import manifest

    if not versions and not (project / ".mlplat" / ENV / "mlflow.db").is_file():
        return
    key = (project / ".mlplat" / ENV / "keys" / "platform.key").read_bytes().strip() if versions else b""
    for row in versions:
        assert (row["model"], row["version"]) in staged, f"{row['model']} v{row['version']} has no stage"
        manifest.verify(Path(row["source"]), json.loads(row["manifest"]), row["seal"], key,
                        what=f"{row['model']} version {row['version']}")
    with db(project, "mlflow.db") as conn:
        mlflow_versions = {(r[0], int(r[1])) for r in conn.execute("SELECT name, version FROM model_versions")}
    platform_versions = {(r["model"], int(r["version"])) for r in versions}
    assert mlflow_versions == platform_versions, (sorted(mlflow_versions ^ platform_versions), "differ")


# --- the report ---------------------------------------------------------------------------------


@dataclass
class Trial:
    command: str
    point: str
    killed: bool
    orphans: int = 0
    rerun_exit: int | None = None
    recovered: bool = False
    note: str = ""


@dataclass
class Report:
    """The suite's trial table: printed at the end of the module (``-s``) and written as JSON."""

    path: Path
    trials: list[Trial] = field(default_factory=list)
    extra: dict[str, dict] = field(default_factory=dict)

    def add(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        self.write()
        return trial

    def write(self) -> None:
        self.path.write_text(json.dumps({"trials": [asdict(t) for t in self.trials], **self.extra}, indent=1))

    def table(self) -> str:
        by_command: dict[str, Counter] = {}
        points: dict[str, Counter] = {}
        for t in self.trials:
            c = by_command.setdefault(t.command, Counter())
            c["trials"] += 1
            c["killed"] += t.killed
            c["recovered"] += t.recovered
            c["orphans"] += t.orphans
            points.setdefault(t.command, Counter())[t.point.split("#")[0]] += 1
        lines = [f"{'command':<22} {'trials':>6} {'killed':>6} {'recovered':>9} {'orphans':>7}  kill points (count)"]
        for command, c in by_command.items():
            where = ", ".join(f"{p} x{n}" for p, n in sorted(points[command].items()))
            lines.append(f"{command:<22} {c['trials']:>6} {c['killed']:>6} {c['recovered']:>9} {c['orphans']:>7}  {where}")
        total = Counter()
        for c in by_command.values():
            total.update(c)
        lines.append(f"{'total':<22} {total['trials']:>6} {total['killed']:>6} {total['recovered']:>9} {total['orphans']:>7}")
        for name, doc in self.extra.items():
            lines.append(f"{name}: {json.dumps(doc)}")
        return "\n".join(lines)


# --- load through the gateway -------------------------------------------------------------------


class Load:
    """Closed-loop clients posting one row at a time until stopped; every response is recorded."""

    def __init__(self, url: str, rows: list[dict], clients: int = 2):
        self.url = url
        self.rows = rows
        self.results: list[tuple[int, str]] = []  # (status or -1 for a transport error, served version)
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def _run(self, offset: int) -> None:
        i = offset
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop_event.is_set():
                row = self.rows[i % len(self.rows)]
                try:
                    r = client.post(f"/endpoints/{MODEL}/invocations", json={"dataframe_records": [row]},
                                    headers={"x-routing-key": f"k{i}"})
                    self.results.append((r.status_code, r.headers.get("x-mlplat-version", "")))
                except httpx.HTTPError as exc:
                    self.results.append((-1, ""))
                    self.errors.append(repr(exc))
                i += len(self.threads)

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)

    def failed(self) -> list[tuple[int, str]]:
        return [r for r in self.results if r[0] != 200]


def feature_rows(project: Path, n: int = 200) -> list[dict]:
    import pandas as pd

    frame = pd.read_parquet(project / "data" / "holdout.parquet").drop(columns=["label"]).head(n)
    return frame.to_dict(orient="records")


def start_gateway(project: Path, port_file: Path, *, kill: str | None = None) -> tuple[subprocess.Popen, str]:
    proc = popen_mlplat(project, "serve", "--stack", "dev", "--port", "0", "--port-file", str(port_file),
                        "--no-monitor", kill=kill)
    deadline = time.monotonic() + 120
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"gateway exited {proc.returncode}: {err[-3000:]}")
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{int(port_file.read_text())}"


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f}s: {what}"
        time.sleep(interval)
