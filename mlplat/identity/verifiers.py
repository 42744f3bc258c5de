"""Verifying callers' credentials on the server (filled in below per access mode)."""
from __future__ import annotations

from typing import Any

from mlplat.identity import Authenticator


def authenticator_for(spec: Any, **options: Any) -> Authenticator | None:
    """The authenticator of ``spec``'s access mode; None where callers are not authenticated."""
    access = getattr(spec, "access", None)
    if access is None or not access.authenticated:
        return None
    raise NotImplementedError(access.mode)
