"""The environment every command and service runs in, passed down instead of globals.

Tests build their own ``Context`` (another project dir, a fixed clock, a named user).
"""
from __future__ import annotations

import getpass
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console


def current_user() -> str:
    """Identity of the person at the keyboard: ``MLPLAT_USER``, else git ``user.email``, else the OS user."""
    user = os.environ.get("MLPLAT_USER", "").strip()
    if user:
        return user
    try:
        email = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        email = ""
    return email or getpass.getuser()


def _console(stderr: bool) -> Console:
    # Wide when piped so tables stay readable in logs and CI; real width on a terminal.
    stream = __import__("sys").stderr if stderr else __import__("sys").stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 160)


@dataclass
class Context:
    project_dir: Path | None = None
    console: Console = field(default_factory=lambda: _console(False))
    err: Console = field(default_factory=lambda: _console(True))
    json: bool = False
    verbose: bool = False
    assume_yes: bool = False
    clock: Callable[[], float] = time.time
    _user: str | None = None
    # Set in `mlplat server` (and the platform processes it runs): this process owns the ledger, so
    # operations run here even when the stack names a control-plane URL. ``database_url`` then
    # points the ledger at the server's database instead of the state directory's SQLite file.
    ledger_owner: bool = False
    database_url: str | None = None
    # Set by `mlplat server` for its requests: it brought the ledger's schema up to date when it started
    # (its /readyz says when that no longer holds), so a request does not check the schema again.
    ledger_current: bool = False

    @property
    def user(self) -> str:
        if self._user is None:
            self._user = current_user()
        return self._user

    def project(self) -> Path:
        from mlplat.stack import find_project_dir

        if self.project_dir is None:
            self.project_dir = find_project_dir()
        return self.project_dir

    def stack(self, name: str):
        from mlplat.stack import load_stack

        return load_stack(name, self.project())
