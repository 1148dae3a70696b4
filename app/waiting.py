"""Waiting with a deadline, in a way a stage loop can always be stopped.

``asyncio.wait_for`` on Python 3.11 loses a cancel that arrives in the same loop turn as the thing it
waits for (python/cpython#86296, fixed in 3.12): it returns the result instead of raising. A stage loop
that waits with it (``while True: wait_for(event.wait(), …)``) then runs on after ``Task.cancel``, and
shutdown waits on it until the kubelet's SIGKILL. ``asyncio.timeout`` has no such window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_set(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait up to ``seconds`` (``None``: no limit) for ``event``; whether it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def first_set(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def within(step: Awaitable[T], seconds: float) -> T:
    """``step``'s result, or ``TimeoutError`` (``step`` cancelled) after ``seconds``."""
    async with asyncio.timeout(seconds):
        return await step
