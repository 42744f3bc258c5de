"""Several gateway processes on one port: a supervisor that owns the listening socket.

``mlplat serve --workers N`` binds the port once, in the supervising process, and starts N worker
processes that inherit that one listening socket (its file descriptor is passed down, as gunicorn
and uvicorn's multiprocess mode do). Every worker accepts from the same kernel queue, so a
connection waiting there is taken by whichever worker is free, and when a worker dies the
connections not yet accepted are served by the others. (With ``SO_REUSEPORT`` each worker would
have a queue of its own, and the kernel resets the connections queued on a socket that closes.)

Each worker is a whole gateway: its own warm models, its own poller following the ledger's routing
revision (so a rollback reaches every worker within the poll interval), its own capture writer.
The canary controller runs in every worker, and the ledger lease (:mod:`mlplat.serving.controller`)
lets one of them at a time judge and step a rollout, on the traffic that worker served.

The supervisor restarts a worker that exits, pausing longer each time one keeps dying soon after it
started, and on SIGTERM, SIGINT or SIGHUP stops them all: SIGTERM to each (uvicorn finishes the
requests in flight), SIGKILL after a grace period. A worker asks the kernel for SIGTERM when its
supervisor dies (``PR_SET_PDEATHSIG``, set by :func:`inherit`), so even a SIGKILLed supervisor
leaves no worker behind.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplat.errors import ExternalError, MlplatError

log = logging.getLogger("mlplat.gateway")

SUPERVISOR_ENV = "MLPLAT_SUPERVISOR_PID"
START_TIMEOUT_S = 180.0  # a worker loads every deployed version before it serves
GRACE_S = 15.0  # after SIGTERM, how long a worker may take to finish its requests before SIGKILL
STABLE_AFTER_S = 10.0  # a worker that lived this long is restarted at once when it exits
MAX_PAUSE_S = 10.0  # the longest pause before restarting a worker that keeps dying on start
PR_SET_PDEATHSIG = 1

# (listening fd, ready file) -> the command line of one worker: it serves on the inherited fd and
# writes its port to the ready file once it accepts connections
WorkerCommand = Callable[[int, Path], Sequence[str]]


def default_workers() -> int:
    """The number of worker processes when none is asked for: one per core."""
    return max(1, os.cpu_count() or 1)


def inherit(fd: int) -> socket.socket:
    """In a worker: the listening socket its supervisor passed down as ``fd``.

    First asks the kernel to send this process SIGTERM when the supervisor dies, then checks that
    the supervisor is still its parent (it may have died before the request took effect)."""
    _die_with_parent()
    expected = os.environ.get(SUPERVISOR_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        raise MlplatError("the supervising `mlplat serve` exited before this worker started")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise MlplatError(f"--listen-fd {fd} is not an open socket: {exc.strerror}",
                          hint="--listen-fd is set by `mlplat serve --workers N` for its workers; "
                               "run `mlplat serve` without it") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise MlplatError(f"--listen-fd {fd} is not a listening TCP socket",
                          hint="--listen-fd is set by `mlplat serve --workers N` for its workers")
    return sock


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a SIGKILLed supervisor may leave workers behind
        pass


@dataclass
class Worker:
    """One worker slot's current process."""

    slot: int
    proc: subprocess.Popen
    ready_file: Path
    started_at: float
    ready: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    """Runs ``count`` workers of ``command`` sharing ``sock``, until told to stop.

    ``run(on_ready)`` blocks: it starts every worker, calls ``on_ready(pids)`` once all of them
    accept connections, then restarts any that exits, until :meth:`request_stop` (or SIGTERM, SIGINT,
    SIGHUP when ``run`` installs its handlers in the main thread). Workers' stdout goes to
    ``stdout`` (default: discarded); their stderr is this process's, so their logs reach the user.
    """

    def __init__(self, sock: socket.socket, command: WorkerCommand, count: int, *,
                 env: Mapping[str, str] | None = None, grace: float = GRACE_S, stdout: int | None = subprocess.DEVNULL,
                 clock: Callable[[], float] = time.monotonic):
        if count < 1:
            raise ValueError(f"a supervisor needs at least one worker, not {count}")
        self.sock = sock
        self.command = command
        self.count = count
        self.env = dict(os.environ if env is None else env)
        self.env[SUPERVISOR_ENV] = str(os.getpid())
        self.grace = grace
        self.stdout = stdout
        self.clock = clock
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self._pause: dict[int, float] = {}  # slot -> pause before its next restart
        self._due: dict[int, float] = {}  # slot -> when its restart is due
        self._stop = threading.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="mlplat-workers-"))

    @property
    def pids(self) -> list[int]:
        return [w.pid for _, w in sorted(self.workers.items())]

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    # --- the loop -----------------------------------------------------------------------------

    def run(self, on_ready: Callable[[list[int]], None] | None = None, interval: float = 0.1) -> None:
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                handlers[signum] = signal.signal(signum, self.request_stop)
        try:
            self.start()
            if self._stop.is_set():
                return
            if on_ready is not None:
                on_ready(self.pids)
            while not self._stop.wait(interval):
                self.check()
        finally:
            self.stop()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    def start(self) -> None:
        """Start every worker and wait until each accepts connections. A worker that exits first
        stops the others and raises :class:`ExternalError` with its exit code."""
        for slot in range(self.count):
            self._spawn(slot)
        deadline = self.clock() + START_TIMEOUT_S
        while not self._stop.is_set():
            pending = [w for w in self.workers.values() if not self._is_ready(w)]
            if not pending:
                return
            for worker in pending:
                code = worker.proc.poll()
                if code is not None:
                    self.stop()
                    raise ExternalError(f"gateway worker {worker.slot + 1} of {self.count} (pid {worker.pid}) exited "
                                        f"with {_describe_exit(code)} before serving",
                                        hint="its messages are above; `mlplat serve --workers 1` serves in one process")
            if self.clock() > deadline:
                self.stop()
                raise ExternalError(f"{len(pending)} of {self.count} gateway workers did not serve within "
                                    f"{START_TIMEOUT_S:.0f} s", hint="their messages are above")
            self._stop.wait(0.05)

    def check(self) -> list[int]:
        """One supervision pass: restart every worker that exited (once its pause is over).
        Returns the pids of the workers started in this pass."""
        started = []
        now = self.clock()
        for slot, worker in sorted(self.workers.items()):
            if slot in self._due:
                if now >= self._due[slot] and not self._stop.is_set():
                    del self._due[slot]
                    started.append(self._spawn(slot).pid)
                continue
            code = worker.proc.poll()
            if code is None:
                if not worker.ready:
                    self._is_ready(worker)
                continue
            lived = now - worker.started_at
            pause = 0.0 if lived >= STABLE_AFTER_S else min(MAX_PAUSE_S, max(0.5, 2 * self._pause.get(slot, 0.0)))
            self._pause[slot] = pause
            log.warning("gateway worker %d (pid %d) exited with %s after %.1f s; %s", slot + 1, worker.pid,
                        _describe_exit(code), lived, f"restarting it in {pause:g} s" if pause else "restarting it")
            self.restarts += 1
            if pause:
                self._due[slot] = now + pause
            elif not self._stop.is_set():
                started.append(self._spawn(slot).pid)
        return started

    def stop(self) -> None:
        """SIGTERM every worker, wait up to ``grace`` seconds, SIGKILL the rest. Idempotent."""
        self._stop.set()
        alive = [w for w in self.workers.values() if w.proc.poll() is None]
        for worker in alive:
            _signal(worker.proc, signal.SIGTERM)
        deadline = self.clock() + self.grace
        for worker in alive:
            try:
                worker.proc.wait(max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                log.warning("gateway worker %d (pid %d) did not stop within %g s; killing it", worker.slot + 1,
                            worker.pid, self.grace)
                _signal(worker.proc, signal.SIGKILL)
                worker.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    # --- one worker ---------------------------------------------------------------------------

    def _spawn(self, slot: int) -> Worker:
        ready = self._dir / f"worker-{slot}-{time.monotonic_ns()}.port"
        fd = self.sock.fileno()
        # spawned from the thread that runs the loop: PR_SET_PDEATHSIG follows the creating thread.
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which stops each
        # worker once (a second signal would make uvicorn drop the requests in flight).
        proc = subprocess.Popen(list(self.command(fd, ready)), pass_fds=(fd,), env=self.env, stdin=subprocess.DEVNULL,
                                stdout=self.stdout, process_group=0)
        worker = Worker(slot, proc, ready, self.clock())
        self.workers[slot] = worker
        return worker

    @staticmethod
    def _is_ready(worker: Worker) -> bool:
        if not worker.ready and worker.ready_file.is_file():
            worker.ready = True
            worker.ready_file.unlink(missing_ok=True)
        return worker.ready


WORKER_HEADER = b"x-mlplat-worker"


class WorkerTagged:
    """An ASGI app's responses, each with ``x-mlplat-worker: <pid>``: which of the workers sharing
    a port answered (the gateway's ``/metrics`` are that worker's own)."""

    def __init__(self, app: Any):
        self.app = app
        self.header = (WORKER_HEADER, str(os.getpid()).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self.header

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, tagged)


def _signal(proc: subprocess.Popen, signum: int) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
