"""Retrying calls to Buildkite: back-off with jitter, ``Retry-After``, and the rate budget.

Used by the GraphQL and agent API clients. One attempt is a coroutine that either returns a result
or raises ``Retry(error, delay)``; ``RetryLoop`` sleeps and tries again until ``RetryPolicy.attempts``
are used up, then raises the last ``error`` (a ``BuildkiteError``). Sleep and randomness are injected
so tests never wait for real. ``classify`` turns the common failures (transport errors, 429, 5xx)
into ``Retry``; ``budget_from_headers`` reads ``RateLimit-*`` headers (reference/buildkite-api.md §2.1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx

from app.errors import BuildkiteError, BuildkiteUnavailable, RateLimited

log = logging.getLogger(__name__)
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard to retry one call.

    ``attempts`` counts the first try. The n-th back-off is drawn from [c/2, c] with
    c = min(cap, base · 2ⁿ), so concurrent clients spread out but never retry at once.
    ``max_wait_seconds``: a ``Retry-After`` longer than this is not slept through inside one call
    (the org budget can ask for minutes); ``RateLimited`` is raised so the caller reschedules.
    """

    attempts: int = 5
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    max_wait_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_seconds <= 0 or self.cap_seconds < self.base_seconds:
            raise ValueError(f"RetryPolicy needs attempts >= 1 and 0 < base <= cap, got {self}")

    def backoff_seconds(self, attempt: int, rng: Callable[[], float]) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** min(attempt, 32))
        return ceiling / 2 + rng() * ceiling / 2


DEFAULT_RETRY = RetryPolicy()


class Retry(Exception):
    """Raised by one attempt: ``error`` happened, try again after ``delay`` seconds (None = back off)."""

    def __init__(self, error: BuildkiteError, delay: float | None = None) -> None:
        self.error = error
        self.delay = delay
        super().__init__(str(error))


@dataclass(frozen=True)
class RateBudget:
    """Buildkite's rate budget as of the last response; ``reset_at`` is a unix time."""

    remaining: int | None
    limit: int | None
    reset_at: float | None


class RetryLoop:
    """Run an attempt until it succeeds, raises a non-``Retry`` error, or attempts run out."""

    def __init__(self, policy: RetryPolicy, *, sleep: Sleep, rng: Callable[[], float]) -> None:
        self.policy = policy
        self._sleep = sleep
        self._rng = rng

    async def run(self, attempt: Callable[[int], Awaitable[T]], *, what: str) -> T:
        """Call ``attempt(n)`` for n = 0, 1, …; ``what`` names the call in log lines."""
        for number in range(self.policy.attempts):
            try:
                return await attempt(number)
            except Retry as retry:
                delay = (
                    retry.delay if retry.delay is not None else self.policy.backoff_seconds(number, self._rng)
                )
                if isinstance(retry.error, RateLimited) and retry.delay is None:
                    retry.error.retry_after = delay  # no header: our back-off is the best advice
                if number + 1 >= self.policy.attempts or delay > self.policy.max_wait_seconds:
                    raise retry.error from retry.__cause__
                log.warning("%s failed (%s); retry %d in %.2f s", what, retry.error, number + 1, delay)
                await self._sleep(delay)
        raise AssertionError("unreachable: RetryPolicy guarantees at least one attempt")


def classify(response: httpx.Response, *, what: str) -> Retry | None:
    """A ``Retry`` for 429 and 5xx responses, None for everything else."""
    status = response.status_code
    if status == 429:
        wait = retry_after_seconds(response.headers, or_reset=True)
        return Retry(RateLimited(wait or 0.0, f"{what}: HTTP 429 rate limited"), wait)
    if status >= 500:
        return Retry(BuildkiteUnavailable(f"{what}: HTTP {status}"), retry_after_seconds(response.headers))
    return None


def transport_retry(exc: httpx.TransportError, *, what: str) -> Retry:
    """Timeouts and connection errors: the server may be fine in a moment."""
    retry = Retry(BuildkiteUnavailable(f"{what}: {type(exc).__name__}"))
    retry.__cause__ = exc
    return retry


def retry_after_seconds(headers: Mapping[str, str], *, or_reset: bool = False) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds, maybe fractional).

    ``or_reset``: fall back to ``RateLimit-Reset``, which only means "wait" on a 429; Buildkite
    sends it on every response, so a 5xx must not be made to wait for the budget window.
    """
    seconds = _seconds(headers.get("retry-after"))
    if seconds is None and or_reset:
        seconds = _seconds(headers.get("ratelimit-reset"))
    return seconds


def budget_from_headers(headers: Mapping[str, str], *, now: float) -> RateBudget | None:
    """The organization budget from ``RateLimit-*`` headers, or None when the response has none."""
    remaining = _count(headers.get("ratelimit-remaining"))
    limit = _count(headers.get("ratelimit-limit"))
    reset = _seconds(headers.get("ratelimit-reset"))
    if remaining is None and limit is None and reset is None:
        return None
    return RateBudget(remaining=remaining, limit=limit, reset_at=None if reset is None else now + reset)


def short_body(response: httpx.Response, limit: int = 200) -> str:
    """The start of a response body for an error message; foreign bodies can be huge."""
    text = response.content[: limit * 4].decode("utf-8", "replace")
    return text[:limit] + ("…" if len(text) > limit else "")


def _seconds(value: str | None) -> float | None:
    # A date-form Retry-After is not sent by Buildkite; treat it like no header (back off instead).
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
