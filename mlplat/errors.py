"""The one error root and the documented exit codes.

Every failure a user can cause is an :class:`MlplatError` subclass carrying what
went wrong, where, and what to do next. The CLI maps the class to an exit code in
one place (``mlplat.cli.main``); nothing else calls ``sys.exit`` with a failure.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of the ``mlplat`` command. Pinned by tests; documented in the README."""

    OK = 0
    FAILED = 1  # a check ran and said no: gate failed, policy violation, verify failed
    USAGE = 2  # bad command line (click's own code)
    CONFIG = 3  # stack file missing, malformed or invalid
    NOT_FOUND = 4  # unknown run, model, version, deployment
    CONFLICT = 5  # lock held, concurrent operation, state changed underneath
    DENIED = 6  # governance refused: self-approval, non-approver, missing approvals
    NOT_SUPPORTED = 7  # provider lacks the capability, or a required tool is missing
    INTEGRITY = 8  # tampered artifact, broken audit chain
    EXTERNAL = 9  # a dependency (MLflow, a cloud API, a subprocess) failed
    INTERNAL = 70  # a bug in mlplat: rerun with --verbose and report it
    ABORTED = 130  # the user declined or interrupted


class MlplatError(Exception):
    """Root of every error mlplat raises on purpose.

    ``message`` says what is wrong, ``where`` names the file/key/object, ``hint``
    says how to fix it. ``details`` carries structured fields for ``--json``.
    """

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "where": self.where,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
            **({"details": self.details} if self.details else {}),
        }


class StackError(MlplatError):
    """A stack file is missing, malformed or invalid."""

    exit_code = ExitCode.CONFIG


class NotProvisioned(StackError):
    """A stack whose state does not exist on this machine: it was never provisioned (or was destroyed).
    Reading it creates nothing; ``mlplat up`` (or a first write) does."""

    def __init__(self, stack: str, missing: str, *, hint: str | None = None):
        super().__init__(f"stack '{stack}' is not provisioned (no {missing})",
                         hint=hint or f"run `mlplat up --stack {stack}` first", stack=stack)


class NotFound(MlplatError):
    exit_code = ExitCode.NOT_FOUND


class Ambiguous(NotFound):
    """A short reference (a run id prefix) names more than one object, so none is chosen; the
    candidates are in ``details``."""


class Conflict(MlplatError):
    """Another operation holds the lock, or the state changed underneath us."""

    exit_code = ExitCode.CONFLICT


class Denied(MlplatError):
    """Governance refused the operation (approvals, gate, tracking rules)."""

    exit_code = ExitCode.DENIED


class Unauthenticated(Denied):
    """The caller's credentials are missing, malformed, expired or not trusted (HTTP 401)."""

    http_status = 401


class Forbidden(Denied):
    """An authenticated caller whose roles do not allow the operation (HTTP 403)."""

    http_status = 403


class IdentityProviderUnavailable(MlplatError):
    """The identity provider (its keys, or STS) could not be reached to check a caller: nothing was
    decided, the caller may retry (HTTP 503)."""

    exit_code = ExitCode.EXTERNAL
    http_status = 503


class TrackingRequired(Denied):
    """A model was logged or registered outside a tracked run."""


class CheckFailed(MlplatError):
    """A check ran and failed (gate, policy, verification)."""

    exit_code = ExitCode.FAILED


class IntegrityError(MlplatError):
    exit_code = ExitCode.INTEGRITY


class ExternalError(MlplatError):
    exit_code = ExitCode.EXTERNAL


class PortInUse(ExternalError):
    """A server's port is held by another process. Exit 9 like every failure outside mlplat and outside
    the command line (the command is right; the machine's state is not), and as ``mlplat server`` always
    answered it: the fix is another ``--port`` or stopping the holder."""

    def __init__(self, host: str, port: int):
        super().__init__(f"port {port} on {host} is already in use by another process",
                         hint="choose another port with --port N (--port 0 picks a free one), or stop the process "
                              "that holds it", host=host, port=port)


class Aborted(MlplatError):
    exit_code = ExitCode.ABORTED


class CapabilityNotSupported(MlplatError):
    """The stack's provider does not implement a capability (never a silent no-op)."""

    exit_code = ExitCode.NOT_SUPPORTED

    def __init__(self, provider: str, capability: str, *, hint: str | None = None):
        super().__init__(
            f"provider '{provider}' does not support '{capability}'",
            hint=hint or "use a stack on a provider that supports it (mlplat providers lists them)",
            provider=provider,
            capability=capability,
        )
        self.provider = provider
        self.capability = capability


class ToolMissing(MlplatError):
    """An external program (pulumi, buildah, podman) is not installed (behind ``mlplat server``:
    HTTP 503, the server lacks a dependency; the caller's request was fine)."""

    exit_code = ExitCode.NOT_SUPPORTED
    http_status = 503
