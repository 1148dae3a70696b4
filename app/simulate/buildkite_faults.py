"""Recorded calls, injected faults and the GraphQL points budget of the fake Buildkite.

Tests read `CallLog` to assert what the controller sent, arm `FaultBook` to make the next N calls to a
surface fail (429 with Retry-After, 5xx, GraphQL `errors` with HTTP 200, added latency), and shrink
`PointsBudget` to reach Buildkite's organisation limit (reference/buildkite-api.md §2.1) quickly.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from app.simulate.buildkite_clock import Clock

SURFACES = frozenset({"graphql", "agent", "any"})


def surface_of(path: str) -> str | None:
    """Which API a request path belongs to; None for the test-control API, which is never faulted."""
    if path == "/v1" or path.startswith("/v1/"):
        return "graphql"
    if path.startswith("/v3/"):
        return "agent"
    return None


@dataclass
class RecordedCall:
    """One request as the fake received it, with the status it answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    time: float
    status: int | None = None

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


class CallLog:
    """Every request, in arrival order; safe to append from server threads while a test reads."""

    def __init__(self) -> None:
        self._calls: list[RecordedCall] = []
        self._lock = threading.Lock()

    def add(self, call: RecordedCall) -> None:
        with self._lock:
            self._calls.append(call)

    def snapshot(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


@dataclass
class Fault:
    """A failure to serve instead of (or, for pure latency, before) the real answer.

    `count` is how many matching calls it affects; None keeps it until `FaultBook.clear()`.
    """

    surface: str
    status: int | None = None
    retry_after: float | None = None
    errors: list[dict[str, Any]] | None = None
    latency_seconds: float = 0.0
    count: int | None = 1
    path: str | None = None  # only calls whose path contains this
    hits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.surface not in SURFACES:
            raise ValueError(f"fault surface must be one of {sorted(SURFACES)} (got {self.surface!r})")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"fault status must be an HTTP error status 400-599 (got {self.status})")
        if self.errors is not None and self.surface != "graphql":
            raise ValueError("GraphQL `errors` faults apply to the graphql surface only")
        if self.count is not None and self.count < 1:
            raise ValueError(f"fault count must be at least 1 or None (got {self.count})")

    def matches(self, surface: str, path: str) -> bool:
        return self.surface in {surface, "any"} and (self.path is None or self.path in path)


class FaultBook:
    """Armed faults, consumed first-in first-out by matching calls."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, surface: str, path: str) -> Fault | None:
        """The first armed fault for this call, used up by one hit."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(surface, path):
                    fault.hits += 1
                    if fault.count is not None and fault.hits >= fault.count:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class PointsBudget:
    """Buildkite's organisation GraphQL limit: `limit` actual points per `window_seconds`."""

    def __init__(self, clock: Clock, *, limit: int = 20_000, window_seconds: float = 300.0) -> None:
        self._clock = clock
        self.limit = limit
        self.window_seconds = window_seconds
        self._used = 0
        self._window_start = clock.now()
        self._lock = threading.Lock()

    def _roll(self) -> None:
        now = self._clock.now()
        if now - self._window_start >= self.window_seconds:
            # Windows are fixed, aligned on the first request, so Reset counts down predictably.
            elapsed_windows = (now - self._window_start) // self.window_seconds
            self._window_start += elapsed_windows * self.window_seconds
            self._used = 0

    def remaining(self) -> int:
        with self._lock:
            self._roll()
            return max(0, self.limit - self._used)

    def reset_in(self) -> int:
        """Whole seconds until the window resets (never 0, so a client always waits a little)."""
        with self._lock:
            self._roll()
            left = self._window_start + self.window_seconds - self._clock.now()
            return max(1, int(left + 0.999))

    def charge(self, points: int) -> None:
        with self._lock:
            self._roll()
            self._used += points

    def reset(self, *, limit: int) -> None:
        with self._lock:
            self.limit, self._used, self._window_start = limit, 0, self._clock.now()

    def set(self, *, limit: int | None = None, used: int | None = None) -> None:
        """Tests shrink the limit or pre-spend it to reach a 429 without thousands of queries."""
        with self._lock:
            if limit is not None:
                self.limit = limit
            if used is not None:
                self._used = used
