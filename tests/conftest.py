"""Fixtures shared by every layer: a throwaway mlplat project and a CLI runner.

Tests never touch the checkout's own .mlplat: each gets a project in tmp_path.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Staging endpoints run as local processes unless a test asks for a container image (the
# `container` tests set MLPLAT_CONTAINER_ENGINE=podman for their own subprocesses).
os.environ.setdefault("MLPLAT_CONTAINER_ENGINE", "none")
# `mlplat serve` runs one gateway process per core by default; the tests start one (a test of the
# workers asks for them with --workers), so a gateway stays one process to signal, pause or crash.
os.environ.setdefault("MLPLAT_SERVE_WORKERS", "1")
# pytest-xdist workers inherit the controller's terminal size as COLUMNS=80/LINES=24. The CLI honours
# $COLUMNS when piped, so commands the tests run would fit an 80-column terminal no test asked for: they
# run as in a CI log (piped, no $COLUMNS) unless a test sets COLUMNS for its own subprocess.
for _size in ("COLUMNS", "LINES"):
    os.environ.pop(_size, None)
pytest_plugins = ["tests.pg"]  # the session's PostgreSQL server: the `postgres` fixture


def in_ci() -> bool:
    """``CI=true`` (set by `.ci/run` and by every common CI service): the suite must run whole."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_tools(*tools: str, purpose: str, install: str) -> dict[str, str]:
    """Paths of the system ``tools`` a test needs (each entry may be ``"a|b"``: the first found).

    A tool that is missing skips the test on a developer's machine, and fails it in CI, where a
    skip would let the run go green with the test never run. The one place that decides this.
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    for entry in tools:
        names = entry.split("|")
        path = next((p for p in map(shutil.which, names) if p), None)
        if path is None:
            missing.append(" or ".join(names))
        else:
            found[names[0]] = path
    if missing:
        message = f"{', '.join(missing)} not found on PATH: {purpose} cannot run (install with: {install})"
        if in_ci():
            pytest.fail(f"CI=true and {message}; CI must provide it (.ci/system-packages.sh)", pytrace=False)
        pytest.skip(message)
    return found


def write_project(root: Path, stacks: dict[str, str] | None = None) -> Path:
    """A project at ``root`` with Pulumi.yaml and the repo's dev stack (or the given stack texts)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "stacks").mkdir(exist_ok=True)
    if stacks is None:
        stacks = {"dev": (REPO / "stacks" / "Pulumi.dev.yaml").read_text()}
    for name, text in stacks.items():
        (root / "stacks" / f"Pulumi.{name}.yaml").write_text(text)
    return root


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A fresh project with the dev stack; cwd and MLPLAT_PROJECT_DIR point at it."""
    root = write_project(tmp_path / "project")
    monkeypatch.setenv("MLPLAT_PROJECT_DIR", str(root))
    monkeypatch.setenv("MLPLAT_USER", "ds@example.com")
    monkeypatch.delenv("MLPLAT_STACK", raising=False)
    monkeypatch.chdir(root)
    return root


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `mlplat` console script as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN / "mlplat"), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          input=input, timeout=timeout)


@pytest.fixture
def cli(project):
    """``cli("up", "--yes")`` → CompletedProcess, run inside the fixture project."""

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 300):
        return run_cli(*args, cwd=project, env={"MLPLAT_PROJECT_DIR": str(project), **(env or {})}, input=input,
                       timeout=timeout)

    return invoke


@pytest.fixture
def up_project(project, cli):
    """The fixture project with its dev stack provisioned."""
    result = cli("up", "--stack", "dev", "--yes")
    assert result.returncode == 0, result.stderr
    return project
