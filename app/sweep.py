"""Sweep: the reconcile pass that catches what webhooks lose.

Input: a timer (every ``interval_seconds``; every ``busy_interval_seconds`` while the last sweep found
jobs no webhook announced), the boot, and ``POST /reconcile``. Output: confirmed records into
``intake.submit_confirmed`` — the sweep's GraphQL query already carries each job's env, so no second
confirm is needed. Webhooks are the latency path; the sweep is the correctness path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from app.buildkite.graphql import GraphQLClient
from app.buildkite.queries import JobRecord, cluster_mismatch
from app.errors import BuildkiteError
from app.intake import Intake
from app.jobs import ENDED, JobBook, Stage
from app.metrics import Metrics
from app.settings import SweepSettings
from app.tags import ControllerTags
from app.waiting import wait_set

log = logging.getLogger(__name__)

# How long POST /reconcile waits for the pods of the jobs it found before it answers.
RECONCILE_WAIT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SweepSummary:
    seen: int = 0  # scheduled jobs Buildkite listed for our queues
    already_known: int = 0  # jobs we already had a pod for, or were handling
    filtered: int = 0  # listed, but not ours (tags, cluster) or no longer scheduled
    other_cluster: int = 0  # of those, jobs of another cluster (Buildkite's cluster filter let them by)
    queued: int = 0  # new to us: handed to admission
    created: int = 0  # of those, pods that exist by the time the summary was made
    waiting: int = 0  # of those, jobs waiting for max-in-flight to allow their pod
    unannounced: int = 0  # new to us and never announced by a webhook
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Sweeper:
    def __init__(
        self,
        *,
        graphql: GraphQLClient,
        org: str,
        tags: ControllerTags,
        intake: Intake,
        book: JobBook,
        settings: SweepSettings,
        metrics: Metrics,
        is_leader: Callable[[], bool] = lambda: True,
        capacity_full: Callable[[], bool] = lambda: False,
        cluster_uuid: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # cluster_uuid: list only this Buildkite cluster's jobs (None: every cluster's, as before).
        self._cluster_uuid = cluster_uuid
        self._graphql = graphql
        self._org = org
        self._tags = tags
        self._intake = intake
        self._book = book
        self._settings = settings
        self._metrics = metrics
        self._is_leader = is_leader
        self._capacity_full = capacity_full
        self._lock = asyncio.Lock()
        self._trigger = asyncio.Event()
        self.last: SweepSummary | None = None
        self.last_at: float | None = None  # unix time ``last`` was made, for the status page
        self._wall = wall_clock

    def trigger(self) -> None:
        self._trigger.set()

    async def run(self) -> None:
        """At boot, then every interval (shorter while webhooks seem to miss jobs); leader only."""
        while True:
            self._trigger.clear()  # a trigger that came before this sweep is answered by it
            if self._is_leader():
                await self.sweep(trigger="timer")
            interval = self._settings.interval_seconds
            if self.last is not None and self.last.unannounced:
                interval = min(interval, self._settings.busy_interval_seconds)
            await wait_set(self._trigger, interval)

    async def sweep(self, *, trigger: str, wait_seconds: float = 0) -> SweepSummary:
        """One pass over every queue we serve. Concurrent calls share one pass at a time."""
        async with self._lock:
            self._metrics.sweeps.labels(trigger).inc()
            try:
                records = await self._scheduled_jobs()
            except BuildkiteError as exc:
                self._metrics.graphql_errors.labels("sweep").inc()
                log.warning("sweep failed: %s", exc)
                self.last, self.last_at = SweepSummary(error=str(exc)), self._wall()
                return self.last
            summary = await self._hand_over(records, wait_seconds=wait_seconds)
            self.last, self.last_at = summary, self._wall()
            log.info("sweep (%s): %s", trigger, summary.as_dict())
            return summary

    async def _scheduled_jobs(self) -> list[JobRecord]:
        found: dict[str, JobRecord] = {}
        for rules in self._tags.sweep_rules():
            self._metrics.graphql_calls.labels("sweep").inc()
            for record in await self._graphql.scheduled_jobs(
                org=self._org,
                agent_query_rules=rules,
                page_size=self._settings.page_size,
                max_pages=self._settings.max_pages,
                cluster_uuid=self._cluster_uuid,
            ):
                found.setdefault(record.uuid, record)
        return list(found.values())

    async def _hand_over(self, records: list[JobRecord], *, wait_seconds: float) -> SweepSummary:
        in_cluster = [r for r in records if cluster_mismatch(r, self._cluster_uuid) is None]
        if len(in_cluster) < len(records):
            # The query asked Buildkite for our cluster only, so this is Buildkite's filter failing.
            log.warning("sweep: dropped %d jobs of other clusters", len(records) - len(in_cluster))
        ours = [
            r for r in in_cluster if r.state == "scheduled" and self._tags.matches_rules(r.agent_query_rules)
        ]
        fresh, known = await self._intake.submit_confirmed(ours)
        unannounced = len(fresh)  # a webhook-announced job would already be known
        if unannounced:
            self._metrics.sweep_unannounced.inc(unannounced)
            log.warning("sweep found %d scheduled jobs that no webhook announced", unannounced)
        created, waiting = await self._count_created(fresh, wait_seconds) if wait_seconds > 0 else (0, 0)
        return SweepSummary(
            seen=len(records),
            already_known=known,
            filtered=len(records) - len(ours),
            other_cluster=len(records) - len(in_cluster),
            queued=len(fresh),
            created=created,
            waiting=waiting,
            unannounced=unannounced,
        )

    async def _count_created(self, fresh: list[JobRecord], wait_seconds: float) -> tuple[int, int]:
        """Wait (bounded) until each job has its pod, has ended, or waits for max-in-flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            created = waiting = unsettled = 0
            for record in fresh:
                job = self._book.get(record.uuid)
                stage = job.stage if job is not None else Stage.DROPPED
                if stage is Stage.CREATED:
                    created += 1
                elif stage is Stage.QUEUED and self._capacity_full():
                    waiting += 1
                elif stage not in ENDED:
                    unsettled += 1
            remaining = deadline - loop.time()
            if not unsettled or remaining <= 0:
                return created, waiting
            await self._book.next_change(timeout=remaining)
