"""Model registry of the gcp provider: Vertex AI Model Registry, artifacts in the stack's bucket.

One Vertex model per platform model (model id ``<team>-<model>``); each registration uploads the
model's files to ``gs://<bucket>/models/<model>/<random>/model.tar.gz`` and calls ``models.upload``
with ``parentModel`` once the model exists, so Vertex numbers the versions (they never repeat). The
version carries the stack's cost tags as labels plus ``mlplat-managed: "true"``, and its lineage (run
id, artifact digest, data hashes, commit, environment hash) as JSON in ``versionDescription`` (labels
cannot hold a 64-character digest).

Vertex has no approval status: approvals, gates and promotions live in the platform database; an
approval or rejection is mirrored as the version's ``mlplat-approval`` label, and the platform's
aliases (``staging``, ``production``) as Vertex version aliases (moved with ``mergeVersionAliases``:
removed from the version holding them, then added to the new one).
"""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from mlplat.cloud_state import StateFiles
from mlplat.contracts import ModelRegistry, StoredVersion
from mlplat.errors import Conflict, IntegrityError, NotFound
from mlplat_providers.gcp.runtime.session import GcpSession
from mlplat_providers.gcp.runtime.state import GcpState

APPROVAL_LABEL = "mlplat-approval"
MODEL_LABEL = "mlplat-model"


def lineage(stack: str, tags: Mapping[str, str], run_id: str, run_tags: Mapping[str, str]) -> dict[str, str]:
    """The version's lineage as the platform records it: run, artifact digest, author, data, code, env."""
    out = {
        "stack": stack, "run_id": run_id, "artifact_digest": tags.get("mlplat.artifact_digest", ""),
        "author": tags.get("mlplat.author", ""), "framework": tags.get("mlplat.framework", ""),
        "commit": run_tags.get("mlplat.code.commit", ""), "dirty": run_tags.get("mlplat.code.dirty", ""),
        "env_hash": run_tags.get("mlplat.env.hash", ""),
    }
    for key in sorted(run_tags):
        if key.startswith("mlplat.data.") and key.endswith(".sha256"):
            out[f"data:{key[len('mlplat.data.'):-len('.sha256')]}"] = run_tags[key]
    return {k: str(v) for k, v in out.items() if v}


def split_gs(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise IntegrityError(f"not a gs:// location: {uri}", hint="the version's source was changed outside mlplat")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


class GcpModelRegistry(StateFiles, ModelRegistry):
    def __init__(self, spec: Any, session: GcpSession | None = None, ctx: Any = None):
        self.spec = spec
        self.gcp = session or GcpSession(spec)
        self.state = GcpState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(
            create=not getattr(ctx, "reading", False))
        self._db: Any = None

    # --- platform state (database, signing_key, scratch_dir: StateFiles) ----------------------

    @cached_property
    def tracker(self) -> Any:
        from mlplat_providers.gcp.runtime.tracking import GcpTracker

        return GcpTracker(self.spec)

    # --- names -------------------------------------------------------------------------------

    def model_id(self, name: str) -> str:
        from mlplat_providers.gcp.plan import slug

        model_id = slug(f"{self.spec.team}-{name}", 63)
        return model_id if model_id[0].isalpha() else f"m-{model_id}"[:63]

    def model_name(self, name: str) -> str:
        """``projects/<p>/locations/<r>/models/<team>-<model>``: the Vertex model of ``name``."""
        return f"{self.gcp.location}/models/{self.model_id(name)}"

    def version_name(self, name: str, version: int | str) -> str:
        return f"{self.model_name(name)}@{version}"

    def labels(self, name: str) -> dict[str, str]:
        from mlplat_providers.gcp.labels import normalise_value

        return {**self.gcp.labels, MODEL_LABEL: normalise_value(name, key=MODEL_LABEL)}

    @property
    def models(self) -> Any:
        return self.gcp.vertex("model")

    # --- versions ----------------------------------------------------------------------------

    def _upload_files(self, name: str, local_dir: Path) -> str:
        bucket = self.gcp.plan.bucket
        prefix = f"models/{name}/{uuid.uuid4().hex[:16]}"
        archive = Path(tempfile.mkdtemp(prefix="upload-", dir=self.state.tmp)) / "model.tar.gz"
        try:
            with tarfile.open(archive, "w:gz") as tar:
                for path in sorted(local_dir.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(local_dir)), recursive=False)
            blob = self.gcp.storage().bucket(bucket).blob(f"{prefix}/model.tar.gz")
            self.gcp.call(blob.upload_from_filename, str(archive), method="storage.objects.create",
                          what=f"uploading {name} to gs://{bucket}")
        finally:
            shutil.rmtree(archive.parent, ignore_errors=True)
        return f"gs://{bucket}/{prefix}"

    def store_version(self, name: str, run_id: str, local_dir: Any, *, tags: Mapping[str, str]) -> StoredVersion:
        from google.cloud import aiplatform_v1 as v1

        local_dir = Path(local_dir)
        run_tags = self.run_tags(run_id)
        artifact_uri = self._upload_files(name, local_dir)
        model = v1.Model(
            display_name=f"{self.spec.team}-{name}"[:128],
            description=self.gcp.plan.describe(f"mlplat model {name} of team {self.spec.team}"),
            version_description=json.dumps(lineage(self.spec.name, tags, run_id, run_tags), sort_keys=True),
            artifact_uri=artifact_uri,
            container_spec=v1.ModelContainerSpec(image_uri=self.gcp.serving_image(),
                                                 env=[v1.EnvVar(name="MLPLAT_MODEL", value=name)],
                                                 predict_route="/invocations", health_route="/ping"),
            labels=self.labels(name),
        )
        request = v1.UploadModelRequest(parent=self.gcp.location, model=model)
        try:
            self.gcp.call(self.models.get_model, name=self.model_name(name), not_found=True,
                          what=f"{name} in Vertex AI")
            request.parent_model = self.model_name(name)
        except NotFound:
            request.model_id = self.model_id(name)
        try:
            operation = self.gcp.call(self.models.upload_model, request=request, method="upload_model", exists=True,
                                      what=f"registering {name} in Vertex AI")
        except Conflict:  # a concurrent first registration created the model meanwhile: add a version to it
            request.model_id = ""
            request.parent_model = self.model_name(name)
            operation = self.gcp.call(self.models.upload_model, request=request, method="upload_model",
                                      what=f"registering {name} in Vertex AI")
        result = self.gcp.wait(operation, what=f"registering {name} in Vertex AI")
        version = int(result.model_version_id)
        self.keep_files(name, version, local_dir)  # serving and promotion read them without a download
        return StoredVersion(name, version, artifact_uri, run_id)

    def local_dir(self, name: str, version: int, source: str) -> Path:
        def fetch(archive: Path) -> None:
            bucket, prefix = split_gs(source)
            blob = self.gcp.storage().bucket(bucket).blob(f"{prefix}/model.tar.gz")
            try:
                self.gcp.call(blob.download_to_filename, str(archive), method="storage.objects.get", not_found=True,
                              what=f"downloading {name} version {version}")
            except NotFound:
                raise IntegrityError(f"the files of {name} version {version} are missing", where=source,
                                     hint="the bucket was changed outside mlplat; register the model again") from None

        return self.cached_files(name, version, fetch)

    def describe_version(self, name: str, version: int) -> Any:
        return self.gcp.call(self.models.get_model, name=self.version_name(name, int(version)), not_found=True,
                             method="get_model", what=f"{name} version {version} in Vertex AI")

    def approval_status(self, name: str, version: int) -> str:
        """The approval the platform mirrored on the version (``pending`` until one is recorded)."""
        return str(self.describe_version(name, version).labels.get(APPROVAL_LABEL) or "pending")

    def _set_labels(self, name: str, version: int, **changes: str) -> None:
        from google.cloud import aiplatform_v1 as v1

        current = self.describe_version(name, version)
        labels = {**dict(current.labels), **changes}
        self.gcp.call(self.models.update_model, model=v1.Model(name=self.version_name(name, version), labels=labels),
                      update_mask={"paths": ["labels"]}, method="update_model",
                      what=f"labelling {name} version {version} in Vertex AI")

    # --- mirrors of the platform's decisions ---------------------------------------------------

    def record_approval(self, name: str, version: int, *, state: str, environment: str,
                        decisions: list[dict[str, Any]], artifact_digest: str, gate_digest: str | None) -> None:
        """Approved or rejected (terminal, four eyes, in the ledger) → the version's ``mlplat-approval`` label."""
        if state not in ("approved", "rejected"):
            return
        from mlplat_providers.gcp.labels import normalise_value

        self._set_labels(name, int(version), **{APPROVAL_LABEL: state,
                                                "mlplat-approval-env": normalise_value(environment, key="env")})

    def set_alias(self, name: str, alias: str, version: int | None) -> None:
        holder = self.get_alias(name, alias)
        if holder is not None and holder != version:
            self.gcp.call(self.models.merge_version_aliases, name=self.version_name(name, holder),
                          version_aliases=[f"-{alias}"], method="merge_version_aliases",
                          what=f"moving alias {alias} of {name} off version {holder}")
        if version is not None and holder != version:
            self.gcp.call(self.models.merge_version_aliases, name=self.version_name(name, int(version)),
                          version_aliases=[alias], method="merge_version_aliases",
                          what=f"setting alias {alias} of {name} on version {version}")

    def get_alias(self, name: str, alias: str) -> int | None:
        try:
            model = self.gcp.call(self.models.get_model, name=self.version_name(name, alias), not_found=True,
                                  method="get_model", what=f"alias {alias} of {name}")
        except NotFound:
            return None
        try:
            return int(model.version_id)
        except (TypeError, ValueError):
            return None

    # --- runs ----------------------------------------------------------------------------------

    def run_environment(self, run_id: str) -> dict[str, Any]:
        run = self.tracker.raw_run(run_id)
        uri = run.info.artifact_uri
        if uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            uri = unquote(urlparse(uri).path)
        try:
            return dict(json.loads((Path(uri) / "mlplat" / "environment.json").read_text()))
        except (OSError, ValueError):
            return {}

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.tracker.raw_run(run_id).data.tags)
