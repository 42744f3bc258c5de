"""The entry of the platform's runtime image on a cloud's compute: training jobs and pipeline steps.

The contract (what a cloud compiler puts in a container's command)::

    python -m mlplat_providers.<cloud>.runtime.job_entry --source ARCHIVE
        [--gate] [--attempts N] [--input NAME=PATH_OR_URI ...] [--output NAME=PATH ...] -- COMMAND ...

The entry fetches the project's archive (each cloud's entry supplies the fetch: a ``gs://`` object, a file
of the job's mounted code folder), unpacks it into a fresh directory and runs COMMAND there, with
``MLPLAT_INPUT_<NAME>`` and ``MLPLAT_OUTPUT_<NAME>`` naming each input and output (the clouds mount them,
so paths are local), the output directories created. ``--gate``: COMMAND is the gate (``mlplat models
evaluate --json``, non-zero when it does not pass); a report saying ``"passed": false`` fails the step
too, so nothing downstream runs. ``--attempts N`` runs a failing COMMAND again, N times in all (for clouds
whose pipeline steps have no retry policy of their own). The exit status is COMMAND's (or 1 for a failed
gate, 2 for bad arguments).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Runner = Callable[[list[str], Path, dict[str, str]], "subprocess.CompletedProcess[str]"]
Fetch = Callable[[str, Path], Path]  # (source, scratch directory) -> the archive as a local file


def run_command(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True, check=False)


def local_file(source: str, into: Path) -> Path:
    return Path(source)


def env_key(prefix: str, name: str) -> str:
    return prefix + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def parse(args: Sequence[str]) -> dict[str, Any]:
    """The entry's options and the command after ``--``; ``ValueError`` naming what is wrong."""
    args = list(args)
    if "--" not in args:
        raise ValueError("no command: put it after --")
    split = args.index("--")
    head, command = args[:split], args[split + 1:]
    if not command:
        raise ValueError("no command after --")
    out: dict[str, Any] = {"source": None, "gate": False, "attempts": 1, "inputs": {}, "outputs": {},
                           "command": command}
    i = 0
    while i < len(head):
        flag = head[i]
        if flag == "--gate":
            out["gate"] = True
            i += 1
            continue
        if flag not in ("--source", "--input", "--output", "--attempts") or i + 1 >= len(head):
            raise ValueError(f"unknown or incomplete option {flag!r}")
        value = head[i + 1]
        if flag == "--source":
            out["source"] = value
        elif flag == "--attempts":
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"--attempts takes a whole number from 1, not {value!r}")
            out["attempts"] = int(value)
        else:
            name, sep, where = value.partition("=")
            if not sep or not name:
                raise ValueError(f"{flag} takes NAME=PATH, not {value!r}")
            out["inputs" if flag == "--input" else "outputs"][name] = where
        i += 2
    if not out["source"]:
        raise ValueError("--source is required")
    return out


def unpack(archive: Path, work: Path) -> Path:
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(work, filter="data")
    return work


def gate_passed(stdout: str) -> bool:
    """Whether the gate passed: ``mlplat models evaluate`` exits non-zero when it does not, and a report
    that says ``"passed": false`` fails the step too."""
    try:
        doc = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        return True
    return not (isinstance(doc, dict) and doc.get("passed") is False)


def main(argv: list[str] | None = None, *, run: Runner = run_command, fetch: Fetch = local_file) -> int:
    try:
        options = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"job entry: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlplat-job-") as tmp:
        work = unpack(fetch(options["source"], Path(tmp)), Path(tmp) / "project")
        env = dict(os.environ)
        for name, where in options["inputs"].items():
            env[env_key("MLPLAT_INPUT_", name)] = where
        for name, where in options["outputs"].items():
            Path(where).mkdir(parents=True, exist_ok=True)
            env[env_key("MLPLAT_OUTPUT_", name)] = where
        for _attempt in range(options["attempts"]):
            done = run(list(options["command"]), work, env)
            sys.stdout.write(done.stdout or "")
            sys.stderr.write(done.stderr or "")
            if done.returncode == 0:
                break
        if done.returncode != 0:
            return done.returncode
        if options["gate"] and not gate_passed(done.stdout or ""):
            print("job entry: the evaluation gate did not pass; the steps after it do not run", file=sys.stderr)
            return 1
    return 0
