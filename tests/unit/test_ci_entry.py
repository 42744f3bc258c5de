"""CI cannot go green with tests unrun: `.ci/run` fails on a failed system-package install and
exports CI=true, under which a tool the suite needs is a failure, not a skip."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, in_ci, require_tools

MISSING_TOOL = "mlplat-no-such-tool"


def test_a_missing_tool_skips_on_a_developer_machine(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING_TOOL} not found on PATH: the widget tests"):
        require_tools(MISSING_TOOL, purpose="the widget tests", install="apt-get install widget")


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_a_missing_tool_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="CI=true and .*apt-get install widget"):
        require_tools("sh", MISSING_TOOL, purpose="the widget tests", install="apt-get install widget")


def test_present_tools_are_found_first_alternative_wins(monkeypatch):
    monkeypatch.setenv("CI", "true")
    found = require_tools(f"{MISSING_TOOL}|sh", "bash", purpose="x", install="y")
    assert found == {MISSING_TOOL: shutil.which("sh"), "bash": shutil.which("bash")}
    monkeypatch.setenv("CI", "false")
    assert not in_ci()


def ci_tree(tmp_path: Path, install_exit: int) -> tuple[Path, dict[str, str]]:
    """A copy of `.ci/run` beside a stand-in system-package script and Makefile, with apt-get
    present and the user root (stubs on PATH), as on a CI machine."""
    tree = tmp_path / "repo"
    (tree / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", tree / ".ci" / "run")
    (tree / ".ci" / "system-packages.sh").write_text(
        f"echo 'E: Unable to locate package chromium'\nexit {install_exit}\n")
    (tree / "Makefile").write_text("lint:\n\t@echo \"make lint ran\"\ntest:\n\t@echo \"make test ran with CI=$$CI\"\n")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in (("apt-get", "exit 0"), ("id", "echo 0")):
        stub = stubs / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CI", None)
    return tree, env


def test_ci_run_fails_when_the_system_package_install_fails(tmp_path):
    tree, env = ci_tree(tmp_path, install_exit=100)
    done = subprocess.run(["bash", str(tree / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "installing the system packages failed" in done.stderr
    assert "make test ran" not in done.stdout  # the tests never run on a half-provisioned machine


def test_ci_run_exports_ci_true_to_the_tests(tmp_path):
    tree, env = ci_tree(tmp_path, install_exit=0)
    done = subprocess.run(["bash", str(tree / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "make test ran with CI=true" in done.stdout
