"""Serve one MLflow model directory over HTTP (MLflow scoring + Open Inference Protocol v2).

    python -m mlplat.serving.model_server --model-dir DIR [--name NAME] [--version V]
        [--host 127.0.0.1] [--port 8080] [--port-file PATH] [--max-body-bytes N] [--body-timeout S]

Routes: ``POST /invocations``, ``GET /ping``, ``GET /health``, ``GET /v2`` (server metadata),
``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (JSON, or the binary tensor
data extension). Errors are JSON with ``x-request-id``; on ``/v2`` routes they carry ``error``. Used as the staging
endpoint and inside the
container image. Binding beyond loopback is refused: there is no authentication.
With ``--port 0`` the kernel picks a free port; ``--port-file`` receives it once
the server accepts connections.
"""
from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlplat import __version__
from mlplat.errors import ExternalError, MlplatError, PortInUse
from mlplat.netguard import require_loopback
from mlplat.serving import asgi, predictor
from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import V2_EXTENSIONS, RequestError, parse_scoring, parse_v2, to_list, v2_body, v2_outputs

DEFAULT_MAX_BODY = 1_000_000
LISTEN_BACKLOG = 2048  # connections the kernel queues before they are accepted
SERVER_NAME = "mlplat-model-server"


class ModelServerApp:
    """Raw ASGI app around one :class:`LoadedModel`."""

    def __init__(self, model: LoadedModel, *, max_body_bytes: int = DEFAULT_MAX_BODY,
                 body_timeout: float | None = asgi.BODY_TIMEOUT_S):
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.requests = 0
        self.errors = 0

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        await asgi.guarded(self._handle, scope, receive, send)

    async def _handle(self, scope: dict[str, Any], receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await asgi.lifespan(receive, send)
            return
        if kind != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                await asgi.send_error(send, RequestError("use POST for /invocations", 405))
                return
            await self._score(scope, receive, send, v2=False)
            return
        if path in ("/ping", "/health", "/v2/health/live", "/v2/health/ready"):
            body = {"status": "ok"} if not path.startswith("/v2") else (
                {"live": True} if path.endswith("live") else {"ready": True})
            await asgi.send_json(send, 200, body)
            return
        v2 = path == "/v2" or path.startswith("/v2/")
        if path == "/v2" and method == "GET":
            await asgi.send_json(send, 200, server_metadata(SERVER_NAME))
            return
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/"):].split("/")
            name = rest[0]
            if rest[1:2] == ["versions"] and len(rest) >= 3:  # /v2/models/{name}/versions/{v}/...
                rest = [name] + rest[3:]
            if name != self.model.name:
                await asgi.send_error(send, RequestError(
                    f"unknown model '{name}'; this server serves '{self.model.name}'", 404), v2=True)
                return
            tail = rest[1:]
            if not tail and method == "GET":
                await asgi.send_json(send, 200, metadata(self.model))
                return
            if tail == ["ready"] and method == "GET":
                await asgi.send_json(send, 200, {"name": name, "ready": True})
                return
            if tail == ["infer"] and method == "POST":
                await self._score(scope, receive, send, v2=True)
                return
        await asgi.send_error(send, RequestError(
            f"no route {method} {path}; routes: POST /invocations, GET /ping, GET /v2, GET /v2/health/live, "
            f"GET /v2/models/{self.model.name}, POST /v2/models/{self.model.name}/infer", 404), v2=v2)

    async def _score(self, scope, receive, send, *, v2: bool) -> None:
        request_id, client_id = asgi.request_ids(scope)
        self.requests += 1
        try:
            header_length = asgi.binary_header_length(scope) if v2 else None
            body = await asgi.read_body(scope, receive, self.max_body_bytes, timeout=self.body_timeout,
                                        binary=header_length is not None)
            if v2:
                inputs = parse_v2(body, self.model.signature, header_length=header_length)
            else:
                inputs = parse_scoring(body, self.model.signature)
        except RequestError as exc:
            await asgi.send_error(send, exc, request_id, v2=v2, client_id=client_id)
            return
        except ConnectionAbortedError:
            return
        try:
            predictions = await asgi.predict(self.model, inputs)
        except Exception as exc:  # the model's fault, not the caller's: 500 for this request only
            self.errors += 1
            message = f"model raised {type(exc).__name__}: {exc}"
            body = {"error_code": "MODEL_ERROR", "request_id": request_id, "message": message}
            await asgi.send_json(send, 500, {"error": message, **body} if v2 else body, request_id, client_id)
            return
        if v2:
            out = {"model_name": self.model.name, "model_version": str(self.model.version),
                   "id": inputs.request_id or request_id, "outputs": v2_outputs(predictions)}
            payload, header_size = v2_body(out, inputs.meta.get("binary_outputs", False))
            headers = asgi.id_headers(request_id, client_id)
            if header_size is None:
                await asgi.send(send, 200, payload, asgi.JSON + headers)
            else:
                await asgi.send(send, 200, payload, [(b"content-type", b"application/octet-stream"),
                                                     (asgi.BINARY_HEADER, str(header_size).encode())] + headers)
            return
        out = {"predictions": to_list(predictions), "request_id": request_id}
        if client_id:
            out["client_request_id"] = client_id
        await asgi.send_json(send, 200, out, request_id, client_id)


def server_metadata(name: str) -> dict[str, Any]:
    """``GET /v2``: the Open Inference Protocol's server metadata, with the extensions served."""
    return {"name": name, "version": __version__, "extensions": list(V2_EXTENSIONS)}


def metadata(model: LoadedModel) -> dict[str, Any]:
    return {"name": model.name, "versions": [str(model.version)], "platform": f"mlflow-{model.flavor}",
            "inputs": model.signature.describe(),
            "outputs": [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (else
    # headers and body go out as two segments and delayed ACKs add 40 ms per response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise ExternalError(f"cannot listen on {host}:{port}: {exc.strerror}",
                            hint="choose another --port, or a loopback address this machine has") from None
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def run(app: Any, sock: socket.socket, *, port_file: Path | None = None, log_level: str = "warning",
        on_ready: Callable[[int], None] | None = None, shared: bool = False) -> None:
    """Run ``app`` on uvicorn over an already bound socket until interrupted. Once it serves, the port
    is written to ``port_file`` and ``on_ready(port)`` is called (where a command announces its URL).

    ``shared``: other processes accept from the same listening socket (the workers of ``mlplat serve
    --workers N``). Each then accepts one connection per wake-up of its event loop instead of all that
    are queued, so a burst of new connections spreads over the workers (a busy one comes back later
    and takes fewer) instead of all going to whichever woke first."""
    import uvicorn

    # asyncio accepts up to `backlog` connections per wake-up, and listens with it as the queue length:
    # a shared socket gets 1 for the first, and its queue length back once uvicorn has started
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_keep_alive=30,
                            backlog=1 if shared else LISTEN_BACKLOG)
    server = uvicorn.Server(config)
    if port_file is not None or on_ready is not None or shared:
        original = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await original(sockets=sockets)
            if shared:
                sock.listen(LISTEN_BACKLOG)
            if server.should_exit:  # the app's startup failed: nothing serves, nothing is announced
                return
            port = sock.getsockname()[1]
            if port_file is not None:
                tmp = Path(str(port_file) + ".tmp")
                tmp.write_text(str(port))
                tmp.replace(port_file)
            if on_ready is not None:
                on_ready(port)

        server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlplat.serving.model_server", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, type=Path, help="MLflow model directory (holds MLmodel)")
    parser.add_argument("--name", default=None, help="model name in /v2 routes (default: the folder name)")
    parser.add_argument("--version", default="1", help="model version reported in responses")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--port-file", type=Path, default=None, help="write the bound port here once serving")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY)
    parser.add_argument("--body-timeout", type=float, default=asgi.BODY_TIMEOUT_S,
                        help="seconds a request body may take to arrive before the server answers 408")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        require_loopback(args.host)
        if args.body_timeout <= 0:
            raise MlplatError(f"--body-timeout must be a positive number of seconds, got {args.body_timeout:g}")
        if not (args.model_dir / "MLmodel").is_file():
            raise MlplatError(f"{args.model_dir} is not an MLflow model directory (no MLmodel file)",
                              hint="pass the folder that holds MLmodel")
        started = time.perf_counter()
        model = predictor.load(args.model_dir, name=args.name or args.model_dir.name, version=args.version)
        sock = bind(args.host, args.port)
    except MlplatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    logging.getLogger("mlplat").info("loaded %s in %.2fs", args.model_dir, time.perf_counter() - started)
    print(f"serving {model.name} v{model.version} ({model.flavor}) on http://{args.host}:{sock.getsockname()[1]}",
          flush=True)
    run(ModelServerApp(model, max_body_bytes=args.max_body_bytes, body_timeout=args.body_timeout), sock, port_file=args.port_file,
        log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
