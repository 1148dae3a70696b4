"""Failing a Buildkite job that cannot run, at most once per job, with a message the user will read.

Used by admission (bad config, a pod Kubernetes refuses) and the lifecycle (pods that cannot start).
The agent REST API does the work (``app.buildkite.agent_api``): register, acquire, start, upload the
message as the job log, finish with -1. The answer is a ``FailOutcome`` that says whether the job's pod
may be deleted:

    FAILED           we failed the job                                  the pod may be deleted
    ENDED            it had already ended (finished, cancelled, …)      the pod may be deleted
    HELD_BY_ANOTHER  an agent — maybe the pod's own — holds the job     do NOT delete the pod
    RETRY            nothing settled (Buildkite unreachable, an error)  do not delete yet; ask again later

Concurrent calls for one job share one attempt, and every waiter gets its answer whatever goes wrong
inside. Settled answers are remembered (bounded by age and count) so asking again costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from app.buildkite.agent_api import FailOutcome
from app.buildkite.queries import canonical_uuids
from app.errors import BuildkiteError
from app.logs import job_log
from app.metrics import Metrics

log = logging.getLogger(__name__)

# FAILED and ENDED never change; they are remembered long enough to absorb every repeat from the
# lifecycle and admission (then a repeat just asks Buildkite again and hears ENDED).
SETTLED_TTL_SECONDS = 3600.0
# HELD_BY_ANOTHER can change (the holding agent may die before starting): asked again after a minute.
HELD_TTL_SECONDS = 60.0
MAX_REMEMBERED = 10_000


class AgentFailing(Protocol):
    """What we need from ``app.buildkite.agent_api.AgentAPI``."""

    async def fail_job(self, uuid: str, message: str) -> FailOutcome: ...


class JobFailer:
    def __init__(
        self,
        agent_api: AgentFailing,
        *,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if agent_api is None:
            # `serve` refuses to start without --agent-token; anything else building us must pass one.
            raise ValueError(
                "JobFailer needs the agent API (an agent token): jobs cannot be failed without it"
            )
        self._api = agent_api
        self._metrics = metrics
        self._clock = clock
        self._done: OrderedDict[str, tuple[FailOutcome, float]] = OrderedDict()  # uuid → (outcome, expiry)
        self._inflight: dict[str, asyncio.Future[FailOutcome]] = {}

    async def fail(
        self, uuid: str, *, reason: str, message: str, detected_at: float | None = None
    ) -> FailOutcome:
        """Fail ``uuid`` in Buildkite with ``message`` (``reason`` labels metrics and logs).

        Returns FAILED or ENDED (the pod may be deleted), HELD_BY_ANOTHER (an agent has the job: leave
        its pod alone) or RETRY (nothing settled: keep the pod, ask again later). Never raises for
        Buildkite trouble or a bug inside; ``detected_at`` (this failer's clock) times the report.
        """
        key = uuid.strip().lower()
        remembered = self._remembered(key)
        if remembered is not None:
            return remembered
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[FailOutcome] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        outcome = FailOutcome.RETRY
        try:
            outcome = await self._fail_once(key, reason=reason, message=message)
            if outcome.settled:
                self._remember(key, outcome)
            if detected_at is not None and outcome is FailOutcome.FAILED:
                self._metrics.failure_report_seconds.observe(self._clock() - detected_at)
            return outcome
        finally:
            # Also when cancelled: waiters get RETRY rather than hang.
            del self._inflight[key]
            if not future.done():
                future.set_result(outcome)

    def remembered(self) -> int:
        """How many settled answers are kept."""
        return len(self._done)

    async def _fail_once(self, uuid: str, *, reason: str, message: str) -> FailOutcome:
        jlog = job_log(log, uuid, stage="fail")
        try:
            canonical_uuids([uuid])
            outcome = await self._api.fail_job(uuid, message)
        except BuildkiteError as exc:
            jlog.error("failing the job (%s) failed: %s; will retry", reason, exc)
            return FailOutcome.RETRY
        except Exception:
            jlog.exception("failing the job (%s) crashed; will retry", reason)
            return FailOutcome.RETRY
        if outcome is FailOutcome.FAILED:
            self._metrics.jobs_failed.labels(reason).inc()
            jlog.info("job failed in Buildkite (%s)", reason)
        elif outcome is FailOutcome.HELD_BY_ANOTHER:
            jlog.info("job not failed (%s): an agent holds it; its pod must stay", reason)
        else:
            jlog.info("job not failed (%s): it had already ended (%s)", reason, outcome)
        return outcome

    def _remembered(self, uuid: str) -> FailOutcome | None:
        self._trim()
        entry = self._done.get(uuid)
        return entry[0] if entry is not None and entry[1] > self._clock() else None

    def _remember(self, uuid: str, outcome: FailOutcome) -> None:
        ttl = HELD_TTL_SECONDS if outcome is FailOutcome.HELD_BY_ANOTHER else SETTLED_TTL_SECONDS
        self._done.pop(uuid, None)
        self._done[uuid] = (outcome, self._clock() + ttl)
        self._trim()

    def _trim(self) -> None:
        # Oldest first, so this stays cheap; an expired entry behind a live one is ignored on lookup.
        now = self._clock()
        while self._done and (len(self._done) > MAX_REMEMBERED or next(iter(self._done.values()))[1] <= now):
            self._done.popitem(last=False)
