"""Delivery on the azure provider: the build context in the workspace's storage, staging tests on 127.0.0.1.

``package`` writes the same build context as every provider (``mlplat.services.packaging``:
Containerfile, the sealed model files, pinned requirements, the serving entrypoint) and uploads it to
the workspace's storage account (container ``mlplat``, ``packages/<model>/<version>-<digest>.tar.gz``)
once per digest, where the team's image build (``az acr build`` into the workspace's container
registry) picks it up; the package names the image that build produces,
``<registry>.azurecr.io/<model>:<digest>``. The promotion's staging endpoint runs that context's
entrypoint (``python -m mlplat.serving.model_server``) as a loopback process, so the integration tests
exercise the exact files Azure will serve without needing a reachable staging endpoint.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlplat.contracts import DeliveryPipeline, Package
from mlplat.errors import NotFound
from mlplat.services import packaging
from mlplat.serving.staging import LocalStaging, ServerProcesses
from mlplat_providers.azure.runtime.registry import CONTAINER
from mlplat_providers.azure.runtime.session import AzureSession
from mlplat_providers.azure.runtime.state import AzureState

BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
BLOB_WRITE = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write"


def image_reference(registry: str, model: str, digest: str) -> str:
    """The container registry image the build context becomes (tag: the context's digest)."""
    from mlplat_providers.azure.naming import slug

    return f"{registry}.azurecr.io/{slug(model, 128) or 'model'}:{digest[:16]}"


class AzureDeliveryPipeline(LocalStaging, DeliveryPipeline):
    def __init__(self, spec: Any, ctx: Any, session: AzureSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.azure = session or AzureSession(spec)
        self.state = AzureState(spec.state_dir).ensure()
        self.procs = ServerProcesses()

    def registry_name(self) -> str:
        """The workspace's container registry (``properties.containerRegistry``), else one named after it."""
        workspace = self.azure.call(self.azure.ml().workspaces.get, self.azure.workspace,
                                    action="Microsoft.MachineLearningServices/workspaces/read",
                                    what=f"workspace {self.azure.workspace}")
        found = str(getattr(workspace, "container_registry", "") or "").rstrip("/").rsplit("/", 1)[-1]
        return found or "".join(c for c in f"cr{self.azure.workspace}".lower() if c.isalnum())[:50]

    def package(self, name: str, version: int, model_dir: Any, requirements: Sequence[str], *,
                artifact_digest: str) -> Package:
        dest = self.state.root / "packages" / name / str(version)
        digest = packaging.write_context(dest, name=name, version=version, model_dir=Path(model_dir),
                                         requirements_pinned=requirements, artifact_digest=artifact_digest)
        key = f"packages/{name}/{version}-{digest[:16]}.tar.gz"
        blob = self.azure.blob_service().get_blob_client(CONTAINER, key)
        try:
            self.azure.call(blob.get_blob_properties, not_found=True, action=BLOB_READ, what=f"{CONTAINER}/{key}")
        except NotFound:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                tar.add(dest, arcname=".")
            self.azure.call(blob.upload_blob, buffer.getvalue(), overwrite=True,
                            metadata={"mlplat_digest": digest, "mlplat_artifact_digest": artifact_digest},
                            action=BLOB_WRITE, what=f"uploading the build context of {name} version {version}")
        return Package(str(dest), digest, image=image_reference(self.registry_name(), name, digest), engine="blob")
