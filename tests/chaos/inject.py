"""Run the `mlplat` CLI with deterministic kill points (test-only; product code is not changed).

    python -m tests.chaos.inject ARGS...        # as `mlplat ARGS...`

The wrapper patches a few boundaries every multi-step operation crosses, then calls the CLI's
own ``main``. A *point* is ``(kind, label)``:

* ``begin``     a ledger transaction holds the write lock, before its body runs
* ``commit``    the body ran, ``COMMIT`` not yet sent (a kill here must leave nothing changed)
* ``anchored``  ``COMMIT`` done, before the connection's after-commit callbacks (the audit head file)
* ``committed`` the transaction and its callbacks are done
* ``replace``   right after an ``os.replace`` (file-level atomic steps: the MLflow store, keys, models)
* ``spawn``     right after a child process started (staging model servers)

The label names the code that opened the transaction (``module.function``), followed by the
rollout decisions taken inside it (``/advance``, ``/rollback``, ...), so the canary controller's
steps are told apart from its bookkeeping.

Environment:
  MLPLAT_CHAOS_KILL=KIND:LABEL:N   SIGKILL this process at the N-th (1-based) point of that kind whose
                                   label equals LABEL (``~LABEL``: contains LABEL)
  MLPLAT_CHAOS_CENSUS=PATH         at exit, write every point passed, in order, as JSON
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

KILL_ENV = "MLPLAT_CHAOS_KILL"
CENSUS_ENV = "MLPLAT_CHAOS_CENSUS"

_lock = threading.Lock()
_seen: list[tuple[str, str]] = []
_counts: dict[tuple[str, str], int] = {}
_local = threading.local()


def _target() -> tuple[str, str, int] | None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return None
    kind, rest = spec.split(":", 1)
    label, n = rest.rsplit(":", 1)
    return kind, label, int(n)


TARGET = _target()


def _matches(label: str) -> bool:
    assert TARGET is not None
    want = TARGET[1]
    return want[1:] in label if want.startswith("~") else label == want


def hit(kind: str, label: str) -> None:
    """Record a point; SIGKILL this process if it is the one asked for."""
    with _lock:
        _seen.append((kind, label))
        if TARGET is None or kind != TARGET[0] or not _matches(label):
            return
        key = (kind, TARGET[1])
        _counts[key] = _counts.get(key, 0) + 1
        if _counts[key] != TARGET[2]:
            return
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _opener() -> str:
    """``module.function`` of the first frame outside this file, contextlib and mlplat/db.py."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not (path.endswith(("contextlib.py", "inject.py")) or path.endswith(os.path.join("mlplat", "db.py"))):
            module = Path(path).stem
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


def install() -> None:
    import mlplat.db as db
    from mlplat.services import rollout

    original = db.Database.transaction

    @contextmanager
    def transaction(self, conn=None):
        label = _opener()
        stack = getattr(_local, "decisions", None)
        if stack is None:
            stack = _local.decisions = []
        stack.append([])
        try:
            with original(self, conn) as c:
                hit("begin", label)
                yield c
                decided = "".join(f"/{d}" for d in stack[-1])
                hit("commit", label + decided)
                _local.anchoring = label + decided
            _local.anchoring = None
            hit("committed", label + decided)
        finally:
            stack.pop()

    db.Database.transaction = transaction

    connection = getattr(db, "Connection", None)
    if connection is not None and hasattr(connection, "run_after_commit"):
        run_after_commit = connection.run_after_commit

        def anchored(self):
            if self.after_commit and getattr(_local, "anchoring", None):
                hit("anchored", _local.anchoring)
            return run_after_commit(self)

        connection.run_after_commit = anchored

    for name in ("deploy", "advance", "rollback", "record_analysis"):
        fn = getattr(rollout, name)

        def decided(*args, __fn=fn, __name=name, **kwargs):
            result = __fn(*args, **kwargs)
            stack = getattr(_local, "decisions", None)
            if stack and result is not None:
                stack[-1].append(__name)
            return result

        setattr(rollout, name, decided)

    replace = os.replace

    def replace_then_hit(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        hit("replace", _opener())

    os.replace = replace_then_hit

    popen_init = subprocess.Popen.__init__

    def popen_then_hit(self, args, *rest, **kwargs):
        popen_init(self, args, *rest, **kwargs)
        argv = [str(a) for a in (args if isinstance(args, (list, tuple)) else [args])]
        what = next((a for a in argv if a.startswith("mlplat.")), Path(argv[0]).name)
        hit("spawn", what)

    subprocess.Popen.__init__ = popen_then_hit


def _write_census() -> None:
    path = os.environ.get(CENSUS_ENV)
    if path:
        with _lock:
            Path(path).write_text(json.dumps(_seen))


def main() -> None:
    install()
    atexit.register(_write_census)
    from mlplat.cli import main as cli_main

    sys.argv = ["mlplat", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
