"""Delivery on the gcp provider: the build context in the stack's bucket, staging tests on 127.0.0.1.

``package`` writes the same build context as every provider (``mlplat.services.packaging``:
Containerfile, the sealed model files, pinned requirements, the serving entrypoint) and uploads it
to ``gs://<bucket>/packages/<model>/<version>-<digest>.tar.gz`` once per digest, where the team's image
build (Cloud Build, pushing to the stack's Artifact Registry repository) picks it up; the package
names the image that build produces, ``<region>-docker.pkg.dev/<project>/<repository>/<model>:<digest>``.
The promotion's staging endpoint runs that context's entrypoint (``python -m
mlplat.serving.model_server``) as a loopback process, so the integration tests exercise the exact
files Vertex AI will serve without needing a reachable staging endpoint.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlplat.contracts import DeliveryPipeline, Package
from mlplat.errors import NotFound
from mlplat.services import packaging
from mlplat.serving.staging import LocalStaging, ServerProcesses
from mlplat_providers.gcp.runtime.session import GcpSession
from mlplat_providers.gcp.runtime.state import GcpState


def image_reference(region: str, project: str, repository: str, model: str, digest: str) -> str:
    """The Artifact Registry image the build context becomes (tag: the context's digest)."""
    from mlplat_providers.gcp.plan import slug

    return f"{region}-docker.pkg.dev/{project}/{repository}/{slug(model, 128)}:{digest[:16]}"


class GcpDeliveryPipeline(LocalStaging, DeliveryPipeline):
    def __init__(self, spec: Any, ctx: Any, session: GcpSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.gcp = session or GcpSession(spec)
        self.state = GcpState(spec.state_dir).ensure()
        self.procs = ServerProcesses()

    def package(self, name: str, version: int, model_dir: Any, requirements: Sequence[str], *,
                artifact_digest: str) -> Package:
        dest = self.state.root / "packages" / name / str(version)
        digest = packaging.write_context(dest, name=name, version=version, model_dir=Path(model_dir),
                                         requirements_pinned=requirements, artifact_digest=artifact_digest)
        bucket = self.gcp.plan.bucket
        key = f"packages/{name}/{version}-{digest[:16]}.tar.gz"
        blob = self.gcp.storage().bucket(bucket).blob(key)
        try:
            self.gcp.call(blob.reload, method="storage.objects.get", not_found=True, what=f"gs://{bucket}/{key}")
        except NotFound:
            work = Path(tempfile.mkdtemp(prefix="context-", dir=self.state.tmp))
            try:
                archive = work / "context.tar.gz"
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(dest, arcname=".")
                blob.metadata = {"mlplat-digest": digest, "mlplat-artifact-digest": artifact_digest}
                self.gcp.call(blob.upload_from_filename, str(archive), method="storage.objects.create",
                              what=f"uploading the build context of {name} version {version}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        image = image_reference(self.gcp.region, self.gcp.project, self.gcp.plan.docker_repository, name, digest)
        return Package(str(dest), digest, image=image, engine="gcs")
