"""Model registry of the azure provider: the workspace's model registry, files in its storage account.

One Azure ML model per platform model (``<team>-<model>``); each registration uploads the model's files
as one archive to the workspace's storage account (container ``mlplat``, blob
``models/<model>/<random>/model.tar.gz``) and creates the next version with ``models.create_or_update``
(version numbers never repeat: the next one is the workspace's ``nextVersion``, and a version is
immutable once created). The version carries the stack's cost tags plus ``mlplat-managed: "true"`` as
tags, and its lineage (run id, artifact digest, data hashes, commit, environment hash) as immutable
``properties``.

Approvals, gates and promotions live in the platform database; an approval or rejection is mirrored
as the version's ``mlplat-approval`` tag, and the platform's aliases (``staging``, ``production``) as
``mlplat-alias-<alias>`` tags (moved: removed from the version holding them, then set on the new one)
and as the version's ``stage`` (``Staging``/``Production``; ``Development`` otherwise).
"""
from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from mlplat.cloud_state import StateFiles
from mlplat.contracts import ModelRegistry, SharedVersion, StoredVersion
from mlplat.errors import Conflict, IntegrityError, NotFound, StackError
from mlplat_providers.azure.naming import PLATFORM_CONTAINER
from mlplat_providers.azure.runtime.session import AzureSession
from mlplat_providers.azure.runtime.state import AzureState

APPROVAL_TAG = "mlplat-approval"
ALIAS_TAG = "mlplat-alias-"
MODEL_TAG = "mlplat-model"
CONTAINER = PLATFORM_CONTAINER  # the program creates it (naming)
STAGES = {"staging": "Staging", "production": "Production"}
A_MODELS = "Microsoft.MachineLearningServices/workspaces/models"
A_REGISTRIES = "Microsoft.MachineLearningServices/registries"
# A workspace asset as a registry refers to it when the asset is shared (azure-ai-ml's ASSET_ID_FORMAT).
# https://learn.microsoft.com/azure/machine-learning/how-to-share-models-pipelines-across-workspaces-with-registries
WORKSPACE_ASSET_ID = "azureml://locations/{location}/workspaces/{guid}/models/{name}/versions/{version}"


def lineage(stack: str, tags: Mapping[str, str], run_id: str, run_tags: Mapping[str, str]) -> dict[str, str]:
    """The version's lineage as the platform records it: run, artifact digest, author, data, code, env."""
    out = {
        "mlplat.stack": stack, "mlplat.run_id": run_id, "mlplat.artifact_digest": tags.get("mlplat.artifact_digest", ""),
        "mlplat.author": tags.get("mlplat.author", ""), "mlplat.framework": tags.get("mlplat.framework", ""),
        "mlplat.commit": run_tags.get("mlplat.code.commit", ""), "mlplat.dirty": run_tags.get("mlplat.code.dirty", ""),
        "mlplat.env_hash": run_tags.get("mlplat.env.hash", ""),
    }
    for key in sorted(run_tags):
        if key.startswith("mlplat.data.") and key.endswith(".sha256"):
            out[f"mlplat.data.{key[len('mlplat.data.'):-len('.sha256')]}"] = run_tags[key]
    return {k: str(v) for k, v in out.items() if v}


class AzureModelRegistry(StateFiles, ModelRegistry):
    def __init__(self, spec: Any, session: AzureSession | None = None, ctx: Any = None):
        self.spec = spec
        self.azure = session or AzureSession(spec)
        self.state = AzureState(spec.state_dir, getattr(ctx, "database_url", None)).ensure(
            create=not getattr(ctx, "reading", False))
        self._db: Any = None

    # --- platform state (database, signing_key, scratch_dir: StateFiles) ----------------------

    @cached_property
    def tracker(self) -> Any:
        from mlplat_providers.azure.runtime.tracking import AzureTracker

        return AzureTracker(self.spec)

    # --- names -------------------------------------------------------------------------------

    def model_name(self, name: str) -> str:
        """The workspace model of ``name``: ``<team>-<model>`` (letters, digits, ``-``, ``_``, ``.``)."""
        from mlplat_providers.azure.naming import slug

        model = slug(f"{self.spec.team}-{name}", 255)
        return model if model[0].isalnum() else f"m{model}"

    def tags(self, name: str) -> dict[str, str]:
        return {**self.azure.tags, MODEL_TAG: name}

    @property
    def models(self) -> Any:
        return self.azure.ml().models

    # --- versions ----------------------------------------------------------------------------

    def _upload_files(self, name: str, local_dir: Path) -> str:
        key = f"models/{name}/{uuid.uuid4().hex[:16]}/model.tar.gz"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(local_dir.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(local_dir)), recursive=False)
        blob = self.azure.blob_service().get_blob_client(CONTAINER, key)
        self.azure.call(blob.upload_blob, buffer.getvalue(), overwrite=False,
                        metadata={"mlplat_model": name, "mlplat_managed": "true"},
                        action="Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
                        what=f"uploading {name} to the workspace's storage")
        return str(blob.url)

    def _next_version(self, model: str) -> int:
        try:
            versions = self.azure.call(lambda: list(self.models.list(name=model)), not_found=True,
                                       action=f"{A_MODELS}/versions/read", what=f"versions of {model}")
        except NotFound:
            return 1
        numbers = [int(v.version) for v in versions if str(v.version).isdigit()]
        return max(numbers, default=0) + 1

    def store_version(self, name: str, run_id: str, local_dir: Any, *, tags: Mapping[str, str]) -> StoredVersion:
        from azure.ai.ml.entities import Model

        local_dir = Path(local_dir)
        run_tags = self.run_tags(run_id)
        uri = self._upload_files(name, local_dir)
        model = self.model_name(name)
        properties = lineage(self.spec.name, tags, run_id, run_tags)
        for _attempt in range(5):  # a concurrent registration may take the number: take the next one
            version = self._next_version(model)
            entity = Model(name=model, version=str(version), path=uri, type="custom_model", tags=self.tags(name),
                           properties={**properties, "mlplat.uri": uri}, stage="Development",
                           description=f"mlplat model {name} of team {self.spec.team}")
            created = self.azure.call(self.models.create_or_update, entity, action=f"{A_MODELS}/versions/write",
                                      what=f"registering {name} in workspace {self.azure.workspace}")
            if (created.properties or {}).get("mlplat.uri") == uri:
                break
        else:  # pragma: no cover - five concurrent registrations in a row
            raise IntegrityError(f"could not number a version of {name}: other registrations kept taking it")
        self.keep_files(name, version, local_dir)  # serving and promotion read them without a download
        return StoredVersion(name, version, uri, run_id)

    def local_dir(self, name: str, version: int, source: str) -> Path:
        def fetch(archive: Path) -> None:
            from azure.storage.blob import BlobClient

            key = source.split(f"/{CONTAINER}/", 1)[-1]
            blob: BlobClient = self.azure.blob_service().get_blob_client(CONTAINER, key)
            try:
                data = self.azure.call(lambda: blob.download_blob().readall(), not_found=True,
                                       action="Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
                                       what=f"downloading {name} version {version}")
            except NotFound:
                raise IntegrityError(f"the files of {name} version {version} are missing", where=source,
                                     hint="the storage account was changed outside mlplat; register the model "
                                          "again") from None
            archive.write_bytes(data)

        return self.cached_files(name, version, fetch)

    def describe_version(self, name: str, version: int | str) -> Any:
        return self.azure.call(self.models.get, self.model_name(name), str(version), not_found=True,
                               action=f"{A_MODELS}/versions/read", what=f"{name} version {version} in Azure ML")

    def approval_status(self, name: str, version: int) -> str:
        """The approval the platform mirrored on the version (``pending`` until one is recorded)."""
        return str((self.describe_version(name, version).tags or {}).get(APPROVAL_TAG) or "pending")

    def _update(self, name: str, version: int, *, tags: dict[str, str] | None = None,
                stage: str | None = None) -> None:
        current = self.describe_version(name, version)
        if (current.tags or {}).get("mlplat-managed") != "true":
            raise IntegrityError(f"{self.model_name(name)} version {version} is not managed by mlplat",
                                 hint="the platform changes only what it created")
        if tags is not None:
            current.tags = tags
        if stage is not None:
            current.stage = stage
        self.azure.call(self.models.create_or_update, current, action=f"{A_MODELS}/versions/write",
                        what=f"tagging {name} version {version} in Azure ML")

    # --- mirrors of the platform's decisions ---------------------------------------------------

    def record_approval(self, name: str, version: int, *, state: str, environment: str,
                        decisions: list[dict[str, Any]], artifact_digest: str, gate_digest: str | None) -> None:
        """Approved or rejected (terminal, four eyes, in the ledger) → the version's ``mlplat-approval`` tag."""
        if state not in ("approved", "rejected"):
            return
        tags = dict(self.describe_version(name, version).tags or {})
        tags.update({APPROVAL_TAG: state, "mlplat-approval-env": environment})
        self._update(name, int(version), tags=tags)

    def set_alias(self, name: str, alias: str, version: int | None) -> None:
        holder = self.get_alias(name, alias)
        if holder is not None and holder != version:
            tags = {k: v for k, v in (self.describe_version(name, holder).tags or {}).items()
                    if k != ALIAS_TAG + alias}
            self._update(name, holder, tags=tags, stage="Development" if alias in STAGES else None)
        if version is not None and holder != version:
            tags = {**(self.describe_version(name, version).tags or {}), ALIAS_TAG + alias: "true"}
            self._update(name, int(version), tags=tags, stage=STAGES.get(alias))

    def get_alias(self, name: str, alias: str) -> int | None:
        try:
            versions = self.azure.call(lambda: list(self.models.list(name=self.model_name(name))),
                                       not_found=True, action=f"{A_MODELS}/versions/read",
                                       what=f"alias {alias} of {name}")
        except NotFound:
            return None
        numbers = [int(v.version) for v in versions if str(v.version).isdigit() and
                   (v.tags or {}).get(ALIAS_TAG + alias) == "true"]
        return max(numbers) if numbers else None

    # --- sharing across teams ------------------------------------------------------------------

    def share(self, name: str, version: int, *, registry: str | None,
              evidence: Mapping[str, Any]) -> SharedVersion:
        """Copy the version into the Azure ML registry shared across teams (``registry``, else
        ``mlplat:provider.registry``; in the stack's resource group, where the program creates it) as
        ``<team>-<model>`` of the same version number: the registry copies the workspace asset it names; the
        copy keeps the lineage properties and says where it came from. Refused: no registry named, a registry
        that does not exist, a version the platform did not create or whose artifact is not the sealed one,
        and a registry version of that number holding another artifact (registry versions are immutable)."""
        target = registry or getattr(self.spec.provider, "registry", None)
        if not target:
            raise StackError(f"stack '{self.spec.name}' names no registry to share to", where=self.spec.path or None,
                             hint="set mlplat:provider.registry (createRegistry: true makes `mlplat up` create it), "
                                  "or name one with --registry")
        current = self.describe_version(name, version)
        if (current.tags or {}).get("mlplat-managed") != "true":
            raise IntegrityError(f"{self.model_name(name)} version {version} is not managed by mlplat",
                                 hint="the platform shares only what it registered")
        digest = str(evidence.get("artifact_digest") or "")
        properties = dict(current.properties or {})
        if digest and properties.get("mlplat.artifact_digest") != digest:
            raise IntegrityError(f"{self.model_name(name)} version {version} in Azure ML does not carry the sealed "
                                 f"artifact digest {digest}", hint="the version was changed outside mlplat; "
                                                                   "register the model again")
        rest, group = self.azure.ml_services(), self.azure.resource_group
        try:
            self.azure.call(rest.registries.get, group, target, not_found=True, action=f"{A_REGISTRIES}/read",
                            what=f"registry {target}")
        except NotFound:
            raise NotFound(f"Azure ML registry '{target}' does not exist in resource group {group}",
                           hint="set mlplat:provider.createRegistry: true and run `mlplat up`, or name an existing "
                                "registry in mlplat:provider.registry") from None
        shared_name, shared_version = self.model_name(name), str(int(version))
        workspace = self.azure.call(rest.workspaces.get, group, self.azure.workspace,
                                    action="Microsoft.MachineLearningServices/workspaces/read",
                                    what=f"workspace {self.azure.workspace}")
        source = WORKSPACE_ASSET_ID.format(location=workspace.get("location"),
                                           guid=(workspace.get("properties") or {}).get("workspaceId"),
                                           name=shared_name, version=shared_version)
        try:
            found = self.azure.call(rest.registry_model_versions.get, group, target, shared_name, shared_version,
                                    not_found=True, action=f"{A_REGISTRIES}/models/versions/read",
                                    what=f"{shared_name} version {shared_version} in registry {target}")
        except NotFound:
            found = None
        if found is not None:
            held = (found.get("properties") or {}).get("properties") or {}
            if held.get("mlplat.artifact_digest") != properties.get("mlplat.artifact_digest"):
                raise Conflict(f"registry {target} already holds {shared_name} version {shared_version} with another "
                               "artifact", hint="registry versions are immutable: share a newer version")
            return SharedVersion(name, int(version), target, shared_name, shared_version, str(found.get("id")))
        body = {"properties": {
            "modelUri": source, "modelType": "custom_model", "stage": "Production",
            "description": f"mlplat model {name} of team {self.spec.team}, shared from {self.azure.workspace}",
            "tags": {**self.tags(name), "mlplat-source-workspace": self.azure.workspace},
            "properties": {**properties, "mlplat.source": source, "mlplat.source_version": shared_version}}}
        created = self.azure.run(rest.registry_model_versions.begin_create_or_update, group, target, shared_name,
                                 shared_version, body, action=f"{A_REGISTRIES}/models/versions/write",
                                 what=f"sharing {name} version {version} to registry {target}")
        return SharedVersion(name, int(version), target, shared_name, shared_version, str(created.get("id")))

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
