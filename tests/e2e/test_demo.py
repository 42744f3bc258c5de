"""`make demo`'s golden path (examples/demo.sh), run as a newcomer would, in a copy of the repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def test_the_demo_runs_end_to_end(tmp_path):
    copy = tmp_path / "repo"
    for rel in tracked_files():
        source = REPO / rel
        if source.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / rel)
    # MLPLAT_CONTAINER_ENGINE stays: images are test_container_image.py's subject, not the demo's
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLAT_") or k == "MLPLAT_CONTAINER_ENGINE"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["MLPLAT_PROJECT_DIR"] = str(copy)
    result = subprocess.run(["bash", "examples/demo.sh"], cwd=copy, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Applied." in result.stdout and "FINISHED" in result.stdout
    assert (copy / ".mlplat" / "dev" / "mlflow.db").is_file()
