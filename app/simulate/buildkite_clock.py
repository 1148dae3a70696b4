"""Clocks for the fake Buildkite: real wall time, or a manual clock a test advances by hand.

The fake reads time only through a `Clock` (job timestamps, the GraphQL rate-limit window, webhook
timestamps), so a test can expire a rate-limit window without waiting five real minutes.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current Unix time in seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to; safe to share between threads."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward (never backward) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backward (got {seconds} seconds)")
        with self._lock:
            self._now += seconds
            return self._now


def iso8601(timestamp: float | None) -> str | None:
    """Format Unix seconds the way Buildkite's APIs do (UTC, millisecond precision, `Z`)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
