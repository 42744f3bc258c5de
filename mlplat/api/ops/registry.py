"""Operations that register model versions and hand out their sealed records.

``run.log_model`` saves the model and stores its files in the registry where the user trains;
these run where the ledger is, which holds the key that seals manifests.
"""
from __future__ import annotations

from typing import Any

from mlplat.api.operations import operation


@operation("models.check_registration", "GET", "/models/{name}/registration")
def check_registration(spec: Any, ctx: Any, *, name: str, run_id: str) -> dict[str, Any]:
    """Whether run ``run_id`` may register a version of ``name``: asked before any file is stored."""
    from mlplat.services import registry as reg

    return reg.check_registration(spec, ctx, name, run_id)


@operation("models.register", "POST", "/models/{name}/versions")
def register_version(spec: Any, ctx: Any, *, name: str, version: int, run_id: str, source: str, artifact_digest: str,
                     framework: str, lineage: dict[str, Any], signature: dict[str, Any] | None = None,
                     holdout: dict[str, str] | None = None) -> dict[str, Any]:
    """Record a version whose files are in the registry: manifest sealed here, author = the caller, audited."""
    from mlplat.services import registry as reg

    return reg.register_version(spec, ctx, name=name, version=version, run_id=run_id, source=source,
                                artifact_digest=artifact_digest, framework=framework, lineage_doc=lineage,
                                signature=signature, holdout=holdout)


@operation("models.sealed_version", "GET", "/models/{name}/versions/{version}/sealed")
def sealed_version(spec: Any, ctx: Any, *, name: str, version: int) -> dict[str, Any]:
    """A version's record, its manifest checked against its seal here; callers check the files against it."""
    from mlplat.services import registry as reg

    return reg.sealed_version(spec, ctx, name, version)
