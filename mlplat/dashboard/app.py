"""The dashboard's ASGI app (Starlette) and its guard rails.

Bound to 127.0.0.1 only. Every request must carry a Host of 127.0.0.1/localhost
on the served port (DNS rebinding is refused with 403).

Login (the Jupyter pattern): `mlplat dashboard` draws a random token per start and prints
``http://127.0.0.1:PORT/login?token=...``. Visiting it (the token compared in constant time)
opens a session: an HttpOnly, ``SameSite=Strict`` cookie, then a redirect to the page. Every
page and API route needs that session (``/healthz`` aside): an API route answers 401 JSON, a
page a short 401 page pointing at the login link. The token stays valid while the dashboard
runs, so a second browser can log in; a restart draws a new one.

Pages: ``/`` (the stack) and ``/models/NAME`` (one model; every table that names a model links
there). Each page's script fetches its parts again every ``refresh`` seconds as JSON
(``/api/v1/parts``, ``/api/v1/models/NAME/parts``: ``{"updated", "parts": {element id: HTML}}``)
and swaps the sections that changed: live updates without reloading the page.

The pages and their JSON are read-only GETs; the one mutating route, ``POST /api/v1/labels``,
refuses cross-origin requests (an ``Origin`` other than ``http://127.0.0.1:PORT`` or
``http://localhost:PORT``, scheme included: 403), needs the session (401) and its CSRF token in
the ``X-CSRF-Token`` header (403 without it: the page's script reads it from the page, which
another site cannot), and accepts only ``application/json`` (415), so a web page elsewhere
cannot post a form or ``text/plain`` into it. Its body is decoded with the serving path's limits
(:mod:`mlplat.serving.jsonlimit`: nesting depth, repeated keys).

The dashboard acts as whoever ran `mlplat dashboard`: it calls the stack's control plane with
that user's credentials, and the page's header names them.
"""
from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from mlplat.errors import MlplatError

LOOPBACK = "127.0.0.1"
TRACKING_UI = "http://127.0.0.1:5000"  # `mlplat ui`'s default: a model page links each version's run there
MAX_BODY = 5_000_000
CSRF_HEADER = "x-csrf-token"
LOGIN_HINT = "open the login link printed by `mlplat dashboard` (http://127.0.0.1:PORT/login?token=...)"


def new_token() -> str:
    """A login token: 32 random bytes, url-safe."""
    return secrets.token_urlsafe(32)


def cookie_name(port: int) -> str:
    # cookies ignore ports: two dashboards on one host keep their sessions apart by name
    return f"mlplat_dashboard_{port}"


@dataclass(frozen=True)
class Session:
    csrf: str


def create_app(spec: Any, ctx: Any, *, port: int, token: str, refresh: int = 10,
               identity: dict[str, Any] | None = None, tracking_ui: str | None = TRACKING_UI) -> Any:
    """The app. ``token``: the login token of this start (`mlplat dashboard` prints the link carrying it);
    ``identity``: who the dashboard acts as (``principal``, ``method``), shown in the page's header;
    ``refresh``: seconds between the pages' fetches of their parts (0: never); ``tracking_ui``: where
    a model page's run links point (``mlplat ui``'s default address)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    from mlplat.dashboard import data, render
    from mlplat.formatting import when
    from mlplat.serving import jsonlimit

    if len(token) < 16:
        raise ValueError("the dashboard's login token must be at least 16 characters")
    allowed_hosts = {f"{LOOPBACK}:{port}", f"localhost:{port}"}
    # the page is served over plain http: an https:// (or any other scheme's) origin is another site
    allowed_origins = {f"http://{host}" for host in allowed_hosts}
    cookie = cookie_name(port)
    sessions: dict[str, Session] = {}  # session id -> session, for this process's life
    reading = threading.Lock()  # one read of the control plane at a time: pages and polls share one context

    async def read(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def locked() -> Any:
            with reading:
                return fn(*args, **kwargs)
        return await run_in_threadpool(locked)

    def guard(request: Request) -> Response | None:
        if request.headers.get("host", "") not in allowed_hosts:
            return JSONResponse({"error": "host not allowed"}, status_code=403)
        return None

    def session_of(request: Request) -> Session | None:
        sid = request.cookies.get(cookie)
        return sessions.get(sid) if sid else None

    def unauthenticated(api: bool, message: str = "no dashboard session") -> Response:
        if api:
            return JSONResponse({"error": f"{message}: log in first", "hint": LOGIN_HINT.replace("PORT", str(port))},
                                status_code=401, headers=_headers())
        return HTMLResponse(render.login_required(f"{message}."), status_code=401, headers=_headers())

    async def login(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        given = request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return unauthenticated(False, "the login link's token is missing or wrong (a restarted dashboard "
                                          "prints a new link)")
        sid = secrets.token_urlsafe(32)
        sessions[sid] = Session(csrf=secrets.token_urlsafe(32))
        response = RedirectResponse("/", status_code=303, headers=_headers())
        response.set_cookie(cookie, sid, httponly=True, samesite="strict", path="/")
        return response

    async def index(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if (session := session_of(request)) is None:
            return unauthenticated(False)
        doc = await read(data.snapshot, spec, ctx)
        return HTMLResponse(render.page(doc, refresh=refresh, identity=identity, csrf=session.csrf), headers=_headers())

    async def model_page(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if (session := session_of(request)) is None:
            return unauthenticated(False)
        name = request.path_params["name"]
        doc = await read(data.model, spec, ctx, name, tracking_ui=tracking_ui)
        if doc is None:
            return HTMLResponse(render.not_found(f"stack '{spec.name}' has no model named '{name}'.",
                                                 "pick a model from the stack's page (/)"),
                                status_code=404, headers=_headers())
        return HTMLResponse(render.model_page(doc, refresh=refresh, identity=identity, csrf=session.csrf),
                            headers=_headers())

    async def api_parts(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if session_of(request) is None:
            return unauthenticated(True)
        doc = await read(data.snapshot, spec, ctx)
        return JSONResponse({"updated": when(doc["now"]), "parts": render.parts(doc)}, headers=_headers())

    async def api_model_parts(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if session_of(request) is None:
            return unauthenticated(True)
        name = request.path_params["name"]
        doc = await read(data.model, spec, ctx, name, tracking_ui=tracking_ui)
        if doc is None:
            return JSONResponse({"error": f"stack '{spec.name}' has no model named '{name}'",
                                 "hint": "GET /api/v1/snapshot lists the stack's models"},
                                status_code=404, headers=_headers())
        return JSONResponse({"updated": when(doc["now"]), "parts": render.model_parts(doc)}, headers=_headers())

    async def script(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if session_of(request) is None:
            return unauthenticated(True)
        return Response(SCRIPT, media_type="text/javascript", headers=_headers())

    async def api_snapshot(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if session_of(request) is None:
            return unauthenticated(True)
        doc = await read(data.snapshot, spec, ctx)
        return JSONResponse(json.loads(json.dumps(doc, default=str)), headers=_headers())

    async def api_session(request: Request) -> Response:
        """Who the dashboard acts as, and the session's CSRF token (for scripts that hold the cookie)."""
        if (denied := guard(request)) is not None:
            return denied
        if (session := session_of(request)) is None:
            return unauthenticated(True)
        return JSONResponse({"identity": identity, "csrf_token": session.csrf, "csrf_header": CSRF_HEADER},
                            headers=_headers())

    async def health(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        return JSONResponse({"status": "ok", "stack": spec.name})

    async def post_labels(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() not in allowed_origins:
            return JSONResponse({"error": f"cross-origin request refused: origin {origin[:100]!r} is not "
                                          f"{' or '.join(sorted(allowed_origins))}"}, status_code=403)
        if (session := session_of(request)) is None:
            return unauthenticated(True)
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            return JSONResponse({"error": f"missing or wrong CSRF token: send the session's token in {CSRF_HEADER}",
                                 "hint": "the page's script sends it; a script holding the session cookie reads it "
                                         "from GET /api/v1/session"}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send application/json: {\"labels\": {\"<request id>\": <label>}}"},
                                status_code=415)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:  # refused before a byte of it is read
            return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
        try:
            payload: Any = jsonlimit.loads(body)
        except jsonlimit.JSONLimitError as exc:
            return JSONResponse({"error": f"body refused: {exc.message}"}, status_code=400)
        except ValueError as exc:
            return JSONResponse({"error": f"malformed JSON: {exc}"}, status_code=400)
        labels = payload.get("labels") if isinstance(payload, dict) else None
        if isinstance(labels, dict):
            pairs = list(labels.items())
        elif isinstance(labels, list) and all(isinstance(x, dict) for x in labels):
            pairs = [(x.get("request_id"), x.get("label")) for x in labels]
        else:
            return JSONResponse({"error": "expected {\"labels\": {id: label}} or {\"labels\": [{request_id, label}]}"},
                                status_code=422)
        from starlette.concurrency import run_in_threadpool

        from mlplat.api.labels import send_labels
        from mlplat.api.plane import plane_for
        from mlplat.services.monitoring.quality import parse_records

        try:
            batch = parse_records(pairs, source="http")
            result = await run_in_threadpool(send_labels, plane_for(spec, ctx), batch, source="http")
        except MlplatError as exc:
            return JSONResponse(exc.to_dict(), status_code=422)
        return JSONResponse(result)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/models/{name}", model_page, methods=["GET"]),
        Route("/login", login, methods=["GET"]),
        Route("/static/dashboard.js", script, methods=["GET"]),
        Route("/api/v1/session", api_session, methods=["GET"]),
        Route("/api/v1/snapshot", api_snapshot, methods=["GET"]),
        Route("/api/v1/parts", api_parts, methods=["GET"]),
        Route("/api/v1/models/{name}/parts", api_model_parts, methods=["GET"]),
        Route("/api/v1/labels", post_labels, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    return Starlette(routes=routes)


SCRIPT = (resources.files("mlplat") / "dashboard" / "dashboard.js").read_bytes()


def _headers() -> dict[str, str]:
    # connect-src 'self': the page's script talks to this dashboard only; no inline script runs
    return {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                       "script-src 'self'; connect-src 'self'; form-action 'none'"}


def serve(spec: Any, ctx: Any, *, port: int, token: str, refresh: int = 10, identity: dict[str, Any] | None = None,
          on_ready: Callable[[int], None] | None = None) -> None:
    """Listen on ``LOOPBACK:port`` (0: a free port) and run until interrupted. Blocking. ``PortInUse``
    (exit 9) before anything is announced when the port is taken; ``on_ready(port)`` once it serves."""
    from mlplat.serving.model_server import bind, run

    sock = bind(LOOPBACK, port)
    app = create_app(spec, ctx, port=sock.getsockname()[1], token=token, refresh=refresh, identity=identity)
    run(app, sock, on_ready=on_ready)
