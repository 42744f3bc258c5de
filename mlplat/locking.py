"""Per-stack operation lock.

An OS file lock (``flock``): the kernel releases it when the holder dies, so a
crashed ``mlplat up`` never leaves a stale lock that needs a manual cancel.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlplat.errors import Conflict


@contextmanager
def stack_lock(path: Path, *, operation: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the lock at ``path`` for the block; wait up to ``wait_seconds``, then raise ``Conflict``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise Conflict(
                        f"another mlplat operation holds the stack lock ({holder})",
                        where=str(path),
                        hint="wait for it to finish, or pass --lock-wait SECONDS to queue behind it",
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "operation": operation, "since": time.time()}).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not info:
        return "holder unknown"
    since = time.strftime('%H:%M:%S', time.localtime(info.get('since', 0)))
    return f"pid {info.get('pid')} running '{info.get('operation')}' since {since}"
