"""A relocatable bundle that reruns a tracked run: ``mlplat runs reproduce RUN``.

The bundle holds the run's lineage, requirements lock, uncommitted diff, dataset hashes, its
metrics, the code itself (a ``git bundle`` of the commit, when the repository is at hand) and
``reproduce.sh``. The script names no folder of the machine that wrote it: it finds everything
relative to itself, clones the commit into a fresh folder (never the user's work tree), applies
the diff, builds a venv from the lock and runs the training command with that venv's python after
checking every dataset by hash, then compares the new run with the original.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat import lineage as lin

CHECK_SCRIPT = Path(__file__).with_name("reproduce_check.py")
CODE_REF = "refs/heads/mlplat-run"


@dataclass
class Bundle:
    out: Path
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the current world differs from the run's
    notes: list[str] = field(default_factory=list)  # what cannot be checked or carried automatically


def invocation(doc: dict[str, Any]) -> dict[str, Any]:
    """The recorded invocation, or one rebuilt from the ``command``/``cwd`` of runs recorded before it was."""
    if doc.get("invocation"):
        return doc["invocation"]
    code = doc.get("code") or {}
    root = Path(code["repo_root"]) if code.get("repo_root") else None
    cwd = Path(doc.get("cwd") or ".")
    argv = shlex.split(doc.get("command") or "")[1:]
    rel_cwd = lin.relative_inside(cwd, root)
    args = [os.path.relpath(a, cwd) if rel_cwd and Path(a).is_absolute() and lin.relative_inside(Path(a), root) else a
            for a in argv]
    return {"argv": args, "cwd": rel_cwd, "project": None, "interactive": not argv}


def _bundle_code(repo_root: Path, commit: str, target: Path) -> str | None:
    """Write a git bundle holding ``commit`` and its history to ``target``; the reason when it cannot.

    The commit is fetched into a scratch bare repository first: ``git bundle`` wants a ref, and
    the user's repository is only read, never given a new ref."""
    with tempfile.TemporaryDirectory(prefix="mlplat-bundle-") as tmp:
        steps = (["git", "init", "--quiet", "--bare", tmp],
                 ["git", "-C", tmp, "fetch", "--quiet", "--no-tags", str(repo_root), f"{commit}:{CODE_REF}"],
                 ["git", "-C", tmp, "bundle", "create", "--quiet", str(target), CODE_REF])
        for step in steps:
            try:
                result = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return str(exc)
            if result.returncode != 0:
                return result.stderr.strip() or f"{step[3]} failed"
    return None


def write(out: Path, *, run, doc: dict[str, Any], environment: dict[str, Any] | None, stack: str,
          provider_kind: str, project_dir: Path, with_data: bool = False, with_code: bool = True) -> Bundle:
    """Write the bundle for ``run`` (a RunRecord) whose lineage document is ``doc`` into ``out``.

    The lineage files (lineage.json, requirements.lock, environment.json, code.diff) must already
    be in ``out``. Checks the current world against the run (``warnings``) but writes the bundle
    either way."""
    bundle = Bundle(out)
    code = doc.get("code") or {}
    root = Path(code["repo_root"]) if code.get("in_git") and code.get("repo_root") else None
    commit = code.get("commit") if root is not None else None

    # data: hashes with paths relative to the repository, checked now against the current files
    data_entries = []
    for d in doc.get("datasets", []):
        entry = {"name": d["name"], "kind": d["kind"], "sha256": d["sha256"], "rows": d.get("rows"),
                 "path": None, "original": d.get("path")}
        if d["kind"] == "file":
            original = Path(d["path"])
            entry["path"] = lin.relative_inside(original, root)
            if entry["path"] is None:
                bundle.notes.append(f"dataset '{d['name']}' lies outside the repository ({original}): "
                                    "the script can only check it there")
            if not original.is_file():
                bundle.warnings.append(f"dataset '{d['name']}' is missing at {original}")
            elif lin.file_sha256(original) != d["sha256"]:
                bundle.warnings.append(f"dataset '{d['name']}' at {original} changed since the run (sha256 differs)")
            elif with_data and entry["path"] is not None:
                target = out / "data" / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(original, target)
        else:
            bundle.notes.append(f"dataset '{d['name']}' was an in-memory {d['kind']}: the command rebuilds it and "
                                f"the reproduced run's sha256 is compared with {d['sha256'][:16]}")
        data_entries.append(entry)
    (out / "data.json").write_text(json.dumps(data_entries, indent=2))

    (out / "run.json").write_text(json.dumps({
        "run_id": run.run_id, "experiment": run.experiment, "name": run.name, "stack": stack,
        "provider": provider_kind, "metrics": run.metrics, "params": run.params,
        "tags": {k: v for k, v in run.tags.items() if k.startswith(("mlplat.data.", "mlplat.code."))}},
        indent=2, sort_keys=True))
    shutil.copyfile(CHECK_SCRIPT, out / "reproduce_check.py")

    if commit:
        current = lin.code_version(root) if root.exists() else None
        if current and current.commit != commit:
            bundle.warnings.append(f"the working tree is at {str(current.commit)[:8]}, the run used {commit[:8]}")
        if with_code and root.exists():
            reason = _bundle_code(root, commit, out / "code.bundle")
            if reason:
                (out / "code.bundle").unlink(missing_ok=True)
                bundle.notes.append(f"code.bundle not written ({reason}): pass the repository to reproduce.sh")
        elif not root.exists():
            bundle.notes.append(f"the repository is not at {root} any more: pass it to reproduce.sh")
    else:
        bundle.notes.append("the run's code was not in git: the script cannot rebuild it")

    how = invocation(doc)
    if how.get("interactive") or not how.get("argv"):
        bundle.notes.append("the run was not started by a command (notebook or interpreter): the script prepares "
                            "the code, environment and data, and says where to train")
    if how.get("cwd") is None and commit:
        bundle.notes.append("the run's working folder was outside its repository: the command runs at the "
                            "repository's root")

    project_rel = how.get("project") or lin.relative_inside(project_dir, root) or "."
    local = []
    for name, source in ((environment or {}).get("sources") or {}).items():
        if source.get("kind") != "dir":
            continue
        rel = lin.relative_inside(Path(source["path"]), root)
        if rel is not None:
            local.append((rel, bool(source.get("editable"))))
        elif name != "mlplat":
            bundle.notes.append(f"package {name} was installed from {source['path']}, outside the repository: "
                                "give it to reproduce.sh through MLPLAT_REPRO_PIP_EXTRA")
        else:
            bundle.notes.append(f"mlplat was installed from the folder {source['path']}: where the bundle runs, "
                                "set MLPLAT_REPRO_PIP_EXTRA to where to install it from")

    script = render(run=run, commit=commit, stack=stack, provider_kind=provider_kind,
                    remote=code.get("remote") or "", python=(environment or {}).get("python") or doc.get(
                        "environment", {}).get("python") or "", invocation=how, project_rel=project_rel, local=local)
    (out / "reproduce.sh").write_text(script)
    (out / "reproduce.sh").chmod(0o755)
    bundle.files = sorted(p.name for p in out.iterdir() if p.name != "work")
    return bundle


def render(*, run, commit: str | None, stack: str, provider_kind: str, remote: str, python: str,
           invocation: dict[str, Any], project_rel: str, local: list[tuple[str, bool]]) -> str:
    """The text of ``reproduce.sh``. Every value is shell-quoted; no path of this machine appears."""
    q = shlex.quote
    pyver = ".".join(python.split(".")[:2]) if python else "3"
    argv = invocation.get("argv") or []
    cwd_rel = invocation.get("cwd") or "."
    lines = [
        "#!/usr/bin/env bash",
        f"# Reproduce run {run.run_id} ({run.experiment}/{run.name}) of stack {stack}:  ./reproduce.sh [REPOSITORY]",
        "#",
        "# 1. clones the run's commit into a fresh folder (never your own work tree) from REPOSITORY (a path",
        "#    or URL), else code.bundle beside this script, else the recorded remote, and applies code.diff;",
        "# 2. builds a venv from requirements.lock and runs everything after with that venv's own python;",
        "# 3. checks every dataset file by sha256 before training (data/ here, or $MLPLAT_REPRO_DATA);",
        "# 4. runs the training command, tracked on the stack (a local stack is provisioned inside the work",
        "#    folder, so the original platform is untouched), and compares the new run with the original.",
        "# Paths are relative to this bundle: copy it anywhere.",
        "#",
        "# Environment: MLPLAT_REPRO_DIR (work folder, default ./work here), MLPLAT_REPRO_BASE_PYTHON (the",
        f"#   interpreter that builds the venv, default python{pyver}), MLPLAT_REPRO_PYTHON (use this existing",
        "#   interpreter instead of the locked venv), MLPLAT_REPRO_PIP_EXTRA (more pip arguments, e.g. where",
        "#   to install mlplat from), MLPLAT_REPRO_DATA, MLPLAT_REPRO_TOLERANCE (relative, for metrics; default 0).",
        "set -euo pipefail",
        'BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        f"RUN={q(run.run_id)}",
        f"COMMIT={q(commit or '')}",
        f"STACK={q(stack)}",
        f"REMOTE={q(remote)}",
        "say() { printf 'reproduce: %s\\n' \"$*\" >&2; }",
        'die() { say "error: $*"; exit 1; }',
        "mlplat() { \"$PY\" -c 'import sys; from mlplat.cli import main; sys.argv[0] = \"mlplat\"; sys.exit(main())' \"$@\"; }",
        "",
        'mkdir -p "${MLPLAT_REPRO_DIR:-$BUNDLE/work}"',
        'WORK="$(cd "${MLPLAT_REPRO_DIR:-$BUNDLE/work}" && pwd)"',
        'SRC="$WORK/src"',
        'if [ -e "$SRC" ]; then',
        '  [ -f "$WORK/.mlplat-reproduce" ] || '
        'die "$SRC exists and this script did not make it: set MLPLAT_REPRO_DIR to a new folder"',
        '  rm -rf "$SRC"',
        "fi",
        ': > "$WORK/.mlplat-reproduce"',
        "",
        "# 1. code",
    ]
    if commit:
        lines += [
            'SOURCE="${1:-}"',
            'if [ -z "$SOURCE" ] && [ -f "$BUNDLE/code.bundle" ]; then SOURCE="$BUNDLE/code.bundle"; fi',
            'SOURCE="${SOURCE:-$REMOTE}"',
            '[ -n "$SOURCE" ] || die "nothing here holds commit $COMMIT: pass the repository, ./reproduce.sh PATH-OR-URL"',
            'say "code: commit $COMMIT from $SOURCE"',
            'git clone --quiet --no-checkout -- "$SOURCE" "$SRC"',
            'git -C "$SRC" -c advice.detachedHead=false checkout --quiet --detach "$COMMIT" '
            '|| die "commit $COMMIT is not in $SOURCE"',
            'if [ -f "$BUNDLE/code.diff" ]; then',
            '  say "code: applying the run\'s uncommitted changes (code.diff)"',
            '  git -C "$SRC" apply --whitespace=nowarn "$BUNDLE/code.diff"',
            "fi",
        ]
    else:
        lines.append('die "the run\'s code was not in git: there is no commit to rebuild it from"')
    lines += [
        "",
        "# 2. environment",
        'if [ -n "${MLPLAT_REPRO_PYTHON:-}" ]; then',
        '  PY="$MLPLAT_REPRO_PYTHON"',
        '  say "environment: using $PY instead of a venv built from the lock (MLPLAT_REPRO_PYTHON)"',
        "else",
        f'  BASE="${{MLPLAT_REPRO_BASE_PYTHON:-$(command -v python{pyver} || command -v python3 || true)}}"',
        '  [ -n "$BASE" ] || die "no python3 to build the venv with: set MLPLAT_REPRO_BASE_PYTHON"',
        '  [ -x "$WORK/venv/bin/python" ] || "$BASE" -m venv "$WORK/venv"',
        '  PY="$WORK/venv/bin/python"',
        '  say "environment: installing requirements.lock into $WORK/venv"',
        "  # MLPLAT_REPRO_PIP_EXTRA is a list of pip arguments: split on purpose",
        '  "$PY" -m pip install --quiet --disable-pip-version-check -r "$BUNDLE/requirements.lock" ${MLPLAT_REPRO_PIP_EXTRA:-}',
    ]
    for rel, editable in local:
        lines.append(f'  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps '
                     f'{"-e " if editable else ""}"$SRC/"{q(rel)}')
    lines += [
        "fi",
        f'"$PY" -c "import sys; sys.exit(0 if \'%d.%d\' % sys.version_info[:2] == \'{pyver}\' else 1)" '
        f'|| say "warning: $PY is not Python {pyver} like the run"' if python else ":",
        '"$PY" "$BUNDLE/reproduce_check.py" environment "$BUNDLE"',
        ('"$PY" -c "import mlplat" 2>/dev/null || die "$PY cannot import mlplat (the run had it from a local folder): '
         'set MLPLAT_REPRO_PIP_EXTRA to where to install it from, e.g. a path or mlplat==VERSION"'),
        "",
        "# 3. data, checked before training",
        '"$PY" "$BUNDLE/reproduce_check.py" data "$BUNDLE" "$SRC"',
        "",
        "# 4. train, tracked, and compare",
        f'PROJECT="$SRC/"{q(project_rel)}',
        'export MLPLAT_PROJECT_DIR="$PROJECT" MLPLAT_STACK="$STACK" MLPLAT_REPRODUCES="$RUN"',
    ]
    if provider_kind == "local":
        lines.append('(cd "$PROJECT" && mlplat up --stack "$STACK" --yes >&2)')
    lines.append(f'cd "$SRC/"{q(cwd_rel)}')
    if argv and not invocation.get("interactive"):
        command = " ".join(q(a) for a in argv)
        lines += [
            f"say {q('training: python ' + command)}",
            f'"$PY" {command}',
            '"$PY" "$BUNDLE/reproduce_check.py" compare "$BUNDLE" "$PROJECT" "$WORK/comparison.json"',
        ]
    else:
        lines += [('say "ready: the run was not started by a command; train in $PWD with $PY, '
                   'inside mlplat.start_run (MLPLAT_REPRODUCES is set)"')]
    return "\n".join(lines) + "\n"
