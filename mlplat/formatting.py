"""How the CLI and the dashboard show values to people (one definition each)."""
from __future__ import annotations

import time


def when(ts: float | None) -> str:
    """A Unix timestamp as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for none (or 0)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
