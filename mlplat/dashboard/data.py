"""Everything the dashboard shows, from the stack's control plane: the ledger in this process, or
``mlplat server`` when the stack names one (the ``dashboard.snapshot`` operation)."""
from __future__ import annotations

from typing import Any


def snapshot(spec: Any, ctx: Any) -> dict[str, Any]:
    from mlplat.api.plane import plane_for

    plane = plane_for(spec, ctx)
    try:
        doc: dict[str, Any] = plane.call("dashboard.snapshot")
    finally:
        plane.close()
    return doc
