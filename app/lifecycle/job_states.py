"""The batched Buildkite job-state check behind the lifecycle: who needs a state, when to ask, the answers.

Input: job UUIDs the lifecycle runner (``app.lifecycle.runner``) wants a state for — *polled* ones
(pending pods, so a cancelled job's pod is found even when its ``job.finished`` webhook is lost) and
*urgent* ones (a failure whose handling depends on the state: fail, notify or just clean up, which
needs a state learned after the failure was seen) — plus cancellations announced by webhook.
Output: ``state(uuid, now)``, the freshest known state, ``is_fresh(uuid, since)``, and ``due_at()``,
when the next GraphQL round should run.

Budget: GraphQL is a shared org budget, so a round asks for every wanted job at once, one request per
100 UUIDs (Buildkite's alias limit we chose for one reply), and polled jobs are asked at most once per
``interval_seconds``: a lost cancel webhook costs at most one interval. An urgent job is asked at
once unless it was already asked after its failure was seen (then one interval later), so failure
reports are not held back by the poll cadence, and a job Buildkite does not know, or an outage,
cannot make us ask in a hot loop.
"""

from __future__ import annotations

import logging
import math
import uuid as uuid_module
from collections.abc import Iterable, Sequence
from typing import Protocol

from app.errors import BuildkiteError
from app.lifecycle.decide import CANCELLED_STATES, ENDED_STATES, UNKNOWN_STATE

log = logging.getLogger(__name__)

# Buildkite answers at most 100 aliased jobs per query in our queries (``queries.MAX_BATCH``); one
# request per chunk also means one slow or refused chunk does not lose the others' answers.
BATCH_SIZE = 100
# ``UNKNOWN_STATE`` is what we record for a job Buildkite did not return (deleted pipeline, not a
# command job, not a UUID); ``decide`` deletes a *failing* pod of such a job and keeps a healthy one.
TERMINAL_STATES = CANCELLED_STATES | ENDED_STATES
# How far a low GraphQL budget may stretch the routine poll interval.
MAX_POLL_STRETCH = 12.0


class JobStateSource(Protocol):
    """What the check needs from Buildkite; ``app.buildkite.graphql.GraphQLClient`` implements it."""

    async def job_states(self, uuids: Sequence[str]) -> dict[str, str]: ...


def is_uuid(value: str) -> bool:
    try:
        uuid_module.UUID(value)
    except ValueError:
        return False
    return True


class JobStateCheck:
    def __init__(self, source: JobStateSource, *, interval_seconds: float) -> None:
        if not (interval_seconds > 0 and math.isfinite(interval_seconds)):
            raise ValueError(f"interval_seconds must be a positive number (got {interval_seconds!r})")
        self._source = source
        self._interval = interval_seconds
        self._wanted: dict[str, float | None] = {}  # lower-case uuid -> needs a state learned since
        self._states: dict[str, tuple[str, float]] = {}  # lower-case uuid -> (state, when learned)
        self._asked_at: dict[str, float] = {}
        self._last_round_at = -math.inf
        self.requests = 0

    # --- what the runner needs ------------------------------------------------------------------

    def want(self, uuid: str, *, since: float | None = None) -> None:
        """Ask for ``uuid`` in a coming round: a poll, or urgently a state learned at or after ``since``."""
        key = uuid.lower()
        if not is_uuid(key):
            # Never sent: one malformed label would make Buildkite refuse the whole batch.
            self._states[key] = (UNKNOWN_STATE, math.inf)
            return
        before = self._wanted.get(key)
        self._wanted[key] = since if before is None else max(before, since or before)

    def drop(self, uuid: str) -> None:
        self._wanted.pop(uuid.lower(), None)

    def forget(self, uuid: str) -> None:
        """The job has no pod any more: drop everything known about it."""
        key = uuid.lower()
        for table in (self._wanted, self._states, self._asked_at):
            table.pop(key, None)

    def record(self, uuid: str, state: str, *, now: float) -> None:
        """A state learned elsewhere (the ``job.finished`` webhook)."""
        self._states[uuid.lower()] = (state.lower(), now)

    def state(self, uuid: str, *, now: float) -> str | None:
        """The job's state if known and fresh; ended states never change, so they never go stale.

        Other states are trusted for one interval only: acting on an old ``scheduled`` could fail a
        job an agent has acquired since, or delete the pod it runs in.
        """
        known = self._states.get(uuid.lower())
        if known is None:
            return None
        state, learned_at = known
        if state in TERMINAL_STATES or now - learned_at < self._interval:
            return state
        return None

    def is_fresh(self, uuid: str, *, since: float) -> bool:
        """True when the known state was learned at or after ``since``, or can never change."""
        known = self._states.get(uuid.lower())
        return known is not None and (known[0] in TERMINAL_STATES or known[1] >= since)

    def due_at(self) -> float | None:
        """When the next round should run, or None when no job needs a state.

        Routine polls of Pending pods stretch out while the organization's GraphQL budget runs low
        (a thousand Pending pods polled every 5 s would cost ~12,000 points a minute, against a
        budget of 20,000 per 5 minutes shared with everyone); checks after a failure never wait.
        """
        if not self._wanted:
            return None
        due = [self._last_round_at + self._interval * budget_stretch(self._source)]
        for key, since in self._wanted.items():
            if since is None:
                continue
            asked_at = self._asked_at.get(key, -math.inf)
            # Not asked since the failure: ask now. Asked, yet no usable answer: once per interval.
            due.append(-math.inf if asked_at < since else asked_at + self._interval)
        return min(due)

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset(self._wanted)

    def sizes(self) -> dict[str, int]:
        """How much the check holds (a memory test reads it)."""
        return {"wanted": len(self._wanted), "states": len(self._states), "asked": len(self._asked_at)}

    # --- the round --------------------------------------------------------------------------------

    async def run(self, *, now: float) -> dict[str, str]:
        """Ask Buildkite for every wanted job, ≤100 per request; returns the states learned.

        A chunk whose request fails is not retried here: its jobs stay wanted and are asked again
        one interval later (``asked_at`` is set either way, so an outage cannot cause a hot loop).
        """
        uuids = list(self._wanted)
        self._wanted.clear()
        self._last_round_at = now
        learned: dict[str, str] = {}
        for chunk in _chunks(uuids, BATCH_SIZE):
            learned.update(await self._ask(chunk, now=now))
        return learned

    async def _ask(self, chunk: list[str], *, now: float) -> dict[str, str]:
        for key in chunk:
            self._asked_at[key] = now
        self.requests += 1
        try:
            answer = await self._source.job_states(chunk)
        except BuildkiteError as exc:
            log.warning("job state check for %d jobs failed: %s; asking again next round", len(chunk), exc)
            for key in self._still_tracked(chunk):
                self._wanted.setdefault(key, None)
            return {}
        states = {key.lower(): str(value).lower() for key, value in answer.items() if isinstance(key, str)}
        learned = {key: states.get(key, UNKNOWN_STATE) for key in self._still_tracked(chunk)}
        for key, state in learned.items():
            self._states[key] = (state, now)
        return learned

    def _still_tracked(self, chunk: list[str]) -> list[str]:
        # A job forgotten while its request was out (its last pod went) lost its ``asked_at`` too; an
        # answer for it must not bring it back: nothing would ever forget it again.
        return [key for key in chunk if key in self._asked_at]


def budget_stretch(source: object) -> float:
    """1 while at least half the GraphQL budget is left, then up to 12 (5 s polls become 60 s)."""
    budget = getattr(source, "budget", None)  # GraphQLClient.budget: RateBudget, or None before a call
    remaining, limit = getattr(budget, "remaining", None), getattr(budget, "limit", None)
    if remaining is None or not limit:
        return 1.0
    fraction = max(0.0, remaining / limit)
    return 1.0 if fraction >= 0.5 else min(MAX_POLL_STRETCH, 0.5 / max(fraction, 1e-9))


def _chunks(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
