"""Delivery on the aws provider: the build context in the stack's bucket, staging tests on 127.0.0.1.

``package`` writes the same build context as every provider (``mlplat.services.packaging``:
Containerfile, the sealed model files, pinned requirements, the serving entrypoint) and
uploads it to ``s3://<bucket>/packages/<model>/`` once per digest, where the team's image
build (CodeBuild / the SageMaker pipeline) picks it up. The promotion's staging endpoint
runs that context's entrypoint (``python -m mlplat.serving.model_server``) as a loopback
process, so the integration tests exercise the exact files SageMaker will serve without
needing a reachable staging endpoint.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlplat.contracts import DeliveryPipeline, Package
from mlplat.errors import NotFound
from mlplat.services import packaging
from mlplat.serving.staging import LocalStaging, ServerProcesses
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState


class AwsDeliveryPipeline(LocalStaging, DeliveryPipeline):
    def __init__(self, spec, ctx, session: AwsSession | None = None):
        self.spec = spec
        self.ctx = ctx
        self.aws = session or AwsSession(spec)
        self.state = AwsState(spec.state_dir).ensure()
        self.procs = ServerProcesses()

    def package(self, name: str, version: int, model_dir, requirements: Sequence[str], *,
                artifact_digest: str) -> Package:
        dest = self.state.root / "packages" / name / str(version)
        digest = packaging.write_context(dest, name=name, version=version, model_dir=Path(model_dir),
                                         requirements_pinned=requirements, artifact_digest=artifact_digest)
        key = f"packages/{name}/{version}-{digest[:16]}.tar.gz"
        try:
            self.aws.call("s3", "head_object", Bucket=self.aws.bucket, Key=key, not_found=("404", "Not Found", "NoSuchKey"))
        except NotFound:
            work = Path(tempfile.mkdtemp(prefix="context-", dir=self.state.tmp))
            try:
                archive = work / "context.tar.gz"
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(dest, arcname=".")
                with archive.open("rb") as body:
                    self.aws.call("s3", "put_object", Bucket=self.aws.bucket, Key=key, Body=body,
                                  Metadata={"mlplat-digest": digest, "mlplat-artifact-digest": artifact_digest},
                                  what=f"uploading the build context of {name} version {version}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return Package(str(dest), digest, image=f"s3://{self.aws.bucket}/{key}", engine="s3")
