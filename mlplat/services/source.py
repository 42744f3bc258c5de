"""The project packaged at its git commit, for a training job or a pipeline (provider-neutral).

``bundle_source`` writes ``<dest_dir>/source.tar.gz``: the project folder's tracked files at
``HEAD`` (``git archive``), so a job runs exactly the committed code. A work tree with
uncommitted changes (modified, deleted, or untracked files git does not ignore) is refused
unless ``allow_dirty``; then the archive holds the work tree's version of every changed file and
the bundle records the diff (``git diff HEAD`` plus each untracked file as a new-file patch, the
same diff ``mlplat.start_run`` records), so the run stays reproducible.

The requirements lock is the one ``mlplat.start_run`` records for a run: a committed
``requirements.lock`` at the project's root when there is one, else the pinned list of the
running environment (:func:`mlplat.lineage.requirements_lock`). It is copied to
``<dest_dir>/requirements.lock`` and hashed: environments are cached under that hash.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mlplat import lineage
from mlplat.contracts.pipelines import SourceBundle
from mlplat.errors import MlplatError

ARCHIVE = "source.tar.gz"
LOCK = "requirements.lock"
PROJECT_LOCK = "requirements.lock"  # a lock committed at the project's root wins over the running environment's


class SourceError(MlplatError):
    """The project cannot be packaged: not in git, no commit, or uncommitted changes."""


def _git(args: list[str], cwd: Path, *, ok: tuple[int, ...] = (0,)) -> bytes:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=300, check=False)
    except FileNotFoundError:
        raise SourceError("git is not installed", hint="install git: jobs run the project at its git commit") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"git {args[0]} took more than 300 s in {cwd}") from None
    if result.returncode not in ok:
        raise SourceError(f"git {' '.join(args[:2])} failed in {cwd}: "
                          f"{result.stderr.decode('utf-8', 'replace').strip()}")
    return result.stdout


def _changed_paths(root: Path, pathspec: list[str]) -> list[str]:
    """Paths (relative to the repository root) whose work-tree state differs from HEAD: modified,
    added, deleted, and untracked files that git does not ignore."""
    tracked = _git(["diff", "HEAD", "--name-only", "--no-renames", "-z", *pathspec], root)
    untracked = _git(["ls-files", "--others", "--exclude-standard", "-z", *pathspec, *lineage.BYTECODE], root)
    names = {p for p in (tracked + b"\0" + untracked).decode("utf-8", "surrogateescape").split("\0") if p}
    return sorted(names)


def _diff(root: Path, pathspec: list[str]) -> str:
    """``git diff HEAD`` of the project plus each untracked file as a new-file patch (as start_run records
    it), so ``git apply`` on a checkout of the commit rebuilds the packaged tree."""
    diff = _git(["diff", "HEAD", "--binary", *pathspec], root)
    untracked = _git(["ls-files", "--others", "--exclude-standard", "-z", *pathspec, *lineage.BYTECODE], root)
    for rel in sorted(p for p in untracked.decode("utf-8", "surrogateescape").split("\0") if p):
        # exit 1 means "files differ", which is the point: a patch creating the file
        diff += _git(["diff", "--no-index", "--binary", "--", "/dev/null", rel], root, ok=(0, 1))
    return diff.decode("utf-8", "surrogateescape")


def _pathspec(root: Path, project: Path, exclude: Iterable[Path]) -> list[str]:
    rel = project.relative_to(root).as_posix()
    return ["--", f":(top,literal){rel}" if rel != "." else ":(top)", *lineage._exclusions(root, tuple(exclude))]


def bundle_source(project_dir: Path | str, *, allow_dirty: bool, dest_dir: Path | str,
                  exclude: Iterable[Path] = ()) -> SourceBundle:
    """Package ``project_dir`` at its git commit into ``dest_dir`` (created if missing).

    ``exclude``: folders whose changes never make the tree dirty (the platform's own state; the
    project's ``.mlplat/`` always is). Raises :class:`SourceError` for a folder outside git, a
    repository without a commit, or uncommitted changes without ``allow_dirty`` (naming them).
    Nothing is written to ``dest_dir`` when it refuses."""
    project = Path(project_dir).resolve()
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=project, capture_output=True, text=True,
                         check=False) if project.is_dir() else None
    if top is None or top.returncode != 0:
        raise SourceError(f"{project} is not in a git repository", where=str(project),
                          hint="a job runs the project at a commit: `git init && git add -A && git commit -m init`")
    root = Path(top.stdout.strip()).resolve()
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=False)
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        raise SourceError(f"the repository at {root} has no commit yet", where=str(root),
                          hint="commit the project first: `git add -A && git commit -m init`")
    excluded = [project / lineage.STATE_ROOT, *map(Path, exclude)]
    spec = _pathspec(root, project, excluded)
    changed = _changed_paths(root, spec)
    diff: str | None = None
    if changed:
        if not allow_dirty:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise SourceError(f"the work tree has uncommitted changes: {shown}", where=str(root),
                              hint="commit them (a job runs the project at its commit), or pass --allow-dirty to "
                                   "run the work tree as it is with the diff recorded",
                              changed=changed)
        diff = _diff(root, spec)

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    rel = project.relative_to(root).as_posix()
    tree = f"{commit}:{rel}" if rel != "." else commit
    archive = dest / ARCHIVE
    with tempfile.TemporaryDirectory(prefix=".mlplat-source-", dir=dest) as tmp:
        staged = Path(tmp) / "tree"
        staged.mkdir()
        raw = _git(["archive", "--format=tar", tree], root)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            tar.extractall(staged, filter="data")
        for path in changed:  # the work tree's version of each changed file, into the archive
            source = root / path
            inside = Path(path).relative_to(rel) if rel != "." else Path(path)
            target = staged / inside
            if source.is_symlink() or source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists() or target.is_symlink():
                    target.unlink()
                if source.is_symlink():
                    target.symlink_to(os.readlink(source))
                else:
                    shutil.copy2(source, target)
            elif target.is_file() or target.is_symlink():  # deleted in the work tree
                target.unlink()
        partial = Path(tmp) / ARCHIVE
        with tarfile.open(partial, "w:gz") as tar:
            for item in sorted(staged.rglob("*")):
                tar.add(item, arcname=item.relative_to(staged).as_posix(), recursive=False)
        lock_text = _lock_text(staged)
        lock_partial = Path(tmp) / LOCK
        lock_partial.write_text(lock_text, encoding="utf-8")
        os.replace(partial, archive)
        os.replace(lock_partial, dest / LOCK)
    return SourceBundle(archive=str(archive), commit=commit, dirty=bool(changed), diff=diff,
                        requirements_lock=str(dest / LOCK),
                        lock_hash=hashlib.sha256(lock_text.encode("utf-8")).hexdigest())


def _lock_text(staged: Path) -> str:
    """The project's committed lock (as packaged), else the running environment's, as start_run records it."""
    packaged = staged / PROJECT_LOCK
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return lineage.requirements_lock(lineage.environment())


def project_lock(project_dir: Path | str) -> str:
    """The lock a project outside git runs with, decided as :func:`bundle_source` decides it."""
    return _lock_text(Path(project_dir))


def unpack(archive: Path | str, target: Path | str) -> Path:
    """Extract a source archive into ``target`` (refusing members that would land outside it)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target
