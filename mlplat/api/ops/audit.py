"""Operations on the keyed, hash-chained audit log: read it, verify it (both read-only)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from mlplat.api.operations import operation


@operation("audit.log", "GET", "/audit")
def log(spec: Any, ctx: Any, *, model: str | None = None,
        limit: Annotated[int, Field(ge=1, le=1_000_000)] = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries (of ``model`` only, if given), oldest first."""
    from mlplat.services import audit as audit_service
    from mlplat.services import registry as reg

    conn = reg.registry_for(spec, ctx).database().connect()
    try:
        return audit_service.entries(conn, model=model, limit=limit)
    finally:
        conn.close()


@operation("audit.verify", "GET", "/audit/verification")
def verify(spec: Any, ctx: Any) -> dict[str, Any]:
    """Check the chain, its signed head file and every decision row against it; ``ok`` false lists the problems."""
    from mlplat.services import ledger
    from mlplat.services import registry as reg

    conn = reg.registry_for(spec, ctx).database().connect()
    try:
        return ledger.verify(conn).to_dict()
    finally:
        conn.close()


@operation("audit.export", "GET", "/audit/archive")
def export(spec: Any, ctx: Any, *, since: Annotated[int, Field(ge=0)] = 0) -> dict[str, Any]:
    """The entries after ``since`` as a signed archive (``.tar.gz``, base64 in ``archive``) and its manifest.

    Read-only; refused when the chain does not verify or nothing follows ``since``."""
    import base64

    from mlplat.services import audit as audit_service
    from mlplat.services import registry as reg

    conn = reg.registry_for(spec, ctx).database().connect()
    try:
        data, manifest = audit_service.export_archive(conn, stack=spec.name, since=since, now=ctx.clock())
    finally:
        conn.close()
    return {"archive": base64.b64encode(data).decode("ascii"), "manifest": manifest}
