"""Roles and what each may do (filled in below)."""
from __future__ import annotations

from typing import Any


def authorize(spec: Any, ctx: Any, principal: Any, op: Any, params: Any) -> None:
    """Raise ``Forbidden`` unless ``principal`` may run ``op`` with ``params`` on ``spec``."""
    return None
