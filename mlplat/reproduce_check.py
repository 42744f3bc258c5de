"""The checks a reproduce bundle runs around the training command (copied into every bundle).

Standard library only: it runs under the bundle's fresh interpreter before anything else is
trusted. Subcommands, each exiting non-zero with one message when the check fails:

``environment BUNDLE``
    installed distributions of this interpreter against ``requirements.lock`` (a report; a
    difference is printed, never fatal: the venv was built from the lock, an interpreter given
    through ``MLPLAT_REPRO_PYTHON`` may differ and should be seen to).
``data BUNDLE SRC``
    every file dataset of the run, by sha256, before training: looked for in the checkout, then
    ``BUNDLE/data``, then ``$MLPLAT_REPRO_DATA``; one found elsewhere is copied into the checkout at
    the path the command expects. Exit 1 when a file is missing or differs.
``compare BUNDLE PROJECT OUT``
    finds the run tagged ``mlplat.reproduces=<run>`` on the stack and compares metrics (relative
    tolerance ``$MLPLAT_REPRO_TOLERANCE``, default 0), dataset hashes and code version with the
    original; writes ``OUT`` (JSON). Exit 1 when anything differs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

CHUNK = 1 << 20


def say(text: str) -> None:
    print(f"reproduce: {text}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def environment(bundle: Path) -> int:
    pinned = {}
    for line in (bundle / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pinned[_normal(name.strip())] = version.strip()
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            installed.setdefault(_normal(name), dist.version)
    missing = sorted(n for n in pinned if n not in installed)
    different = sorted(f"{n} {installed[n]} (locked {v})" for n, v in pinned.items()
                       if n in installed and installed[n] != v)
    if missing or different:
        say(f"this interpreter differs from the lock: {len(missing)} missing, {len(different)} other versions")
        for line in (missing + different)[:20]:
            say(f"  {line}")
    else:
        say(f"environment matches the lock ({len(pinned)} packages)")
    return 0


def data(bundle: Path, src: Path) -> int:
    entries = json.loads((bundle / "data.json").read_text())
    roots = [("the checkout", src), ("the bundle", bundle / "data")]
    if os.environ.get("MLPLAT_REPRO_DATA"):
        roots.append(("MLPLAT_REPRO_DATA", Path(os.environ["MLPLAT_REPRO_DATA"])))
    failures = []
    for entry in entries:
        name, expected = entry["name"], entry["sha256"]
        if entry["kind"] != "file":
            say(f"dataset '{name}' was an in-memory {entry['kind']}: the command rebuilds it; its hash is compared after")
            continue
        rel = entry.get("path")
        if rel is None:  # outside the repository: only its original place can hold it
            original = Path(entry["original"])
            if original.is_file() and sha256(original) == expected:
                say(f"dataset '{name}' ok at {original}")
                continue
            failures.append(f"dataset '{name}' lay outside the repository at {original}; put the file with "
                            f"sha256 {expected} there")
            continue
        seen = []
        for label, root in roots:
            candidate = root / rel
            if not candidate.is_file():
                continue
            if sha256(candidate) != expected:
                seen.append(f"{label} (sha256 differs)")
                continue
            target = src / rel
            if candidate != target:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(candidate, target)
            say(f"dataset '{name}' ok ({rel}, from {label})")
            break
        else:
            looked = ", ".join(label for label, _ in roots)
            failures.append(f"dataset '{name}' ({rel}, sha256 {expected[:16]}…) not found in {looked}"
                            + (f"; wrong content in {', '.join(seen)}" if seen else "")
                            + ": set MLPLAT_REPRO_DATA to a folder holding it at that path, "
                              "or rebuild the bundle with --with-data")
    for failure in failures:
        say(f"error: {failure}")
    return 1 if failures else 0


def _mlplat(args: list[str], project: Path) -> subprocess.CompletedProcess:
    code = "import sys; from mlplat.cli import main; sys.argv[0] = 'mlplat'; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=project, capture_output=True, text=True, check=False,
                          env={**os.environ, "MLPLAT_PROJECT_DIR": str(project)})


def _close(a: float, b: float, tolerance: float) -> bool:
    return a == b or abs(a - b) <= tolerance * max(abs(a), abs(b))


def compare(bundle: Path, project: Path, out: Path) -> int:
    original = json.loads((bundle / "run.json").read_text())
    listed = _mlplat(["runs", "list", "--stack", original["stack"], "--json", "-n", "200"], project)
    if listed.returncode != 0:
        say(f"error: could not list the stack's runs: {listed.stderr.strip()}")
        return 1
    mine = [r for r in json.loads(listed.stdout) if r.get("tags", {}).get("mlplat.reproduces") == original["run_id"]]
    if not mine:
        say(f"error: no run tagged mlplat.reproduces={original['run_id']} on stack {original['stack']}")
        return 1
    run = mine[0]  # newest first
    tolerance = float(os.environ.get("MLPLAT_REPRO_TOLERANCE", "0") or 0)
    rows = []
    for key in sorted(set(original["metrics"]) | set(run["metrics"])):
        a, b = original["metrics"].get(key), run["metrics"].get(key)
        same = a is not None and b is not None and _close(float(a), float(b), tolerance)
        rows.append({"key": f"metric {key}", "original": a, "reproduced": b, "same": same})
    for key in sorted(k for k in original["tags"] if k.startswith("mlplat.data.") and k.endswith(".sha256")) + [
            "mlplat.code.commit", "mlplat.code.dirty", "mlplat.code.diff_sha256"]:
        a, b = original["tags"].get(key), run["tags"].get(key)
        rows.append({"key": key, "original": a, "reproduced": b, "same": a == b})
    differing = [r for r in rows if not r["same"]]
    out.write_text(json.dumps({"original": original["run_id"], "reproduced": run["run_id"], "tolerance": tolerance,
                               "same": not differing, "rows": rows}, indent=2))
    for r in rows:
        say(f"{'same   ' if r['same'] else 'DIFFERS'}  {r['key']}: {r['original']} -> {r['reproduced']}")
    if differing:
        say(f"run {run['run_id']} did not reproduce {original['run_id']}: {len(differing)} of {len(rows)} differ")
        return 1
    say(f"run {run['run_id']} reproduced {original['run_id']}: {len(rows)} of {len(rows)} the same")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("environment", "data", "compare"):
        say("usage: reproduce_check.py environment BUNDLE | data BUNDLE SRC | compare BUNDLE PROJECT OUT")
        return 2
    command, *paths = argv
    args = [Path(p) for p in paths]
    return {"environment": environment, "data": data, "compare": compare}[command](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
