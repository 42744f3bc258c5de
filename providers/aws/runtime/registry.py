"""Model registry of the aws provider: SageMaker model package groups, artifacts in the stack's bucket.

One model package group per model (``<team>-<model>``, the Pulumi program's naming;
groups of models the stack does not declare are created on first registration).
A version is a model package: its ``model.tar.gz`` in ``s3://<bucket>/models/<model>/``,
the lineage in ``CustomerMetadataProperties`` and ``PendingManualApproval`` until the
platform's rules (gate, four-eyes approvals, promotion, all in the platform database)
say otherwise. Version numbers are SageMaker's ``ModelPackageVersion``: they never
repeat, also under concurrent registrations. Aliases mirror as tags of the group.
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
from mlplat.errors import IntegrityError, NotFound
from mlplat_providers.aws.runtime.session import AwsSession
from mlplat_providers.aws.runtime.state import AwsState

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
ALIAS_TAG = "mlplat:alias:"
MAX_METADATA = 50  # SageMaker's limit of CustomerMetadataProperties entries
GROUP_MISSING = ("ResourceNotFound", "does not exist", "Could not find", "not found")


def _value(text: Any) -> str:
    return str(text)[:256]


def lineage_metadata(stack: str, tags: Mapping[str, str], run_id: str, run_tags: Mapping[str, str]) -> dict[str, str]:
    """``CustomerMetadataProperties`` of a version: run id, manifest digest, data hashes, commit, env hash."""
    out = {
        "mlplat:stack": stack,
        "mlplat:run-id": run_id,
        "mlplat:artifact-digest": tags.get("mlplat.artifact_digest", ""),
        "mlplat:author": tags.get("mlplat.author", ""),
        "mlplat:framework": tags.get("mlplat.framework", ""),
        "mlplat:commit": run_tags.get("mlplat.code.commit", ""),
        "mlplat:dirty": run_tags.get("mlplat.code.dirty", ""),
        "mlplat:env-hash": run_tags.get("mlplat.env.hash", ""),
    }
    for key in sorted(run_tags):
        if key.startswith("mlplat.data.") and key.endswith(".sha256") and len(out) < MAX_METADATA:
            out[f"mlplat:data:{key[len('mlplat.data.'):-len('.sha256')]}"[:128]] = run_tags[key]
    return {k: _value(v) for k, v in out.items() if v}


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise IntegrityError(f"not an s3:// location: {uri}", hint="the version's source was changed outside mlplat")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


class AwsModelRegistry(StateFiles, ModelRegistry):
    def __init__(self, spec, session: AwsSession | None = None, ctx=None):
        self.spec = spec
        self.aws = session or AwsSession(spec)
        self.state = AwsState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(
            create=not getattr(ctx, "reading", False))
        self._db = None

    @classmethod
    def for_stack(cls, spec) -> AwsModelRegistry:
        return cls(spec)

    # --- platform state (database, signing_key, scratch_dir: StateFiles) ----------------------

    @cached_property
    def tracker(self):
        from mlplat_providers.aws.runtime.tracking import AwsTracker

        return AwsTracker(self.spec)

    # --- names -------------------------------------------------------------------------------

    def group(self, name: str) -> str:
        from mlplat_providers.aws.plan import slug

        return slug(f"{self.spec.team}-{name}")

    def group_arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account}:model-package-group/{self.group(name)}"

    def package_arn(self, name: str, version: int) -> str:
        return f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account}:model-package/{self.group(name)}/{int(version)}"

    def _tags(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in self.spec.tags.as_dict().items()]

    def ensure_group(self, name: str) -> str:
        group = self.group(name)
        try:
            self.aws.call("sagemaker", "describe_model_package_group", ModelPackageGroupName=group,
                          not_found=GROUP_MISSING)
        except NotFound:
            try:
                self.aws.call("sagemaker", "create_model_package_group", ModelPackageGroupName=group,
                              ModelPackageGroupDescription=f"mlplat model {name} of team {self.spec.team}"[:1024],
                              Tags=self._tags(), not_found=("already exists",))
            except NotFound:  # created meanwhile by a concurrent registration
                pass
        return group

    # --- versions ----------------------------------------------------------------------------

    def store_version(self, name: str, run_id: str, local_dir: Any, *, tags: Mapping[str, str]) -> StoredVersion:
        local_dir = Path(local_dir)
        _ = self.aws.account  # missing or mismatched account settings fail before anything is uploaded
        run_tags = self.run_tags(run_id)
        group = self.ensure_group(name)
        key = f"models/{name}/{uuid.uuid4().hex[:16]}/model.tar.gz"
        archive = Path(tempfile.mkdtemp(prefix="upload-", dir=self.state.tmp)) / "model.tar.gz"
        try:
            with tarfile.open(archive, "w:gz") as tar:
                for path in sorted(local_dir.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(local_dir)), recursive=False)
            with archive.open("rb") as body:
                self.aws.call("s3", "put_object", Bucket=self.aws.bucket, Key=key, Body=body,
                              Tagging="&".join(f"{k}={v}" for k, v in (("team", self.spec.team),
                                                                       ("mlplat-model", name))),
                              what=f"uploading {name} to s3://{self.aws.bucket}")
        finally:
            shutil.rmtree(archive.parent, ignore_errors=True)
        source = f"s3://{self.aws.bucket}/{key}"
        metadata = lineage_metadata(self.spec.name, tags, run_id, run_tags)
        response = self.aws.call(
            "sagemaker", "create_model_package", what=f"registering {name} in SageMaker",
            ModelPackageGroupName=group,
            ModelPackageDescription=f"{name} from run {run_id} (artifact {tags.get('mlplat.artifact_digest', '')[:19]})",
            ModelApprovalStatus=PENDING,
            InferenceSpecification={
                "Containers": [{"Image": self.aws.serving_image(), "ModelDataUrl": source,
                                "Environment": {"MLPLAT_MODEL": name}}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": [self.spec.serving.instance_type],
            },
            CustomerMetadataProperties=metadata,
            MetadataProperties={"CommitId": _value(run_tags.get("mlplat.code.commit", ""))[:1024],
                                "GeneratedBy": f"mlplat run {run_id}"[:1024]},
        )
        version = int(response["ModelPackageArn"].rsplit("/", 1)[1])
        self.keep_files(name, version, local_dir)  # serving and promotion read them without a download
        return StoredVersion(name, version, source, run_id)

    def local_dir(self, name: str, version: int, source: str) -> Path:
        def fetch(archive: Path) -> None:
            bucket, key = split_s3(source)
            try:
                body = self.aws.call("s3", "get_object", Bucket=bucket, Key=key,
                                     not_found=("NoSuchKey", "NoSuchBucket"),
                                     what=f"downloading {name} version {version}")["Body"]
            except NotFound:
                raise IntegrityError(f"the files of {name} version {version} are missing", where=source,
                                     hint="the bucket was changed outside mlplat; register the model again") from None
            with archive.open("wb") as out:
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    out.write(chunk)

        return self.cached_files(name, version, fetch)

    def describe_version(self, name: str, version: int) -> dict[str, Any]:
        return self.aws.call("sagemaker", "describe_model_package", ModelPackageName=self.package_arn(name, version),
                             not_found=("does not exist", "Could not find", "ResourceNotFound"),
                             what=f"{name} version {version} in SageMaker")

    def approval_status(self, name: str, version: int) -> str:
        return str(self.describe_version(name, version).get("ModelApprovalStatus") or PENDING)

    def update_approval(self, name: str, version: int, status: str, description: str) -> None:
        self.aws.call("sagemaker", "update_model_package", ModelPackageArn=self.package_arn(name, version),
                      ModelApprovalStatus=status, ApprovalDescription=description[:1024],
                      what=f"setting {name} version {version} to {status} in SageMaker")

    # --- mirrors of the platform's decisions -------------------------------------------------------

    def record_approval(self, name: str, version: int, *, state: str, environment: str,
                        decisions: list[dict[str, Any]], artifact_digest: str, gate_digest: str | None) -> None:
        """Four-eyes decisions reach SageMaker: approved → ``Approved``, rejected → ``Rejected``, each with
        an ``ApprovalDescription`` binding the decision to the artifact and gate report digests."""
        if state not in ("approved", "rejected"):
            return
        who = "; ".join(f"{d['decision']} by {d['approver']}: {d['reason']}" for d in decisions if d.get("valid"))
        self.update_approval(name, version, APPROVED if state == "approved" else REJECTED,
                             f"mlplat {state} in {environment} ({who}); artifact {artifact_digest}; "
                             f"gate report {gate_digest}")

    def _production_evidence(self, name: str, version: int) -> tuple[str, str | None]:
        from mlplat.services import gate as gate_service
        from mlplat.services import registry as reg

        conn = self.database().connect()
        try:
            row = reg.version_row(conn, name, version)
            report = gate_service.latest_report(conn, name, version, self.spec.environment, row["artifact_digest"])
        finally:
            conn.close()
        return row["artifact_digest"], report["digest"] if report and report["passed"] else None

    def set_alias(self, name: str, alias: str, version: int | None) -> None:
        arn = self.group_arn(name)
        self.ensure_group(name)
        if version is None:
            self.aws.call("sagemaker", "delete_tags", ResourceArn=arn, TagKeys=[ALIAS_TAG + alias])
            return
        self.aws.call("sagemaker", "add_tags", ResourceArn=arn, Tags=[{"Key": ALIAS_TAG + alias, "Value": str(version)}])
        if alias == "production":  # the stack's own production: SageMaker's approval follows the platform's
            digest, gate = self._production_evidence(name, int(version))
            self.update_approval(name, int(version), APPROVED,
                                 f"mlplat promoted to production in {self.spec.environment}; artifact {digest}; "
                                 f"gate report {gate}")

    def get_alias(self, name: str, alias: str) -> int | None:
        try:
            tags = self.aws.call("sagemaker", "list_tags", ResourceArn=self.group_arn(name),
                                 not_found=GROUP_MISSING).get("Tags", [])
        except NotFound:
            return None
        for tag in tags:
            if tag.get("Key") == ALIAS_TAG + alias:
                try:
                    return int(tag["Value"])
                except (TypeError, ValueError):
                    return None
        return None

    # --- runs ----------------------------------------------------------------------------------

    def run_environment(self, run_id: str) -> dict[str, Any]:
        run = self.tracker.raw_run(run_id)
        uri = run.info.artifact_uri
        if uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            uri = unquote(urlparse(uri).path)
        try:
            return json.loads((Path(uri) / "mlplat" / "environment.json").read_text())
        except (OSError, ValueError):
            return {}

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.tracker.raw_run(run_id).data.tags)
