"""The environment every command and service runs in, passed down instead of globals.

Tests build their own ``Context`` (another project dir, a fixed clock, a named user).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console


def current_user(mode: str | None = None) -> str:
    """Name of the person at the keyboard of an embedded command: the OS user, or ``MLPLAT_USER``
    where the stack declares ``mlplat:access: {mode: trusted-local}`` (see :mod:`mlplat.identity`)."""
    from mlplat.identity import embedded_principal

    return embedded_principal(mode).name


def _console(stderr: bool) -> Console:
    # The terminal's width (or $COLUMNS) on a terminal; piped, $COLUMNS when set, else wide (160) so
    # tables stay readable in logs and CI.
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    columns = os.environ.get("COLUMNS", "").strip()
    piped = None if stream.isatty() else (int(columns) if columns.isdigit() and int(columns) > 0 else 160)
    return Console(stderr=stderr, highlight=False, width=piped)


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
    # Set while an operation that only reads runs here: stores that do not exist yet are reported
    # (NotProvisioned), never created by a read.
    reading: bool = False

    # How ``user`` was established (an mlplat.identity method: oidc, aws-iam, os-user, trusted-local...).
    # Set with ``_user`` by the server from the request's verified credentials; embedded, it follows
    # from the access mode of the stack this context loaded.
    auth_method: str | None = None
    # The verified caller of a server request (an mlplat.identity.Principal); None embedded.
    principal: Any = None
    access_mode: str | None = None

    @property
    def user(self) -> str:
        if self._user is None:
            from mlplat.identity import embedded_principal

            principal = embedded_principal(self.access_mode)
            if self.access_mode is None:  # no stack loaded yet: not cached (a stack may trust MLPLAT_USER)
                return principal.name
            self._user, self.auth_method = principal.name, principal.method
        return self._user

    @property
    def method(self) -> str:
        """How :attr:`user` was established (recorded beside it in the audit log)."""
        if self.auth_method is None:
            _ = self.user  # resolves (and, once a stack is loaded, records) the embedded identity
        if self.auth_method is not None:
            return self.auth_method
        # a name handed to the context directly (tests, tools) is only as trusted as whoever handed it
        return "trusted-local" if self._user is not None else "os-user"

    def project(self) -> Path:
        from mlplat.stack import find_project_dir

        if self.project_dir is None:
            self.project_dir = find_project_dir()
        return self.project_dir

    def stack(self, name: str):
        from mlplat.stack import load_stack

        spec = load_stack(name, self.project())
        if self.access_mode is None:
            mode = spec.access.mode
            self.access_mode = mode.value if mode is not None else "os-user"
        return spec
