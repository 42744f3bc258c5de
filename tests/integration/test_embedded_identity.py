"""Embedded identity: a command on one machine acts as the operating-system user running it.

``MLPLAT_USER`` is believed only where the stack declares ``mlplat:access: {mode: trusted-local}``
(tests and demos playing several people). Elsewhere typing an approver's name changes nothing: the
OS user is recorded (method ``os-user``), and the author of a version cannot approve it under a
typed name.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mlplat.context import Context
from mlplat.identity import os_user
from tests.conftest import REPO, run_cli, write_project
from tests.integration.support_registry import stack_text, train

pytestmark = pytest.mark.integration

ME = os_user()
APPROVER = "risk-office@example.com"


def without_access(text: str) -> str:
    """A stack file as a real team's embedded stack is: no mlplat:access section (the OS user)."""
    head, found, tail = text.partition("  mlplat:access:\n    mode: trusted-local\n")
    assert found, "the dev stack declares trusted-local"
    return head.rstrip("\n").rsplit("\n  # The demo plays", 1)[0] + "\n" + tail


def cli(root: Path, *args: str, user: str | None = None):
    env = {"MLPLAT_PROJECT_DIR": str(root)}
    if user is not None:
        env["MLPLAT_USER"] = user
    return run_cli(*args, cwd=root, env=env)


def audit_log(root: Path) -> list[dict]:
    shown = cli(root, "audit", "log", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """An embedded stack without trusted-local; provisioned and trained while MLPLAT_USER names someone else."""
    text = without_access(stack_text([APPROVER, ME]))
    assert "mlplat:access" not in text and "trusted-local" not in text
    root = write_project(tmp_path_factory.mktemp("embedded") / "project", {"dev": text})
    up = cli(root, "up", "--stack", "dev", "--yes", user=APPROVER)
    assert up.returncode == 0, up.stderr
    assert train(root) == 1  # the training script runs with MLPLAT_USER=ds@example.com
    return root


def test_without_trusted_local_the_os_user_is_recorded(plain):
    entries = audit_log(plain)
    assert [(e["action"], e["actor"], e["auth_method"]) for e in entries] == [
        ("governance.applied", ME, "os-user"), ("model.registered", ME, "os-user")]
    conn = sqlite3.connect(plain / ".mlplat" / "dev" / "platform.db")
    try:
        assert conn.execute("SELECT author FROM model_versions WHERE model='scorer'").fetchall() == [(ME,)]
    finally:
        conn.close()


def test_a_typed_approver_name_cannot_approve_ones_own_version(plain):
    before = audit_log(plain)
    forged = cli(plain, "models", "approve", "scorer", "1", "--reason", "looks fine to me", user=APPROVER)
    assert forged.returncode == 6, forged.stdout + forged.stderr
    assert f"{ME} registered scorer version 1 and cannot approve or reject it" in forged.stderr
    assert APPROVER not in forged.stderr.split("hint:")[0]  # the typed name was never taken for the caller
    assert audit_log(plain) == before  # refused: nothing written
    conn = sqlite3.connect(plain / ".mlplat" / "dev" / "platform.db")
    try:
        assert conn.execute("SELECT count(*) FROM approvals").fetchone() == (0,)
    finally:
        conn.close()


def test_trusted_local_records_the_typed_name(tmp_path):
    root = write_project(tmp_path / "project", {"dev": (REPO / "stacks" / "Pulumi.dev.yaml").read_text()})
    up = cli(root, "up", "--stack", "dev", "--yes", user="lead@example.com")
    assert up.returncode == 0, up.stderr
    assert [(e["actor"], e["auth_method"]) for e in audit_log(root)] == [("lead@example.com", "trusted-local")]


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-local", "os-user"])
def test_the_context_takes_the_typed_name_only_from_a_trusted_local_stack(tmp_path, monkeypatch, trusted):
    dev = (REPO / "stacks" / "Pulumi.dev.yaml").read_text()
    root = write_project(tmp_path / "project", {"dev": dev if trusted else without_access(dev)})
    monkeypatch.setenv("MLPLAT_USER", "typed@example.com")
    ctx = Context(project_dir=root)
    assert ctx.user == ME  # before a stack is loaded nothing trusts the typed name (and nothing is cached)
    ctx.stack("dev")
    assert (ctx.user, ctx.method) == (("typed@example.com", "trusted-local") if trusted else (ME, "os-user"))
    monkeypatch.setenv("MLPLAT_USER", "   ")
    blank = Context(project_dir=root)
    blank.stack("dev")
    assert (blank.user, blank.method) == (ME, "trusted-local" if trusted else "os-user")
