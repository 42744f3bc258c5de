"""``mlplat server``: the platform API over one stack's ledger (ASGI, Starlette on uvicorn).

Every operation of :mod:`mlplat.api.operations` is a route under ``/api/v1``. The server is
the only process that opens the ledger; clients send JSON and get the operation's result
document back (``{"result": ..., "messages": [...]}``) or an error document
(``{"error", "message", "where", "hint", "exit_code", "details"}``) with a 4xx status for
anything the caller can fix, 503 (with ``Retry-After``) when the database is unavailable and
nothing was written, and 500 only for a bug.

Also: ``/healthz`` (the process answers), ``/readyz`` (the database answers and its schema is
current), ``/metrics`` (Prometheus), ``/api/v1/openapi.json``, ``/api/v1/version``.

Callers are identified by the stack's ``mlplat:access.mode`` (:mod:`mlplat.identity.verifiers`):
a verified bearer token or signed AWS request, else 401 with ``WWW-Authenticate``; only a
``trusted-local`` server (loopback only, see :mod:`mlplat.netguard`) takes the ``Mlplat-User`` header.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat.api import operations
from mlplat.api.operations import API_VERSION, InvalidRequest, Operation
from mlplat.api.plane import STACK_HEADER, USER_HEADER, VERSION_HEADER, CapturedConsole
from mlplat.errors import ExitCode, MlplatError

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

log = logging.getLogger("mlplat.server")

# A capability the stack's provider lacks is the request's problem (400: ask for something else), like
# every refusal a caller can act on; 5xx is kept for the server's own faults and its dependencies.
STATUS = {
    ExitCode.FAILED: 422, ExitCode.USAGE: 422, ExitCode.CONFIG: 400, ExitCode.NOT_FOUND: 404,
    ExitCode.CONFLICT: 409, ExitCode.DENIED: 403, ExitCode.NOT_SUPPORTED: 400, ExitCode.INTEGRITY: 409,
    ExitCode.EXTERNAL: 502, ExitCode.ABORTED: 409,
}
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


def database_unavailable(exc: BaseException) -> bool:
    """True for a failure to reach the database (connection refused or lost, server shutting
    down): the transaction did not commit, so the caller may retry."""
    for cause in _chain(exc):
        module = type(cause).__module__ or ""
        if module.startswith("psycopg") and type(cause).__name__ in (
                "OperationalError", "InterfaceError", "AdminShutdown", "CannotConnectNow", "ConnectionTimeout",
                "PoolTimeout"):
            return True
        if module.startswith("sqlalchemy") and type(cause).__name__ in ("OperationalError", "InterfaceError",
                                                                         "DisconnectionError", "TimeoutError"):
            return True
    return False


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


class Metrics:
    """Requests per operation and status, and their latency, in Prometheus' text format."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[float]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, op: str, status: int, seconds: float) -> None:
        self.requests[(op, status)] = self.requests.get((op, status), 0) + 1
        buckets = self.latency.setdefault(op, [0.0] * (len(BUCKETS_S) + 1))
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        self.sums[op] = self.sums.get(op, 0.0) + seconds

    def render(self) -> str:
        lines = ["# HELP mlplat_api_requests_total Platform API requests by operation and HTTP status.",
                 "# TYPE mlplat_api_requests_total counter"]
        for (op, status), count in sorted(self.requests.items()):
            lines.append(f'mlplat_api_requests_total{{operation="{op}",status="{status}"}} {count}')
        lines += ["# HELP mlplat_api_request_seconds Platform API request latency.",
                  "# TYPE mlplat_api_request_seconds histogram"]
        for op, buckets in sorted(self.latency.items()):
            total = 0.0
            for bound, observed in zip((*BUCKETS_S, float("inf")), buckets, strict=True):
                total += observed
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'mlplat_api_request_seconds_bucket{{operation="{op}",le="{le}"}} {int(total)}')
            lines.append(f'mlplat_api_request_seconds_sum{{operation="{op}"}} {self.sums[op]:.6f}')
            lines.append(f'mlplat_api_request_seconds_count{{operation="{op}"}} {int(total)}')
        return "\n".join(lines) + "\n"


def _error(exc: MlplatError, status: int | None = None, messages: list[str] | None = None) -> JSONResponse:
    """The error document; ``messages`` are the lines the operation printed before it failed."""
    from starlette.responses import JSONResponse

    code = status or getattr(exc, "http_status", None) or STATUS.get(exc.exit_code, 400)
    body = exc.to_dict() | ({"messages": messages} if messages else {})
    return JSONResponse(body, status_code=code, headers={VERSION_HEADER: str(API_VERSION)})


def create_app(spec: Any, *, project_dir: Path, database_url: str | None = None,
               clock: Callable[[], float] = time.time, ready: Callable[[], None] | None = None,
               migrated: bool = False, authenticator: Any = None, health: Any = None) -> Any:
    """The ASGI app serving ``spec``'s ledger. ``ready()`` raises when the database cannot serve;
    ``migrated``: the caller brought the ledger's schema up to date, requests need not check it;
    ``health``: a :class:`mlplat.services.health.HealthRecorder` counting each API request's outcome."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from mlplat.context import Context

    table = operations.load()
    metrics = Metrics()
    headers = {VERSION_HEADER: str(API_VERSION)}

    from mlplat.identity import TRUSTED_LOCAL, Principal, rbac, verifiers

    authenticator = authenticator if authenticator is not None else verifiers.authenticator_for(spec)
    access = getattr(spec, "access", None)
    access_mode = access.mode.value if access is not None and access.mode is not None else None

    def context(principal: Principal, console: Any) -> Context:
        return Context(project_dir=project_dir, console=console, err=console, json=True, assume_yes=True,
                       clock=clock, _user=principal.name, auth_method=principal.method, principal=principal,
                       access_mode=access_mode,
                       ledger_owner=True, database_url=database_url, ledger_current=migrated)

    def identify(request: Request) -> Principal:
        """The caller: from its verified credentials, or (a trusted-local server on one machine only)
        the name it sends."""
        check_headers(request)
        if authenticator is not None:
            verified: Principal = authenticator.authenticate(request.headers)
            return verified
        user = (request.headers.get(USER_HEADER) or "").strip()
        if not user:
            raise MlplatError(f"the {USER_HEADER} header is missing", where=USER_HEADER,
                              hint="send the caller's name (the mlplat CLI and SDK do)")
        return Principal(user, TRUSTED_LOCAL)

    def challenge(request: Request) -> str:
        """RFC 7235 §4.1 / RFC 6750 §3: the scheme to authenticate with; ``invalid_token`` when
        credentials were sent and refused."""
        scheme = getattr(authenticator, "scheme", "Bearer")
        sent = bool((request.headers.get("authorization") or "").strip())
        return f'{scheme} realm="mlplat"' + (', error="invalid_token"' if sent else "")

    def run(op: Operation, principal: Principal, console: Any, params: Any) -> Any:
        ctx = context(principal, console)
        rbac.authorize(spec, ctx, principal, op, params)  # Forbidden (403) names the role needed
        return op.invoke(spec, ctx, params)

    def check_headers(request: Request) -> None:
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version != str(API_VERSION):
            raise MlplatError(f"this client speaks platform API v{version} but the server speaks v{API_VERSION}",
                              hint="install the mlplat version the server runs (or upgrade the server)",
                              client_api_version=version, server_api_version=API_VERSION)
        stack = request.headers.get(STACK_HEADER)
        if stack is not None and stack != spec.name:
            raise MlplatError(f"this server serves stack '{spec.name}', not '{stack}'",
                              where="mlplat:controlPlane.url",
                              hint="point the stack file's controlPlane.url at the server of that stack")

    async def parse(request: Request, op: Operation) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        if op.method == "GET":
            for key in request.query_params:
                values = request.query_params.getlist(key)
                raw[key] = values if len(values) > 1 else values[0]
        else:
            body = await request.body()
            if body.strip():
                try:
                    raw = json.loads(body)
                except ValueError as exc:
                    raise InvalidRequest(f"the request body is not JSON: {exc}", where="(body)",
                                         hint="send a JSON object of the operation's parameters") from None
                if not isinstance(raw, dict):
                    raise InvalidRequest("the request body must be a JSON object", where="(body)",
                                         hint="send a JSON object of the operation's parameters")
        for name in op.path_params:
            if name in raw and str(raw[name]) != request.path_params[name]:
                raise InvalidRequest(f"{name} is given in both the path and the body, differently", where=name)
            raw[name] = request.path_params[name]
        return raw

    def endpoint(op: Operation) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            captured = CapturedConsole()
            try:
                try:
                    # verifying may fetch the issuer's keys or call STS: off the event loop
                    principal = await run_in_threadpool(identify, request)
                except MlplatError as exc:
                    response = _error(exc, getattr(exc, "http_status", None) or 400)
                    if response.status_code == 401:
                        response.headers["WWW-Authenticate"] = challenge(request)
                    status = response.status_code
                    return response
                params = op.validate(await parse(request, op))
                result = await run_in_threadpool(run, op, principal, captured.console, params)
                status = 200
                body = json.dumps({"result": result, "messages": captured.messages()})
                return Response(body, media_type="application/json", headers=headers)
            except MlplatError as exc:
                response = _error(exc, 422 if isinstance(exc, InvalidRequest) else None, captured.messages())
                status = response.status_code
                return response
            except Exception as exc:
                if database_unavailable(exc):
                    status = 503
                    return JSONResponse(
                        MlplatError(f"the platform database is unavailable: {type(exc).__name__}",
                                    hint="nothing was written; retry shortly").to_dict() | {"retryable": True},
                        status_code=503, headers=headers | {"Retry-After": "1"})
                log.exception("operation %s failed", op.name)
                return JSONResponse({"error": "InternalError", "message": f"internal error in {op.name}: "
                                     f"{type(exc).__name__}: {exc}", "where": None,
                                     "hint": "see the server's log; report it", "exit_code": int(ExitCode.INTERNAL)},
                                    status_code=500, headers=headers)
            finally:
                metrics.observe(op.name, status, time.perf_counter() - started)
                if health is not None:
                    health.observe(status)

        return handle

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=headers)

    async def readyz(_: Request) -> Response:
        try:
            if ready is not None:
                await run_in_threadpool(ready)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"},
                                status_code=503, headers=headers)
        return JSONResponse({"status": "ready"}, headers=headers)

    async def prometheus(_: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi_doc(_: Request) -> Response:
        return JSONResponse(operations.openapi(), headers=headers)

    async def version(_: Request) -> Response:
        from mlplat import __version__

        return JSONResponse({"api_version": API_VERSION, "mlplat": __version__, "stack": spec.name,
                             "database": _dialect(database_url)}, headers=headers)

    async def other_version(request: Request) -> Response:
        asked = request.path_params["version"]
        if asked == f"v{API_VERSION}":
            return await not_found(request)
        return _error(MlplatError(f"this server speaks platform API v{API_VERSION}, not {asked}",
                                  hint="install the mlplat version the server runs (or upgrade the server)",
                                  client_api_version=asked, server_api_version=API_VERSION), 400)

    async def not_found(request: Request) -> Response:
        return _error(MlplatError(f"no platform API route {request.method} {request.url.path}",
                                  hint="see /api/v1/openapi.json"), 404)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", prometheus),
              Route(f"/api/v{API_VERSION}/openapi.json", openapi_doc), Route(f"/api/v{API_VERSION}/version", version)]
    for op in sorted(table.values(), key=lambda o: o.path):
        routes.append(Route(f"/api/v{API_VERSION}{op.path}", endpoint(op), methods=[op.method], name=op.name))
    routes.append(Route("/api/{version:str}/{rest:path}", other_version, methods=["GET", "POST", "PUT", "DELETE"]))
    routes.append(Route("/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]))
    return Starlette(routes=routes)


def _dialect(url: str | None) -> str:
    if not url:
        return "sqlite"
    return url.split(":", 1)[0].split("+", 1)[0]
