"""The gateway's container backend: a version registered from an OCI image
(:mod:`mlplat.services.container_models`) served by the image itself.

Loading such a version starts its container (by the registered image id, on a free loopback port,
attached to the gateway's process so it ends with it) and waits for its readiness route; the loaded
model then proxies each request to the container over HTTP (httpx, kept-alive connections) in the
image's protocol. Everything around the call stays the gateway's: routing (direct, A/B, canary,
shadow, rollback), capture and per-variant metrics see a :class:`ContainerModel` as any loaded
version. The container is removed when no routing needs the version any more
(:meth:`mlplat.serving.routing.ModelPool.retain`) and when the gateway stops.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat.services import container_models
from mlplat.serving import predictor
from mlplat.serving.predictor import LoadedModel
from mlplat.serving.protocol import Inputs, Signature

# what a proxied call is taken to cost: it waits on the network, so it always runs off the event loop
REMOTE_MS = 1e6


@dataclass
class ContainerModel(LoadedModel):
    container: container_models.RunningContainer | None = None
    client: Any = None  # httpx.Client on the container's URL
    _closed: threading.Event = field(default_factory=threading.Event)

    def predict(self, inputs: Inputs) -> Any:
        out = self._predict(inputs)
        self.ewma_ms = REMOTE_MS
        return out

    def close(self) -> None:
        """Stop and remove the container (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self.client is not None:
            self.client.close()
        if self.container is not None:
            self.container.stop()


def load(model_dir: Path | str, *, name: str, version: int | str) -> ContainerModel:
    """Start the version's container and return the model that proxies to it. Raises what
    :func:`mlplat.services.container_models.start` raises (the image missing, never ready)."""
    import httpx

    path = Path(model_dir)
    image = container_models.image_of(path)
    signature = Signature.from_model_dir(path)
    what = f"{name} version {version}"
    container = container_models.start(image, what=what)
    client = httpx.Client(base_url=container.url, timeout=30)
    columns = signature.names

    def proxy(inputs: Inputs) -> Any:
        frame = predictor._frame(inputs, inputs.columns or columns)
        return container_models.invoke(client, image, frame, model=name, what=what)

    model = ContainerModel(name=name, version=version, path=path, signature=signature, flavor="container",
                           _predict=proxy, container=container, client=client)
    model.ewma_ms = REMOTE_MS
    return model
