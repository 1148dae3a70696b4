"""Confirm: ask Buildkite, in ONE GraphQL request per batch, whether each job is still ours to run.

Input: batches of UUIDs from ``intake``, or records the sweep already fetched. Output: ``podspec.Job``
values for ``admit``. A job is dropped when Buildkite does not know it, it is no longer ``scheduled``
(cancelled, taken by another agent), or its agent tags do not match ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from app.buildkite.graphql import GraphQLClient
from app.buildkite.queries import JobRecord
from app.errors import BuildkiteError
from app.intake import Intake
from app.logs import job_log
from app.metrics import Metrics
from app.tags import ControllerTags
from podspec.job import Job, parse_agent_query_rules

log = logging.getLogger(__name__)

# After the client's own retries gave up (Buildkite down, budget spent), wait before trying again.
REQUEUE_DELAY_SECONDS = 5.0


def to_job(record: JobRecord) -> Job:
    return Job(
        uuid=record.uuid,
        command=record.command,
        env=dict(record.env),
        agent_tags=parse_agent_query_rules(record.agent_query_rules),
        priority=record.priority,
    )


class Confirmer:
    def __init__(
        self,
        *,
        graphql: GraphQLClient,
        tags: ControllerTags,
        intake: Intake,
        admit: Callable[[list[Job]], Awaitable[None]],
        metrics: Metrics,
    ) -> None:
        self._graphql = graphql
        self._tags = tags
        self._intake = intake
        self._admit = admit
        self._metrics = metrics

    async def confirm(self, uuids: list[str]) -> None:
        """One GraphQL request for the batch; on a lasting Buildkite failure, requeue it later."""
        self._metrics.confirm_batch_size.observe(len(uuids))
        self._metrics.graphql_calls.labels("confirm").inc()
        try:
            records = await self._graphql.confirm_jobs(uuids)
        except BuildkiteError as exc:
            self._metrics.graphql_errors.labels("confirm").inc()
            log.warning(
                "confirm of %d jobs failed (%s); retrying in %.0f s", len(uuids), exc, REQUEUE_DELAY_SECONDS
            )
            await asyncio.sleep(REQUEUE_DELAY_SECONDS)
            self._intake.requeue(uuids)
            return
        finally:
            self._record_budget()
        kept = [record for uuid in uuids if (record := self._keep(uuid, records.get(uuid)))]
        if kept:  # already filtered: going through accept() would count each job twice
            await self._admit([to_job(record) for record in kept])

    async def accept(self, records: Sequence[JobRecord]) -> None:
        """Records known to be current (from a confirm or a sweep page): filter, then admit."""
        jobs = [to_job(record) for record in records if self._keep(record.uuid, record)]
        if jobs:
            await self._admit(jobs)

    def _keep(self, uuid: str, record: JobRecord | None) -> JobRecord | None:
        outcome = self._outcome(uuid, record)
        self._metrics.jobs_confirmed.labels(outcome).inc()
        if outcome != "scheduled":
            job_log(log, uuid, stage="confirm").info("dropped: %s", outcome)
            self._intake.mark(uuid, "dropped")
            return None
        return record

    def _outcome(self, uuid: str, record: JobRecord | None) -> str:
        if self._intake.is_cancelled(uuid):
            return "cancelled"
        if record is None:
            return "unknown"
        if record.state != "scheduled":
            return f"state_{record.state}"
        if not self._tags.matches_rules(record.agent_query_rules):
            return "not_our_tags"
        return "scheduled"

    def _record_budget(self) -> None:
        budget = self._graphql.budget
        remaining = getattr(budget, "remaining", None)
        if remaining is not None:
            self._metrics.graphql_budget.set(remaining)
