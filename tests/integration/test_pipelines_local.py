"""Pipelines on the local provider, through the CLI: real subprocess steps, caching, a failing step,
retries, `kill -9` of the runner and `--resume`, schedules judged at a given time, bad input."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import BIN, run_cli, write_project
from tests.timing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("pipelines-local")]

STEPS = {
    # make: reads the seed file (a data input), writes numbers 1..seed
    "make.py": """
        import os, pathlib
        pathlib.Path(os.environ["TEST_CALLS"]).open("a").write("make\\n")
        seed = int(pathlib.Path(os.environ["MLPLAT_INPUT_SEED"]).read_text())
        out = pathlib.Path(os.environ["MLPLAT_OUTPUT_NUMBERS"]) / "numbers.txt"
        out.write_text("\\n".join(str(i) for i in range(1, seed + 1)))
        print("made", seed, "numbers")
    """,
    # square: squares them; with TEST_BLOCK_DIR it says it started, then waits for the file 'go'
    "square.py": """
        import os, pathlib, time
        pathlib.Path(os.environ["TEST_CALLS"]).open("a").write("square\\n")
        block = os.environ.get("TEST_BLOCK_DIR")
        if block:
            (pathlib.Path(block) / f"started-{os.getpid()}").write_text("")
            while not (pathlib.Path(block) / "go").exists():
                time.sleep(0.05)
        numbers = pathlib.Path(os.environ["MLPLAT_INPUT_NUMBERS"], "numbers.txt").read_text().split()
        out = pathlib.Path(os.environ["MLPLAT_OUTPUT_SQUARES"]) / "squares.txt"
        out.write_text("\\n".join(str(int(n) ** 2) for n in numbers))
    """,
    # total: sums them; TEST_FAIL fails it, TEST_FAIL_ONCE fails its first attempt only
    "total.py": """
        import os, pathlib, sys
        pathlib.Path(os.environ["TEST_CALLS"]).open("a").write("total\\n")
        if os.environ.get("TEST_FAIL"):
            print("boom: cannot total", file=sys.stderr)
            sys.exit(3)
        once = os.environ.get("TEST_FAIL_ONCE")
        if once and not pathlib.Path(once).exists():
            pathlib.Path(once).write_text("failed once")
            sys.exit(4)
        squares = pathlib.Path(os.environ["MLPLAT_INPUT_SQUARES"], "squares.txt").read_text().split()
        (pathlib.Path(os.environ["MLPLAT_OUTPUT_SUM"]) / "sum.txt").write_text(str(sum(int(s) for s in squares)))
    """,
}


def pipeline_file(root: Path, name: str, *, retries: int = 0, extra: str = "") -> str:
    path = root / "pipelines" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(f"""
        from mlplat.pipelines import Pipeline

        pipeline = Pipeline("{name}")
        make = pipeline.step("make", "python steps/make.py", inputs={{"seed": "data/seed.txt"}}, outputs=["numbers"])
        square = pipeline.step("square", "python steps/square.py", inputs={{"numbers": make.output("numbers")}},
                               outputs=["squares"])
        total = pipeline.step("total", "python steps/total.py", inputs={{"squares": square.output("squares")}},
                              outputs=["sum"], retries={retries})
    """) + extra)
    return f"pipelines/{name}.py"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A provisioned dev stack with the three step scripts and a seed file (not a git repository)."""
    root = write_project(tmp_path_factory.mktemp("pipelines") / "project")
    (root / "steps").mkdir()
    for name, text in STEPS.items():
        (root / "steps" / name).write_text(textwrap.dedent(text))
    (root / "data").mkdir()
    (root / "data" / "seed.txt").write_text("4")
    result = run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env_for(root))
    assert result.returncode == 0, result.stderr
    return root


def env_for(root: Path, **extra: str) -> dict[str, str]:
    return {"MLPLAT_PROJECT_DIR": str(root), "MLPLAT_USER": "ds@example.com", "TEST_CALLS": str(root / "calls.txt"),
            **extra}


def calls(root: Path) -> list[str]:
    path = root / "calls.txt"
    return path.read_text().split() if path.exists() else []


def pipeline(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_cli("pipeline", *args, "--stack", "dev", cwd=root, env=env_for(root, **env), timeout=600)


def run_json(root: Path, *args: str, **env: str) -> tuple[int, dict, str]:
    result = pipeline(root, "run", *args, "--json", **env)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def states(doc: dict) -> dict[str, str]:
    return {s["name"]: s["state"] for s in doc["steps"]}


def runs_dir(root: Path) -> Path:
    return root / ".mlplat" / "dev" / "pipelines" / "runs"


def test_three_steps_run_in_order_and_a_second_run_takes_them_from_the_cache(project):
    file = pipeline_file(project, "cached")
    before = calls(project)
    code, first, err = run_json(project, file)
    assert code == 0, err
    assert first["state"] == "SUCCEEDED" and states(first) == dict.fromkeys(["make", "square", "total"], "SUCCEEDED")
    assert calls(project)[len(before):] == ["make", "square", "total"]
    outputs = {s["name"]: s["outputs"] for s in first["steps"]}
    assert Path(outputs["total"]["sum"], "sum.txt").read_text() == "30"  # 1 + 4 + 9 + 16
    assert Path(outputs["make"]["numbers"]).is_relative_to(runs_dir(project) / first["run_id"] / "steps" / "make")

    code, second, err = run_json(project, file)
    assert code == 0, err
    assert second["run_id"] != first["run_id"]
    assert states(second) == dict.fromkeys(["make", "square", "total"], "CACHED")
    assert {s["name"]: s["outputs"] for s in second["steps"]} == outputs  # the same outputs, reused
    assert calls(project)[len(before):] == ["make", "square", "total"]  # nothing ran again

    # the cache keys on the step's code: a changed script reruns that step (and what depends on it) only
    total = project / "steps" / "total.py"
    total.write_text(total.read_text() + "\n# changed\n")
    code, third, err = run_json(project, file)
    assert code == 0, err
    assert states(third) == {"make": "CACHED", "square": "CACHED", "total": "SUCCEEDED"}
    # ... and on its inputs' contents: another seed reruns everything
    (project / "data" / "seed.txt").write_text("3")
    try:
        code, fourth, err = run_json(project, file)
    finally:
        (project / "data" / "seed.txt").write_text("4")
    assert code == 0, err
    assert states(fourth) == dict.fromkeys(["make", "square", "total"], "SUCCEEDED")
    assert Path(fourth["steps"][2]["outputs"]["sum"], "sum.txt").read_text() == "14"

    listed = pipeline(project, "list", "--pipeline", "cached", "--json")
    assert [r["run_id"] for r in json.loads(listed.stdout)][:4] == [fourth["run_id"], third["run_id"], second["run_id"],
                                                                    first["run_id"]]
    status = pipeline(project, "status", first["run_id"], "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "SUCCEEDED"


def test_a_failing_step_fails_the_run_naming_it_and_keeps_earlier_outputs_then_resume_finishes(project):
    file = pipeline_file(project, "failing")
    before = calls(project)
    code, doc, err = run_json(project, file, TEST_FAIL="1")
    assert code == 1
    assert doc["state"] == "FAILED"
    assert states(doc) == {"make": "SUCCEEDED", "square": "SUCCEEDED", "total": "FAILED"}
    assert "step 'total' failed after 1 attempt(s): exit status 3" in doc["message"]
    assert "boom: cannot total" in doc["message"]  # the end of its log
    assert "step 'total' failed" in err and "--resume " + doc["run_id"] in err
    kept = {s["name"]: s["outputs"] for s in doc["steps"]}
    assert Path(kept["square"]["squares"], "squares.txt").read_text().split() == ["1", "4", "9", "16"]
    assert calls(project)[len(before):] == ["make", "square", "total"]

    code, resumed, err = run_json(project, "failing", "--resume", doc["run_id"])
    assert code == 0, err
    assert resumed["run_id"] == doc["run_id"] and resumed["state"] == "SUCCEEDED"
    assert states(resumed) == {"make": "SUCCEEDED", "square": "SUCCEEDED", "total": "SUCCEEDED"}
    assert calls(project)[len(before):] == ["make", "square", "total", "total"]  # only the failed step ran again

    # both endings are in the ledger's audit log, by the user who ran them
    conn = sqlite3.connect(project / ".mlplat" / "dev" / "platform.db")
    try:
        entries = [(action, actor, json.loads(evidence), reason) for action, actor, evidence, reason in conn.execute(
            "SELECT action, actor, evidence, reason FROM audit_log WHERE action LIKE 'pipeline.%' ORDER BY seq")]
    finally:
        conn.close()
    mine = [e for e in entries if e[2]["run_id"] == doc["run_id"]]
    assert [(a, who) for a, who, _, _ in mine] == [("pipeline.failed", "ds@example.com"),
                                                   ("pipeline.succeeded", "ds@example.com")]
    assert "step 'total' failed" in mine[0][3]
    assert mine[0][2]["steps"] == {"make": "SUCCEEDED", "square": "SUCCEEDED", "total": "FAILED"}


def test_a_step_is_retried(project):
    file = pipeline_file(project, "retried", retries=1)
    marker = project / "failed-once"
    code, doc, err = run_json(project, file, TEST_FAIL_ONCE=str(marker))
    assert code == 0, err
    assert marker.exists()
    total = doc["steps"][2]
    assert total["state"] == "SUCCEEDED" and total["attempts"] == 2
    log = runs_dir(project) / doc["run_id"] / "steps" / "total" / "log.txt"
    assert "attempt 1 of 2 failed: exit status 4" in log.read_text()


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie nobody reaped is dead too


def test_kill_9_of_the_runner_then_resume_continues_from_the_last_finished_step(project, tmp_path):
    file = pipeline_file(project, "killed")
    block = tmp_path / "block"
    block.mkdir()
    before = calls(project)
    env = {**os.environ, **env_for(project, TEST_BLOCK_DIR=str(block))}
    runner = subprocess.Popen([str(BIN / "mlplat"), "pipeline", "run", file, "--stack", "dev"], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = wait_until(lambda: sorted(block.glob("started-*")), timeout=300, message="square never started")
    first_step_pid = int(started[0].name.split("-")[1])
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=60)

    [run_dir] = [d for d in runs_dir(project).iterdir() if d.name.startswith("killed-")]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["state"] == "RUNNING"  # as the killed runner left it
    assert {n: s["state"] for n, s in state["steps"].items()} == {"make": "SUCCEEDED", "square": "RUNNING",
                                                                  "total": "PENDING"}
    started[0].unlink()
    resumer = subprocess.Popen([str(BIN / "mlplat"), "pipeline", "run", "--resume", run_dir.name, "--stack", "dev",
                                "--json"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    again = wait_until(lambda: sorted(block.glob("started-*")), timeout=300, message="square never restarted")
    assert int(again[0].name.split("-")[1]) != first_step_pid
    wait_until(lambda: _dead(first_step_pid), timeout=60, message="the killed runner's step process was left running")
    (block / "go").write_text("")
    out, err = resumer.communicate(timeout=300)
    assert resumer.returncode == 0, err
    doc = json.loads(out)
    assert doc["run_id"] == run_dir.name and doc["state"] == "SUCCEEDED"
    assert states(doc) == {"make": "SUCCEEDED", "square": "SUCCEEDED", "total": "SUCCEEDED"}
    assert calls(project)[len(before):] == ["make", "square", "square", "total"]  # make ran once
    assert Path(doc["steps"][2]["outputs"]["sum"], "sum.txt").read_text() == "30"


def test_a_runner_killed_between_steps_resumes_without_rerunning_finished_ones(project):
    file = pipeline_file(project, "crashed")
    before = calls(project)
    code, _, _ = run_json(project, file, MLPLAT_PIPELINE_FAULT_KILL_AFTER="square")
    assert code == -signal.SIGKILL
    [run_dir] = [d for d in runs_dir(project).iterdir() if d.name.startswith("crashed-")]
    code, doc, err = run_json(project, "crashed", "--resume", run_dir.name)
    assert code == 0, err
    assert states(doc) == dict.fromkeys(["make", "square", "total"], "SUCCEEDED")
    assert calls(project)[len(before):] == ["make", "square", "total"]


def test_step_and_from_run_the_selected_steps_and_take_the_rest_from_the_cache(project):
    file = pipeline_file(project, "selected")
    assert run_json(project, file)[0] == 0
    before = calls(project)
    code, doc, err = run_json(project, file, "--from", "square")
    assert code == 0, err
    assert states(doc) == {"make": "CACHED", "square": "SUCCEEDED", "total": "SUCCEEDED"}
    code, doc, err = run_json(project, file, "--step", "total")
    assert code == 0, err
    assert states(doc) == {"make": "CACHED", "square": "CACHED", "total": "SUCCEEDED"}
    assert calls(project)[len(before):] == ["square", "total", "total"]


def test_a_schedule_runs_when_due_at_the_time_given(project):
    file = pipeline_file(project, "nightly")
    scheduled = pipeline(project, "schedule", file, "--cron", "0 3 * * *", "--json")
    assert scheduled.returncode == 0, scheduled.stderr
    info = json.loads(scheduled.stdout)
    assert info["pipeline"] == "nightly" and info["cron"] == "0 3 * * *"
    from datetime import UTC, datetime

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat()

    early = pipeline(project, "schedule", "--run-due", "--at", iso(info["next_run"] - 60), "--json")
    assert early.returncode == 0 and [r["pipeline"] for r in json.loads(early.stdout)] == []
    due = pipeline(project, "schedule", "--run-due", "--at", iso(info["next_run"]), "--json")
    assert due.returncode == 0, due.stderr
    assert [(r["pipeline"], r["state"]) for r in json.loads(due.stdout)] == [("nightly", "SUCCEEDED")]
    again = pipeline(project, "schedule", "--run-due", "--at", iso(info["next_run"] + 60), "--json")
    assert [r["pipeline"] for r in json.loads(again.stdout)] == []  # it ran for that fire time already
    listed = pipeline(project, "schedule", "--json")
    assert [s["pipeline"] for s in json.loads(listed.stdout)] == ["nightly"]


@pytest.mark.parametrize("args, code, message", [
    (["run", "pipelines/nosuch.py"], 4, "pipeline file 'pipelines/nosuch.py' does not exist"),
    (["run", "PIPELINE", "--step", "trian"], 4, "pipeline 'badinput' has no step 'trian' (--step)"),
    (["run", "PIPELINE", "--from", "nowhere"], 4, "has no step 'nowhere' (--from)"),
    (["run", "pipelines/cycle.py"], 3, "the steps form a cycle: square -> total -> square"),
    (["run", "pipelines/unknown.py"], 3, "input 'numbers' refers to unknown step 'mak'"),
    (["run", "pipelines/missing_data.py"], 4, "data 'data/nothing.csv' cannot be read"),
    (["schedule", "PIPELINE", "--cron", "0 25 * * *"], 3, "hour 25 is outside 0-23"),
    (["schedule", "PIPELINE", "--cron", "every day"], 3, "has 2 field(s), a cron expression has 5"),
    (["status", "badinput-nope"], 4, "pipeline run 'badinput-nope' not found"),
])
def test_bad_input_gets_one_clear_message_and_starts_nothing(project, args, code, message):
    file = pipeline_file(project, "badinput")
    pipeline_file(project, "cycle", extra='square.definition = __import__("dataclasses").replace('
                                           'square.definition, depends_on=("total",))\n')
    bad_ref = (project / file).read_text().replace('make.output("numbers")', '"mak.numbers"')
    (project / "pipelines" / "unknown.py").write_text(bad_ref)
    (project / "pipelines" / "missing_data.py").write_text(
        (project / file).read_text().replace("data/seed.txt", "data/nothing.csv"))
    before = sorted(p.name for p in runs_dir(project).iterdir()) if runs_dir(project).exists() else []
    schedules = runs_dir(project).parent / "schedules.json"
    schedules_before = schedules.read_text() if schedules.exists() else None
    result = pipeline(project, *[file if a == "PIPELINE" else a for a in args])
    assert result.returncode == code, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr  # a long tmp path may wrap the line
    assert "Traceback" not in result.stderr
    after = sorted(p.name for p in runs_dir(project).iterdir()) if runs_dir(project).exists() else []
    assert after == before, "a refused run left a run behind"
    assert (schedules.read_text() if schedules.exists() else None) == schedules_before


def test_a_dirty_git_work_tree_is_refused_without_allow_dirty(tmp_path):
    root = write_project(tmp_path / "repo")
    (root / "steps").mkdir()
    for name, text in STEPS.items():
        (root / "steps" / name).write_text(textwrap.dedent(text))
    (root / "data").mkdir()
    (root / "data" / "seed.txt").write_text("2")
    file = pipeline_file(root, "dirty")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run([*git, *cmd], cwd=root, check=True, capture_output=True)
    (root / "steps" / "make.py").write_text((root / "steps" / "make.py").read_text() + "\n# edited\n")
    result = pipeline(root, "run", file)
    assert result.returncode != 0
    assert "uncommitted changes: steps/make.py" in result.stderr and "--allow-dirty" in result.stderr
    assert not (root / ".mlplat").exists()  # nothing started, nothing written


def test_in_a_git_repository_the_steps_run_the_committed_code(tmp_path):
    root = write_project(tmp_path / "repo")
    (root / "steps").mkdir()
    for name, text in STEPS.items():
        (root / "steps" / name).write_text(textwrap.dedent(text))
    (root / "data").mkdir()
    (root / "data" / "seed.txt").write_text("3")
    (root / ".gitignore").write_text(".mlplat/\n")
    file = pipeline_file(root, "bundled")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run([*git, *cmd], cwd=root, check=True, capture_output=True)
    env = {**env_for(root), "TEST_CALLS": str(tmp_path / "calls.txt")}
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env).returncode == 0

    def run(*args: str) -> dict:
        result = run_cli("pipeline", "run", file, "--stack", "dev", "--json", *args, cwd=root, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first = run()
    assert states(first) == dict.fromkeys(["make", "square", "total"], "SUCCEEDED")
    work = runs_dir(root) / first["run_id"] / "steps" / "make" / "work"
    assert (work / "steps" / "make.py").read_text() == (root / "steps" / "make.py").read_text()  # the bundle, unpacked
    assert Path(first["steps"][2]["outputs"]["sum"], "sum.txt").read_text() == "14"
    assert states(run()) == dict.fromkeys(["make", "square", "total"], "CACHED")  # same commit, same inputs
    # an uncommitted change runs only with --allow-dirty, and is new code for every step
    (root / "steps" / "total.py").write_text((root / "steps" / "total.py").read_text() + "\n# edited\n")
    assert states(run("--allow-dirty")) == dict.fromkeys(["make", "square", "total"], "SUCCEEDED")


WHERE = """
    import json, os, pathlib, shutil, sys
    import mlplat  # the platform's packages reach the step's environment (layered, not installed)
    pathlib.Path(os.environ["TEST_CALLS"]).open("a").write("where\\n")
    (pathlib.Path(os.environ["MLPLAT_OUTPUT_WHERE"]) / "where.json").write_text(json.dumps({
        "executable": sys.executable, "prefix": sys.prefix, "on_path": shutil.which("python"),
        "virtual_env": os.environ.get("VIRTUAL_ENV")}))
"""


def test_command_steps_run_with_the_python_of_the_environment_cached_by_the_lock_hash(tmp_path):
    from mlplat.services.source import project_lock

    root = write_project(tmp_path / "project")
    (root / "steps").mkdir()
    (root / "steps" / "where.py").write_text(textwrap.dedent(WHERE))
    (root / "pipelines").mkdir()
    (root / "pipelines" / "where.py").write_text(textwrap.dedent("""
        from mlplat.pipelines import Pipeline

        pipeline = Pipeline("where")
        pipeline.step("where", "python steps/where.py", outputs=["where"])
        # a bare `python` inside a shell command finds the environment's first on PATH
        pipeline.step("shell", ["sh", "-c", "python -c 'import sys; print(sys.prefix)' > $MLPLAT_OUTPUT_SHELL/prefix.txt"],
                      outputs=["shell"])
    """))
    # no index: an environment that had to install anything would fail the run instead of going to the network
    env = {**env_for(root), "TEST_CALLS": str(tmp_path / "calls.txt"), "PIP_NO_INDEX": "1"}
    assert run_cli("up", "--stack", "dev", "--yes", cwd=root, env=env).returncode == 0
    envs = root / ".mlplat" / "dev" / "training" / "envs"

    def run(*args: str) -> tuple[dict, dict, dict]:
        result = run_cli("pipeline", "run", "pipelines/where.py", "--stack", "dev", "--json", *args, cwd=root, env=env,
                         timeout=600)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        state = json.loads((runs_dir(root) / doc["run_id"] / "state.json").read_text())
        where = json.loads(Path(doc["steps"][0]["outputs"]["where"], "where.json").read_text())
        return doc, state, where

    # outside git and without a committed lock: the running environment's pinned list, as bundle_source decides
    first, state, where = run()
    assert states(first) == {"where": "SUCCEEDED", "shell": "SUCCEEDED"}
    lock = (runs_dir(root) / first["run_id"] / "requirements.lock").read_text()
    assert lock == project_lock(root)
    lock_hash = hashlib.sha256(lock.encode()).hexdigest()
    env_dir = envs / lock_hash
    assert state["environment"]["lock_hash"] == lock_hash and state["environment"]["dir"] == str(env_dir)
    assert where == {"executable": str(env_dir / "bin" / "python"), "prefix": str(env_dir),
                     "on_path": str(env_dir / "bin" / "python"), "virtual_env": str(env_dir)}
    assert Path(first["steps"][1]["outputs"]["shell"], "prefix.txt").read_text().strip() == str(env_dir)
    ready = json.loads((env_dir / "ready.json").read_text())
    assert ready["installed"] == []  # the running interpreter satisfies its own pins: nothing installed
    assert state["steps"]["where"]["meta"]["environment_reused"] is False

    # the step run again (--step forces it): the same environment, reused, not rebuilt
    again, state, where_again = run("--step", "where")
    assert states(again) == {"where": "SUCCEEDED", "shell": "CACHED"}
    assert where_again == where
    assert state["steps"]["where"]["meta"]["environment_reused"] is True
    assert json.loads((env_dir / "ready.json").read_text())["created"] == ready["created"]
    assert sorted(p.name for p in envs.iterdir() if not p.name.startswith(".")) == [lock_hash]

    # a committed lock changes the lock hash: a new environment, and every command step runs again
    numpy_version = __import__("numpy").__version__
    (root / "requirements.lock").write_text(f"numpy=={numpy_version}\n")
    new_hash = hashlib.sha256(f"numpy=={numpy_version}\n".encode()).hexdigest()
    changed, state, where = run()
    assert states(changed) == {"where": "SUCCEEDED", "shell": "SUCCEEDED"}
    assert where["executable"] == str(envs / new_hash / "bin" / "python") and where["prefix"] == str(envs / new_hash)
    assert state["environment"]["lock_hash"] == new_hash and state["environment"]["installed"] == []
    assert states(run()[0]) == {"where": "CACHED", "shell": "CACHED"}  # the same lock: the cache holds

    # a lock nothing here satisfies: the step fails naming its environment, which is never marked ready
    (root / "requirements.lock").write_text("mlplat-no-such-package==9.9\n")
    bad_hash = hashlib.sha256(b"mlplat-no-such-package==9.9\n").hexdigest()
    result = run_cli("pipeline", "run", "pipelines/where.py", "--stack", "dev", "--json", cwd=root, env=env, timeout=600)
    assert result.returncode == 1, result.stderr
    failed = json.loads(result.stdout)
    assert failed["state"] == "FAILED" and states(failed)["where"] == "FAILED"
    assert f"step 'where' failed after 1 attempt(s): its environment (lock {bad_hash[:12]}) could not be built" \
        in failed["message"] and "pip install failed" in failed["message"]
    assert not (envs / bad_hash / "ready.json").exists()
