"""`mlplat policy check --all` over 10 team stacks (target < 10 s), side by side with one process per stack.

The stacks are generated in benchmarks/.work/policy: 8 AWS teams (1-3 models each, every program
run under Pulumi's mocks) and 2 local teams. The peer, `pulumi preview --policy-pack policies`, needs the
Pulumi CLI and cloud credentials for every stack; it runs only when `pulumi` is on PATH.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BIN, REPO, WORK, median, table  # noqa: E402

AWS = (REPO / "stacks" / "Pulumi.fraud-prod.yaml").read_text()
LOCAL = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
MODELS = ["scorer", "ranker", "tagger"]


def team_stack(i: int) -> tuple[str, str]:
    team = f"team{i:02d}"
    if i >= 8:
        return f"{team}-dev", LOCAL.replace("ml-core", team)
    models = "".join(f"      {m}: {{riskTier: {'critical' if j == 0 else 'low'}}}\n"
                     for j, m in enumerate(MODELS[: 1 + i % 3]))
    text = AWS.replace("fraud", team)
    head, _, tail = text.partition("    models:\n")
    tail = tail.split("  mlplat:gate:", 1)[1]
    return f"{team}-prod", f"{head}    models:\n{models}  mlplat:gate:{tail}"


def project() -> Path:
    root = WORK / "policy"
    shutil.rmtree(root, ignore_errors=True)
    (root / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    for i in range(10):
        name, text = team_stack(i)
        (root / "stacks" / f"Pulumi.{name}.yaml").write_text(text)
    return root


def timed(argv: list[str], root: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "MLPLAT_PROJECT_DIR": str(root)}
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, result


def main() -> None:
    root = project()
    mlplat = str(BIN / "mlplat")
    names = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (root / "stacks").glob("Pulumi.*.yaml"))
    all_runs, per_stack_runs, resources = [], [], 0
    for _ in range(3):
        seconds, result = timed([mlplat, "policy", "check", "--all", "--format", "json"], root)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        report = json.loads(result.stdout)
        resources = sum(s["resources"] for s in report["stacks"])
        all_runs.append(seconds)
    for _ in range(1):
        total = 0.0
        for name in names:
            seconds, result = timed([mlplat, "policy", "check", "--stack", name, "--format", "json"], root)
            assert result.returncode == 0, result.stderr[-2000:]
            total += seconds
        per_stack_runs.append(total)
    rows = [
        ("mlplat policy check --all (one process)", f"{median(all_runs):.2f} s", "1.00x"),
        ("mlplat policy check --stack S, once per stack", f"{median(per_stack_runs):.2f} s",
         f"{median(per_stack_runs) / median(all_runs):.2f}x"),
    ]
    peer = "not run: the pulumi CLI is not installed here (it also needs credentials per stack)"
    if shutil.which("pulumi"):
        peer = "pulumi CLI present: run `pulumi preview --policy-pack policies` per stack by hand with credentials"
    print("## Policy pack (`mlplat policy check`)\n")
    print(f"### `policy check --all` over 10 team stacks ({resources} resources; median of 3) — "
          "`benchmarks/bench_policy.py`\n")
    print(table(rows, ("how", "wall time", "ratio")))
    print(f"\nTarget < 10 s: {'met' if median(all_runs) < 10 else 'MISSED'} ({median(all_runs):.2f} s). "
          f"Peer `pulumi preview --policy-pack policies`: {peer}.")


if __name__ == "__main__":
    main()
