"""The dashboard's ASGI app (Starlette) and its guard rails.

Bound to 127.0.0.1 only. Every request must carry a Host of 127.0.0.1/localhost
on the served port (DNS rebinding is refused with 403). The page and its JSON are
read-only GETs; the one mutating route, ``POST /api/v1/labels``, accepts only
``application/json`` and refuses cross-origin requests (an ``Origin`` other than
``http://127.0.0.1:PORT`` or ``http://localhost:PORT``, scheme included), so a web
page elsewhere cannot post a form into it. Its body is decoded with the serving
path's limits (:mod:`mlplat.serving.jsonlimit`: nesting depth, repeated keys).
"""
from __future__ import annotations

import json
from typing import Any

from mlplat.errors import MlplatError

LOOPBACK = "127.0.0.1"
MAX_BODY = 5_000_000


def create_app(spec, ctx, *, port: int, refresh: int = 10):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from mlplat.dashboard import data, render
    from mlplat.serving import jsonlimit

    allowed_hosts = {f"{LOOPBACK}:{port}", f"localhost:{port}"}
    # the page is served over plain http: an https:// (or any other scheme's) origin is another site
    allowed_origins = {f"http://{host}" for host in allowed_hosts}

    def guard(request: Request) -> Response | None:
        if request.headers.get("host", "") not in allowed_hosts:
            return JSONResponse({"error": "host not allowed"}, status_code=403)
        return None

    async def index(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        doc = data.snapshot(spec, ctx)
        return HTMLResponse(render.page(doc, refresh=refresh), headers=_headers())

    async def api_snapshot(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        return JSONResponse(json.loads(json.dumps(data.snapshot(spec, ctx), default=str)), headers=_headers())

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
        Route("/api/v1/snapshot", api_snapshot, methods=["GET"]),
        Route("/api/v1/labels", post_labels, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _headers() -> dict[str, str]:
    return {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"}


def serve(spec, ctx, *, port: int, refresh: int = 10) -> None:
    """Run until interrupted. Blocking."""
    import uvicorn

    app = create_app(spec, ctx, port=port, refresh=refresh)
    uvicorn.run(app, host=LOOPBACK, port=port, log_level="warning", access_log=False)
