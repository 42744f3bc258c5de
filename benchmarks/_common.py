"""Helpers shared by the benchmarks: a throwaway project, timing, result tables."""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
BIN = Path(sys.executable).parent


def fresh_project(name: str) -> Path:
    """A project with the dev stack, provisioned, under benchmarks/.work/<name>."""
    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    shutil.copy(REPO / "stacks" / "Pulumi.dev.yaml", root / "stacks" / "Pulumi.dev.yaml")
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(root)}
    subprocess.run([str(BIN / "mlplat"), "up", "--stack", "dev", "--yes"], cwd=root, env=env, check=True,
                   capture_output=True)
    return root


def time_command(argv: list[str], repeat: int = 10, env: dict | None = None) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(rows: list[tuple], headers: tuple) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def timed_promotion(root: Path, model: str, version: int) -> dict[str, float]:
    """Promote ``model`` ``version`` to staging in process; seconds per pipeline step, plus ``total``."""
    from mlplat.context import Context
    from mlplat.services import promotion

    ctx = Context(project_dir=root)
    steps: dict[str, float] = {}
    marks: dict[str, float] = {}

    def progress(step, status, detail):
        if status == "running":
            marks[step] = time.perf_counter()
        elif status == "done" and step in marks:
            steps[step] = time.perf_counter() - marks[step]

    start = time.perf_counter()
    promotion.promote(ctx.stack("dev"), ctx, model, version, "staging", progress=progress)
    steps["total"] = time.perf_counter() - start
    return steps
