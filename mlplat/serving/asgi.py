"""Small raw-ASGI helpers shared by the model server and the gateway.

Raw ASGI instead of a framework: the per-request budget is a few hundred
microseconds, and routing a handful of fixed paths needs no router.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import Inputs, RequestError, dumps

log = logging.getLogger("mlplat.serving")

JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
# predictions slower than this run in a thread so they cannot stall other requests
INLINE_BUDGET_MS = 5.0
# a request whose body has not fully arrived after this long gets 408 (a client that promises
# more bytes than it sends would otherwise hold a connection and a task for ever)
BODY_TIMEOUT_S = 10.0
BINARY_HEADER = b"inference-header-content-length"


def new_request_id() -> str:
    return os.urandom(16).hex()


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def client_request_id(scope: dict[str, Any]) -> str | None:
    """The caller's ``x-request-id`` if it is a sane token (at most 128 of ``[A-Za-z0-9._-]``), else ``None``."""
    given = header(scope, b"x-request-id")
    if given and len(given) <= 128:
        try:
            text = given.decode("ascii")
        except UnicodeDecodeError:
            return None
        if text.replace("-", "").replace("_", "").replace(".", "").isalnum():
            return text
    return None


def request_ids(scope: dict[str, Any]) -> tuple[str, str | None]:
    """``(platform id, client id)``: the platform always names a request itself, so two clients that
    pick the same ``x-request-id`` cannot collide in the captures; the caller's id is kept beside it."""
    return new_request_id(), client_request_id(scope)


def id_headers(request_id: str, client_id: str | None = None) -> list[tuple[bytes, bytes]]:
    out = [(b"x-request-id", request_id.encode())]
    if client_id:
        out.append((b"x-client-request-id", client_id.encode()))
    return out


async def read_body(scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], limit: int, *,
                    timeout: float | None = BODY_TIMEOUT_S, binary: bool = False) -> bytes:
    """The whole request body; ``RequestError(413)`` as soon as it passes ``limit`` bytes, and
    ``RequestError(408)`` when it has not fully arrived ``timeout`` seconds after reading began.
    ``binary``: any content type is read (the binary tensor extension sends octet-stream)."""
    declared = header(scope, b"content-length")
    expected = None
    if declared is not None:
        try:
            expected = int(declared)
        except ValueError:
            raise RequestError("content-length is not a number") from None
        if expected > limit:
            raise RequestError(f"request body of {expected} bytes is larger than the limit of {limit} bytes "
                               "(serving.maxBodyBytes in the stack)", 413)
    ctype = header(scope, b"content-type")
    if ctype is not None and b"json" not in ctype.lower() and not binary:
        raise RequestError(f"content-type {ctype.decode('latin-1')!r} is not supported; send application/json", 415)
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        try:
            if deadline is None:
                message = await receive()
            else:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            promised = f" of the {expected} promised (content-length)" if expected is not None else ""
            raise RequestError(f"the request body did not arrive within {timeout:g} s: got {size} bytes{promised} "
                               "(serving.bodyTimeoutSeconds in the stack)", 408) from None
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client went away")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise RequestError(f"request body is larger than the limit of {limit} bytes "
                                   "(serving.maxBodyBytes in the stack)", 413)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send(send_fn: Callable[[dict], Awaitable[None]], status: int, body: bytes,
               headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_fn({"type": "http.response.start", "status": status,
                   "headers": (headers or JSON) + [(b"content-length", str(len(body)).encode())]})
    await send_fn({"type": "http.response.body", "body": body})


async def send_json(send_fn, status: int, obj: Any, request_id: str | None = None,
                    client_id: str | None = None) -> None:
    headers = list(JSON)
    if request_id:
        headers += id_headers(request_id, client_id)
    if status == 408:  # the rest of the body may still come: this connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send(send_fn, status, dumps(obj), headers)


async def send_error(send_fn, exc: RequestError, request_id: str | None = None, *, v2: bool = False,
                     client_id: str | None = None) -> None:
    """The JSON error body with ``x-request-id`` (a fresh id when the request had none yet)."""
    request_id = request_id or new_request_id()
    await send_json(send_fn, exc.status, exc.body(request_id, v2=v2), request_id, client_id)


def binary_header_length(scope: dict[str, Any]) -> int | None:
    """The ``Inference-Header-Content-Length`` of a binary tensor request, or ``None``."""
    value = header(scope, BINARY_HEADER)
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise RequestError("Inference-Header-Content-Length is not a number") from None
    if length <= 0:
        raise RequestError("Inference-Header-Content-Length must be positive")
    return length


async def guarded(app: Callable[[dict, Any, Any], Awaitable[None]], scope: dict[str, Any], receive, send_fn) -> None:
    """Run ``app``; an exception it lets escape becomes a JSON 500 with a request id (if nothing was
    sent yet) instead of the server's plain-text page, and is logged with its traceback."""
    started = False

    async def tracking_send(message: dict) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send_fn(message)

    try:
        await app(scope, receive, tracking_send)
    except Exception:
        request_id = new_request_id()
        log.exception("request %s %s failed (request id %s)", scope.get("method"), scope.get("path"), request_id)
        if scope.get("type") == "http" and not started:
            body = {"error_code": "INTERNAL_ERROR", "request_id": request_id,
                    "message": f"the server failed on this request; its log has the details under {request_id}"}
            if str(scope.get("path", "")).startswith("/v2"):
                body = {"error": body["message"], **body}
            await send_json(send_fn, 500, body, request_id)


async def lifespan(receive, send_fn, startup: Callable[[], Any] | None = None,
                   shutdown: Callable[[], Any] | None = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if startup:
                    result = startup()
                    if asyncio.iscoroutine(result):
                        await result
            except Exception as exc:  # report to uvicorn, which exits non-zero
                await send_fn({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send_fn({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown:
                result = shutdown()
                if asyncio.iscoroutine(result):
                    await result
            await send_fn({"type": "lifespan.shutdown.complete"})
            return


async def predict(model: LoadedModel, inputs: Inputs) -> Any:
    """Run the model inline when it is fast, in the default thread pool when it is not."""
    if model.ewma_ms > INLINE_BUDGET_MS:
        return await asyncio.get_running_loop().run_in_executor(None, model.predict, inputs)
    return model.predict(inputs)
