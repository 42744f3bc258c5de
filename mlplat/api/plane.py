"""The control plane a command talks to: the ledger in this process, or ``mlplat server``.

    plane = plane_for(spec, ctx)
    doc = plane.call("models.list", environment="dev")

:func:`plane_for` picks by the stack: ``mlplat:controlPlane.url`` set → :class:`RemotePlane`
(HTTP to the server); unset → :class:`EmbeddedPlane` (the operation runs here). Both validate
the parameters with the operation's own model and return the same JSON document, so callers
never know which one they hold.
"""
from __future__ import annotations

import io
import os
import time
from abc import ABC, abstractmethod
from typing import Any

from mlplat import errors
from mlplat.api import operations
from mlplat.api.operations import API_VERSION, InvalidRequest
from mlplat.errors import ExternalError, MlplatError
from mlplat.identity.client import Credentials, NoCredentials, credentials_for, login_hint

VERSION_HEADER = "Mlplat-Api-Version"
USER_HEADER = "Mlplat-User"
STACK_HEADER = "Mlplat-Stack"
# Reads may be retried freely; a write only when the server said it did not commit (503).
RETRIES = 4


class ControlPlane(ABC):
    """Runs platform operations by name; the result is the operation's JSON document."""

    mode: str

    @abstractmethod
    def call(self, name: str, /, **params: Any) -> Any: ...

    def close(self) -> None:  # noqa: B027 - optional
        pass


class EmbeddedPlane(ControlPlane):
    """The operation runs in this process against the stack's own ledger."""

    mode = "embedded"

    def __init__(self, spec: Any, ctx: Any):
        self.spec, self.ctx = spec, ctx

    def call(self, name: str, /, **params: Any) -> Any:
        op = operations.get(name)
        params_ = op.validate(params)
        before = getattr(self.ctx, "reading", False)
        self.ctx.reading = not op.writes  # a read never creates a store (see NotProvisioned)
        try:
            return op.invoke(self.spec, self.ctx, params_)
        finally:
            self.ctx.reading = before


_ERRORS: dict[str, type[MlplatError]] = {
    cls.__name__: cls for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, MlplatError)
} | {"InvalidRequest": InvalidRequest}


def error_from(doc: dict[str, Any], *, status: int) -> MlplatError:
    """The server's error document as the exception the embedded call would have raised."""
    cls = _ERRORS.get(str(doc.get("error")))
    if cls is None or cls in (errors.CapabilityNotSupported,):
        by_code = {int(c.exit_code): c for c in (errors.StackError, errors.NotFound, errors.Conflict, errors.Denied,
                                                  errors.IntegrityError, errors.ExternalError, errors.Aborted)}
        cls = by_code.get(int(doc.get("exit_code") or 0), MlplatError)
    exc = cls.__new__(cls)
    details = dict(doc.get("details") or {})
    if doc.get("messages"):
        details["messages"] = list(doc["messages"])
    MlplatError.__init__(exc, str(doc.get("message") or f"the control plane answered HTTP {status}"),
                         where=doc.get("where"), hint=doc.get("hint"), **details)
    exit_code = doc.get("exit_code")
    if isinstance(exit_code, int) and exit_code != int(cls.exit_code):
        try:
            exc.exit_code = errors.ExitCode(exit_code)
        except ValueError:
            pass
    return exc


class RemotePlane(ControlPlane):
    """The operation runs on ``mlplat server`` at ``url``; this process holds no ledger."""

    mode = "server"

    def __init__(self, url: str, *, stack: str, user: str, err: Any = None, timeout: float = 600.0,
                 transport: Any = None, sleep: Any = time.sleep, credentials: Credentials | None = None):
        import httpx

        self.url = url.rstrip("/")
        self.stack = stack
        self.err = err
        self.sleep = sleep
        # What proves the caller's identity to the server (mlplat.identity.client); none for a server
        # that does not authenticate, which reads the Mlplat-User header instead.
        self.credentials = credentials if credentials is not None else NoCredentials()
        headers = {VERSION_HEADER: str(API_VERSION), USER_HEADER: user, STACK_HEADER: stack,
                   "User-Agent": f"mlplat/{_version()}"}
        self.http = httpx.Client(base_url=self.url, headers=headers, transport=transport,
                                 timeout=httpx.Timeout(timeout, connect=5.0), trust_env=False)

    def close(self) -> None:
        self.http.close()

    def call(self, name: str, /, **params: Any) -> Any:
        op = operations.get(name)
        validated = op.validate(params)  # the same refusal, before anything is sent
        values = validated.model_dump(mode="json")
        path = op.url_path(values)
        rest = {k: v for k, v in values.items() if k not in op.path_params}
        if op.method == "GET":
            query = {k: v for k, v in rest.items() if v is not None}
            send = lambda headers: self.http.get(path, params=query, headers=headers)  # noqa: E731
        else:
            send = lambda headers: self.http.post(path, json=rest, headers=headers)  # noqa: E731
        try:
            doc = self._send(send, op)
        except MlplatError as exc:
            self._print(exc.details.pop("messages", None) or [])
            raise
        self._print(doc.get("messages") or [])
        return doc.get("result")

    def _print(self, messages: list[str]) -> None:
        """Lines the operation printed on the server, printed here as they would have been embedded."""
        for message in messages:
            if self.err is not None:
                self.err.print(message, highlight=False, markup=False, soft_wrap=True)

    def _send(self, send: Any, op: operations.Operation) -> dict[str, Any]:
        import httpx

        delay = 0.2
        attempt = 0
        refreshed = False
        while True:
            try:
                response = send(self.credentials.headers())
            except httpx.TimeoutException as exc:
                raise ExternalError(f"the control plane at {self.url} did not answer {op.name} in time: {exc}",
                                    hint="the operation may still complete on the server; check with a read "
                                         "command before retrying it") from None
            except httpx.TransportError as exc:
                if op.writes and not isinstance(exc, httpx.ConnectError):
                    # the request reached the server, which went away before it answered
                    raise ExternalError(f"the control plane at {self.url} closed the connection before answering "
                                        f"{op.name}: {exc or type(exc).__name__}",
                                        hint="the operation may have been partly or wholly carried out: check with a "
                                             "read command, or rerun it (promotions resume where they stopped)") from None
                if op.writes or attempt == RETRIES:
                    raise ExternalError(f"the control plane at {self.url} is unreachable: {exc}",
                                        where="mlplat:controlPlane.url",
                                        hint=f"start it with `mlplat server --stack {self.stack}`, or fix the URL "
                                             "in the stack file; nothing was written") from None
                self.sleep(delay)
                delay *= 2
                attempt += 1
                continue
            server_version = response.headers.get(VERSION_HEADER)
            if server_version is not None and server_version != str(API_VERSION):
                raise MlplatError(f"this mlplat speaks platform API v{API_VERSION} but the control plane at "
                                  f"{self.url} speaks v{server_version}",
                                  hint="install the mlplat version the server runs (or upgrade the server)")
            if response.status_code == 503 and attempt < RETRIES:
                retry_after = response.headers.get("Retry-After")
                self.sleep(float(retry_after) if retry_after and retry_after.replace(".", "").isdigit() else delay)
                delay *= 2
                attempt += 1
                continue
            if response.status_code == 401 and not refreshed:
                # The server refused the credential before running anything, so even a write may be
                # sent again: once, with a renewed token (expired, or signed by a key since rotated).
                refreshed = True
                if self.credentials.refresh():
                    continue
            try:
                doc = response.json()
            except ValueError:
                doc = None
            if server_version is None and not isinstance(doc, dict):
                raise ExternalError(f"{self.url} answered {op.name} with HTTP {response.status_code} and no "
                                    "platform API response: is it an `mlplat server`?",
                                    where="mlplat:controlPlane.url")
            if response.status_code >= 400:
                refusal = error_from(doc if isinstance(doc, dict) else {}, status=response.status_code)
                if response.status_code == 401 and not isinstance(refusal, errors.Unauthenticated):
                    raise errors.Unauthenticated(refusal.message, where=refusal.where,
                                                 hint=refusal.hint or login_hint(self.stack), **refusal.details)
                raise refusal
            return doc if isinstance(doc, dict) else {}


def _version() -> str:
    from mlplat import __version__

    return __version__


def plane_for(spec: Any, ctx: Any) -> ControlPlane:
    """The stack's control plane: the server its ``controlPlane.url`` names, else this process."""
    if ctx.ledger_owner:
        return EmbeddedPlane(spec, ctx)
    url = os.environ.get("MLPLAT_CONTROL_PLANE_URL") or spec.control_plane.url
    if url:
        return RemotePlane(url, stack=spec.name, user=ctx.user, err=ctx.err,
                           credentials=credentials_for(spec, clock=ctx.clock))
    return EmbeddedPlane(spec, ctx)


class CapturedConsole:
    """A console for the server's request context: what a service prints comes back as messages."""

    def __init__(self) -> None:
        from rich.console import Console

        self.buffer = io.StringIO()
        self.console = Console(file=self.buffer, width=160, highlight=False, color_system=None)

    def messages(self) -> list[str]:
        text = self.buffer.getvalue()
        return [line for line in text.splitlines() if line.strip()]
