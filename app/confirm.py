"""Confirm: ask Buildkite, in ONE GraphQL request per batch, whether each job is still ours to run.

Input: batches of UUIDs from ``intake`` (leader only), or records the sweep already fetched. Output:
``podspec.Job`` values handed to ``admit``; every other job ends in the book as ``dropped`` with the
reason: Buildkite does not know it, it is no longer ``scheduled`` (cancelled, taken by an agent), or
its agent tags are not ours. ``recheck`` answers the same question for jobs that waited so long in
admission that their confirmation is stale (``Admitter``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from app.buildkite.graphql import GraphQLClient
from app.buildkite.queries import JobRecord as BuildkiteJob
from app.buildkite.queries import cluster_mismatch
from app.errors import BuildkiteError
from app.intake import Retry
from app.jobs import JobBook, Stage
from app.logs import job_log
from app.metrics import Metrics
from app.tags import ControllerTags
from podspec.job import Job, parse_agent_query_rules

log = logging.getLogger(__name__)

# After the client's own retries gave up (Buildkite down, budget spent), wait before trying again.
REQUEUE_DELAY_SECONDS = 5.0
SCHEDULED = "scheduled"


def to_job(record: BuildkiteJob) -> Job:
    return Job(
        uuid=record.uuid.lower(),
        command=record.command,
        env=dict(record.env),
        agent_tags=parse_agent_query_rules(record.agent_query_rules),
        priority=record.priority,
    )


class AdmitStage(Protocol):
    def enqueue(self, jobs: Sequence[Job]) -> None: ...
    def room(self) -> asyncio.Event: ...


class Confirmer:
    def __init__(
        self,
        *,
        graphql: GraphQLClient,
        tags: ControllerTags,
        book: JobBook,
        admitter: AdmitStage,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        cluster_uuid: str | None = None,
    ) -> None:
        self._graphql = graphql
        # The Buildkite cluster we serve (None: any): a job of another cluster is dropped.
        self._cluster_uuid = cluster_uuid
        self._tags = tags
        self._book = book
        self._admitter = admitter
        self._metrics = metrics
        self._clock = clock

    async def confirm(self, uuids: list[str]) -> Retry | None:
        """One GraphQL request for the batch; a lasting Buildkite failure asks intake to retry it."""
        self._metrics.confirm_batch_size.observe(len(uuids))
        self._metrics.graphql_calls.labels("confirm").inc()
        asked_at = self._clock()
        try:
            records = await self._graphql.confirm_jobs(uuids, with_cluster=self._cluster_uuid is not None)
        except BuildkiteError as exc:
            self._metrics.graphql_errors.labels("confirm").inc()
            return Retry(uuids, after=REQUEUE_DELAY_SECONDS, reason=f"confirm failed: {exc}")
        finally:
            self._record_budget()
        self._admit([(uuid, records.get(uuid)) for uuid in uuids], asked_at=asked_at)
        return None

    def room(self) -> asyncio.Event:
        """Set while admission wants more confirmed jobs: intake holds its next batch until then."""
        return self._admitter.room()

    async def accept(self, records: list[BuildkiteJob]) -> None:
        """Records known to be current (a sweep page): judge them like a confirm's answers."""
        self._admit([(record.uuid.lower(), record) for record in records], asked_at=self._clock())

    async def recheck(self, uuids: list[str]) -> dict[str, str]:
        """For admission: each job's verdict now (``scheduled`` or why not). Raises ``BuildkiteError``."""
        self._metrics.graphql_calls.labels("recheck").inc()
        try:
            records = await self._graphql.confirm_jobs(uuids, with_cluster=self._cluster_uuid is not None)
        finally:
            self._record_budget()
        return {uuid: self._verdict(uuid, records.get(uuid)) for uuid in uuids}

    def _admit(self, answers: list[tuple[str, BuildkiteJob | None]], *, asked_at: float) -> None:
        jobs: list[Job] = []
        verdicts: Counter[str] = Counter()
        for uuid, record in answers:
            verdict = self._verdict(uuid, record)
            verdicts[verdict] += 1
            current = self._book.get(uuid)
            if current is None or current.stage not in {Stage.SEEN, Stage.CONFIRMING}:
                continue  # cancelled or its pod showed up meanwhile
            if verdict != SCHEDULED or record is None:
                job_log(log, uuid, stage="confirm").info("dropped: %s", verdict)
                self._book.end(uuid, Stage.DROPPED, "confirm", verdict)
                continue
            self._book.confirmed(uuid, at=asked_at)
            self._book.move(uuid, Stage.QUEUED, "confirmed", f"scheduled, priority {record.priority}")
            jobs.append(to_job(record))
        for verdict, count in verdicts.items():  # one labels() lookup per verdict, not per job
            self._metrics.jobs_confirmed.labels(verdict).inc(count)
        if jobs:
            self._admitter.enqueue(jobs)

    def _verdict(self, uuid: str, record: BuildkiteJob | None) -> str:
        current = self._book.get(uuid)
        if current is not None and current.cancelled:
            return "cancelled"
        if record is None:
            return "unknown"
        if record.state != SCHEDULED:
            return f"state_{record.state}"
        if not self._tags.matches_rules(record.agent_query_rules):
            return "not_our_tags"
        other_cluster = cluster_mismatch(record, self._cluster_uuid)
        if other_cluster is not None:
            job_log(log, uuid, stage="confirm").info("not our cluster: %s", other_cluster)
            return "not_our_cluster"
        return SCHEDULED

    def _record_budget(self) -> None:
        budget = self._graphql.budget
        remaining = budget.remaining if budget is not None else None
        if remaining is not None:
            self._metrics.graphql_budget.set(remaining)
