"""Helpers every kind of test needs, written once: polling with a deadline, and a settable clock.

``wait_until`` blocks (for tests that drive a server in another thread or process); ``eventually``
yields to the event loop between polls (for async tests whose subject runs on the same loop). Both
return the predicate's first truthy value and fail with ``what`` after ``timeout`` seconds of real time:
a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any], what: str = "condition", *, timeout: float = 5.0, every: float = 0.01
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


async def eventually(
    predicate: Callable[[], Any], what: str = "condition", *, timeout: float = 5.0, every: float = 0.002
) -> Any:
    """``wait_until`` for async tests: the loop runs the code under test between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


async def settle(turns: int = 20) -> None:
    """Let every task on the loop run until it blocks (a few loop turns; no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Clock:
    """An injected clock: ``now`` moves only when a test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
