"""Serve one MLflow model directory over HTTP (MLflow scoring + Open Inference Protocol v2).

    python -m mlplat.serving.model_server --model-dir DIR [--name NAME] [--version V]
        [--host 127.0.0.1] [--port 8080] [--port-file PATH] [--max-body-bytes N]

Routes: ``POST /invocations``, ``GET /ping``, ``GET /health``, ``GET /v2/health/live``,
``GET /v2/health/ready``, ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``,
``POST /v2/models/{name}/infer``. Used as the staging endpoint and inside the
container image. Binding beyond loopback is refused: there is no authentication.
With ``--port 0`` the kernel picks a free port; ``--port-file`` receives it once
the server accepts connections.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mlplat.serving import asgi
from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import RequestError, parse_scoring, parse_v2, to_list, v2_outputs

DEFAULT_MAX_BODY = 1_000_000


class ModelServerApp:
    """Raw ASGI app around one :class:`LoadedModel`."""

    def __init__(self, model: LoadedModel, *, max_body_bytes: int = DEFAULT_MAX_BODY):
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.requests = 0
        self.errors = 0

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
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
        if path == "/v2":
            await asgi.send_json(send, 200, {"name": "mlplat-model-server", "version": "1", "extensions": []})
            return
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/"):].split("/")
            name = rest[0]
            if rest[1:2] == ["versions"] and len(rest) >= 3:  # /v2/models/{name}/versions/{v}/...
                rest = [name] + rest[3:]
            if name != self.model.name:
                await asgi.send_error(send, RequestError(
                    f"unknown model '{name}'; this server serves '{self.model.name}'", 404))
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
            f"no route {method} {path}; routes: POST /invocations, GET /ping, GET /v2/health/live, "
            f"GET /v2/models/{self.model.name}, POST /v2/models/{self.model.name}/infer", 404))

    async def _score(self, scope, receive, send, *, v2: bool) -> None:
        request_id = asgi.request_id_for(scope)
        self.requests += 1
        try:
            body = await asgi.read_body(scope, receive, self.max_body_bytes)
            inputs = (parse_v2 if v2 else parse_scoring)(body, self.model.signature)
        except RequestError as exc:
            await asgi.send_error(send, exc, request_id)
            return
        except ConnectionAbortedError:
            return
        try:
            predictions = await asgi.predict(self.model, inputs)
        except Exception as exc:  # the model's fault, not the caller's: 500 for this request only
            self.errors += 1
            await asgi.send_json(send, 500, {"error_code": "MODEL_ERROR", "request_id": request_id,
                                             "message": f"model raised {type(exc).__name__}: {exc}"}, request_id)
            return
        if v2:
            out = {"model_name": self.model.name, "model_version": str(self.model.version),
                   "id": inputs.request_id or request_id, "outputs": v2_outputs(predictions)}
        else:
            out = {"predictions": to_list(predictions), "request_id": request_id}
        await asgi.send_json(send, 200, out, request_id)


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
        from mlplat.errors import Conflict

        raise Conflict(f"cannot listen on {host}:{port}: {exc.strerror}",
                       hint="pick another --port, or stop the process that holds it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(app: Any, sock: socket.socket, *, port_file: Path | None = None, log_level: str = "warning") -> None:
    """Run ``app`` on uvicorn over an already bound socket until interrupted."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    if port_file is not None:
        original = server.startup

        async def startup(sockets=None):
            await original(sockets=sockets)
            tmp = Path(str(port_file) + ".tmp")
            tmp.write_text(str(sock.getsockname()[1]))
            tmp.replace(port_file)

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
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    from mlplat.cli.ui import require_loopback
    from mlplat.errors import MlplatError

    try:
        require_loopback(args.host)
        if not (args.model_dir / "MLmodel").is_file():
            raise MlplatError(f"{args.model_dir} is not an MLflow model directory (no MLmodel file)",
                              hint="pass the folder that holds MLmodel")
        from mlplat.serving import predictor

        started = time.perf_counter()
        model = predictor.load(args.model_dir, name=args.name or args.model_dir.name, version=args.version)
        sock = bind(args.host, args.port)
    except MlplatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    logging.getLogger("mlplat").info("loaded %s in %.2fs", args.model_dir, time.perf_counter() - started)
    print(f"serving {model.name} v{model.version} ({model.flavor}) on http://{args.host}:{sock.getsockname()[1]}",
          flush=True)
    run(ModelServerApp(model, max_body_bytes=args.max_body_bytes), sock, port_file=args.port_file,
        log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
