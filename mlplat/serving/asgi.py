"""Small raw-ASGI helpers shared by the model server and the gateway.

Raw ASGI instead of a framework: the per-request budget is a few hundred
microseconds, and routing a handful of fixed paths needs no router.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Callable

from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import Inputs, RequestError, dumps

JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
# predictions slower than this run in a thread so they cannot stall other requests
INLINE_BUDGET_MS = 5.0


def new_request_id() -> str:
    return os.urandom(16).hex()


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def request_id_for(scope: dict[str, Any]) -> str:
    """The caller's ``x-request-id`` if it is a sane token, else a fresh one."""
    given = header(scope, b"x-request-id")
    if given and len(given) <= 128:
        try:
            text = given.decode("ascii")
        except UnicodeDecodeError:
            return new_request_id()
        if text.replace("-", "").replace("_", "").replace(".", "").isalnum():
            return text
    return new_request_id()


async def read_body(scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], limit: int) -> bytes:
    """The whole request body, or ``RequestError(413)`` as soon as it passes ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestError(f"request body of {int(declared)} bytes is larger than the limit of {limit} bytes "
                                   "(serving.maxBodyBytes in the stack)", 413)
        except ValueError:
            raise RequestError("content-length is not a number") from None
    ctype = header(scope, b"content-type")
    if ctype is not None and b"json" not in ctype.lower():
        raise RequestError(f"content-type {ctype.decode('latin-1')!r} is not supported; send application/json", 415)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
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


async def send_json(send_fn, status: int, obj: Any, request_id: str | None = None) -> None:
    headers = list(JSON)
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    await send(send_fn, status, dumps(obj), headers)


async def send_error(send_fn, exc: RequestError, request_id: str | None = None) -> None:
    await send_json(send_fn, exc.status, exc.body(request_id), request_id)


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
