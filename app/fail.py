"""Failing a Buildkite job that cannot run, at most once per job, with a message the user will read.

Used by ``create`` (bad config, rejected pod) and the lifecycle (pods that cannot start). The agent
REST API does the work: register, acquire, start, upload the message as the job log, finish with -1.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from app.buildkite.agent_api import AgentAPI, FailOutcome
from app.errors import BuildkiteError
from app.logs import job_log
from app.metrics import Metrics

log = logging.getLogger(__name__)


class JobFailer:
    def __init__(
        self, agent_api: AgentAPI | None, *, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._api = agent_api
        self._metrics = metrics
        self._clock = clock
        self._done: dict[str, str] = {}  # uuid -> outcome; at most one finish per job from this process
        self._inflight: dict[str, asyncio.Future[str]] = {}

    async def fail(self, uuid: str, *, reason: str, message: str, detected_at: float | None = None) -> str:
        """Fail ``uuid`` in Buildkite; returns ``failed``, ``not_acquirable``, ``error`` or ``disabled``."""
        if uuid in self._done:
            return self._done[uuid]
        if uuid in self._inflight:
            return await asyncio.shield(self._inflight[uuid])
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[uuid] = future
        try:
            outcome = await self._fail_once(uuid, reason=reason, message=message)
            if outcome != "error":
                self._done[uuid] = outcome
            if detected_at is not None and outcome == "failed":
                self._metrics.failure_report_seconds.observe(self._clock() - detected_at)
            future.set_result(outcome)
            return outcome
        finally:
            del self._inflight[uuid]

    async def _fail_once(self, uuid: str, *, reason: str, message: str) -> str:
        jlog = job_log(log, uuid, stage="fail")
        if self._api is None:
            jlog.error("cannot fail the job (%s): no agent token configured; reason: %s", reason, message)
            return "disabled"
        try:
            outcome = await self._api.fail_job(uuid, message)
        except BuildkiteError as exc:
            jlog.error("failing the job (%s) failed: %s", reason, exc)
            return "error"
        if outcome is FailOutcome.FAILED:
            self._metrics.jobs_failed.labels(reason).inc()
            jlog.info("job failed in Buildkite (%s)", reason)
            return "failed"
        jlog.info("job not failed (%s): an agent already holds it or it ended", reason)
        return "not_acquirable"
