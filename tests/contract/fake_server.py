"""A fake cloud's HTTP front: uvicorn serving an ASGI app on 127.0.0.1 (a free port) in a daemon thread."""
from __future__ import annotations

import threading
import time
from typing import Any


class Server:
    """Uvicorn serving an ASGI app on 127.0.0.1 (a free port) in a daemon thread. Subclasses name the
    thread (``thread_name``) and the fake in the error raised when it does not start (``what``)."""

    thread_name = "fake-http"
    what = "the fake server"

    def __init__(self, app: Any):
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                     access_log=False)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name=self.thread_name, daemon=True)
        self.port = 0

    def start(self, timeout: float = 30.0) -> Server:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not (self.server.started and self.server.servers):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"{self.what} did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
