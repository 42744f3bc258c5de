"""Operations on serving API keys: create (the secret is returned once), list (never a secret), revoke, rotate.

Each change is audited in the transaction that makes it and bumps the serving revision, so running
gateways pick it up on their next routing poll (see :mod:`mlplat.services.api_keys`).
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from mlplat.api.operations import operation

Seconds = Annotated[float, Field(ge=0, le=10 * 366 * 86400)]
Description = Annotated[str, Field(min_length=1, max_length=500)]
KeyId = Annotated[str, Field(min_length=1, max_length=64)]


def _database(spec: Any, ctx: Any) -> Any:
    from mlplat.services import registry as reg

    return reg.registry_for(spec, ctx).database()


@operation("keys.create", "POST", "/keys")
def create(spec: Any, ctx: Any, *, model: str, environment: str | None = None, description: Description | None = None,
           expires_in: Seconds | None = None) -> dict[str, Any]:
    """A new gateway API key for a model in an environment; ``key`` in the answer is its only copy."""
    from mlplat.services import api_keys

    with _database(spec, ctx).transaction() as conn:
        return api_keys.create(conn, model=model, environment=environment or spec.environment, actor=ctx.user,
                               method=ctx.method, now=ctx.clock(), description=description, expires_in=expires_in)


@operation("keys.list", "GET", "/keys")
def list_keys(spec: Any, ctx: Any, *, model: str | None = None,
              environment: str | None = None) -> list[dict[str, Any]]:
    """Gateway API keys (of one model, of one environment) with their state; never their secrets."""
    from mlplat.services import api_keys

    conn = _database(spec, ctx).connect()
    try:
        return api_keys.list_keys(conn, now=ctx.clock(), model=model, environment=environment)
    finally:
        conn.close()


@operation("keys.revoke", "POST", "/keys/{key_id}/revoke")
def revoke(spec: Any, ctx: Any, *, key_id: KeyId, model: str, reason: Description | None = None) -> dict[str, Any]:
    """Revoke a model's API key; running gateways refuse it from their next routing poll."""
    from mlplat.services import api_keys

    with _database(spec, ctx).transaction() as conn:
        return api_keys.revoke(conn, key_id=key_id, model=model, actor=ctx.user, method=ctx.method, now=ctx.clock(),
                               reason=reason)


@operation("keys.rotate", "POST", "/keys/{key_id}/rotate")
def rotate(spec: Any, ctx: Any, *, key_id: KeyId, model: str, grace: Seconds = 3600.0,
           description: Description | None = None) -> dict[str, Any]:
    """A new key with an active key's scope; the old one stays valid ``grace`` seconds more (0: stops now)."""
    from mlplat.services import api_keys

    with _database(spec, ctx).transaction() as conn:
        return api_keys.rotate(conn, key_id=key_id, model=model, actor=ctx.user, method=ctx.method, now=ctx.clock(),
                               grace=grace, description=description)
