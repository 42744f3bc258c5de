"""``Capability.DELIVERY``: package a verified model version and run it as a staging endpoint."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlplat.contracts.base import Contract


@dataclass
class Package:
    """A container build context (and the image built from it, when an engine exists)."""

    context_dir: str
    digest: str  # sha256 over the context's files
    image: str | None = None  # image reference when built
    engine: str | None = None  # "buildah" or None


@dataclass
class Endpoint:
    """A running staging endpoint."""

    url: str
    kind: str  # "process" | "container"
    handle: str  # pid or container id
    port: int


class DeliveryPipeline(Contract):
    """Packages a verified model version and runs it as a staging endpoint."""

    @abc.abstractmethod
    def package(self, name: str, version: int, model_dir: Path, requirements: Sequence[str], *,
                artifact_digest: str) -> Package:
        """Write the build context (Containerfile, model files, pinned requirements, entrypoint) and,
        where a container engine exists, build the image. Idempotent: same inputs, same digest, no rebuild."""

    @abc.abstractmethod
    def start_endpoint(self, package: Package, name: str, version: int) -> Endpoint:
        """Start the model server for ``package`` on a free loopback port and wait until it is healthy."""

    @abc.abstractmethod
    def endpoint_alive(self, endpoint: Endpoint) -> bool:
        """Whether ``endpoint`` still runs (e.g. after the promoting process was killed and rerun)."""

    @abc.abstractmethod
    def stop_endpoint(self, endpoint: Endpoint) -> None:
        """Stop it. Idempotent: stopping a stopped endpoint is fine."""
