"""The entry of the platform's runtime image on Vertex AI: CustomJobs (``mlplat train``) and pipeline tasks.

The contract (what :mod:`.pipelines` and :mod:`..pipeline_compiler` put in a container's args)::

    python -m mlplat_providers.gcp.runtime.job_entry --source gs://BUCKET/source/COMMIT/SHA.tar.gz
        [--gate] [--input NAME=PATH_OR_URI ...] [--output NAME=PATH ...] -- COMMAND ...

The entry downloads the project's archive (``gs://`` through the Cloud Storage client; a local path as is),
unpacks it into a fresh directory and runs COMMAND there, with ``MLPLAT_INPUT_<NAME>`` and
``MLPLAT_OUTPUT_<NAME>`` naming each input and output (KFP mounts artifacts under ``/gcs/``, so paths are
local files), the output directories created. ``--gate``: COMMAND is the gate (``mlplat models evaluate --json``, non-zero
when it does not pass); a report saying ``"passed": false`` fails the task too, so nothing downstream runs.
The exit status is COMMAND's (or 1 for a failed gate, 2 for bad arguments).
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


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True, check=False)


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
    out: dict[str, Any] = {"source": None, "gate": False, "inputs": {}, "outputs": {}, "command": command}
    i = 0
    while i < len(head):
        flag = head[i]
        if flag == "--gate":
            out["gate"] = True
            i += 1
            continue
        if flag not in ("--source", "--input", "--output") or i + 1 >= len(head):
            raise ValueError(f"unknown or incomplete option {flag!r}")
        value = head[i + 1]
        if flag == "--source":
            out["source"] = value
        else:
            name, sep, where = value.partition("=")
            if not sep or not name:
                raise ValueError(f"{flag} takes NAME=PATH, not {value!r}")
            out["inputs" if flag == "--input" else "outputs"][name] = where
        i += 2
    if not out["source"]:
        raise ValueError("--source is required")
    return out


def fetch_source(source: str, into: Path) -> Path:
    """The archive as a local file: a ``gs://`` object downloaded, a local path as is."""
    if not source.startswith("gs://"):
        return Path(source)
    from google.cloud import storage

    bucket, _, key = source[5:].partition("/")
    target = into / "source.tar.gz"
    storage.Client().bucket(bucket).blob(key).download_to_filename(str(target))
    return target


def unpack(archive: Path, work: Path) -> Path:
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(work, filter="data")
    return work


def gate_passed(stdout: str) -> bool:
    """Whether the gate passed: ``mlplat models evaluate`` exits non-zero when it does not, and a report
    that says ``"passed": false`` fails the task too."""
    try:
        doc = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        return True
    return not (isinstance(doc, dict) and doc.get("passed") is False)


def main(argv: list[str] | None = None, *, run: Runner = _run) -> int:
    try:
        options = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"job entry: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlplat-job-") as tmp:
        work = unpack(fetch_source(options["source"], Path(tmp)), Path(tmp) / "project")
        env = dict(os.environ)
        for name, where in options["inputs"].items():
            env[env_key("MLPLAT_INPUT_", name)] = where
        for name, where in options["outputs"].items():
            Path(where).mkdir(parents=True, exist_ok=True)
            env[env_key("MLPLAT_OUTPUT_", name)] = where
        done = run(list(options["command"]), work, env)
        sys.stdout.write(done.stdout or "")
        sys.stderr.write(done.stderr or "")
        if done.returncode != 0:
            return done.returncode
        if options["gate"] and not gate_passed(done.stdout or ""):
            print("job entry: the evaluation gate did not pass; the steps after it do not run", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
