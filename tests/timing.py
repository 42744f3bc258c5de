"""Time in tests: wait on a condition (never sleep, then assert), and a clock the test moves.

``wait_until`` polls until the predicate holds; its timeout is a bound on a hang, not a
measurement: how fast the condition arrives is never asserted. ``ManualClock`` stands in for
``time.time`` wherever the platform takes a clock (the gateway's canary controller, the rollout
transitions' ``now``), so bake times pass when the test says so.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
               message: str | Callable[[], str] = "") -> T:
    """The first truthy value of ``predicate()``; AssertionError (with ``message``) if none within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = message() if callable(message) else message
            raise AssertionError(f"condition not reached within {timeout:g} s" + (f": {detail}" if detail else ""))
        time.sleep(interval)


class ManualClock:
    """A wall clock that moves only when told: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
