"""Admit: confirmed jobs wait here, highest Buildkite priority first, until max-in-flight allows a pod.

Input: ``podspec.Job`` values from ``confirm``. Output: one ``create(job)`` call per admitted job;
it returns whether the job's pod now exists.
In flight is *derived*, never counted up and down: the unfinished pods the watch sees, plus creates
running now, plus pods created but not yet seen by the watch. A counter that misses one decrement
leaks forever (agent-stack-k8s #302); a set recomputed from the cluster cannot.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from app.metrics import Metrics
from podspec.job import Job

log = logging.getLogger(__name__)

# A pod we created shows up in the watch within milliseconds; if it never does (deleted in between and
# the watch re-listed), stop counting it after this long.
UNSEEN_EXPIRY_SECONDS = 60.0


def free_slots(*, in_flight: int, limit: int) -> int | None:
    """How many more pods may start now; None means no limit."""
    if limit == 0:
        return None
    return max(0, limit - in_flight)


@dataclass(order=True, slots=True)
class _Queued:
    sort_key: tuple[int, int]
    job: Job = field(compare=False)


class Admitter:
    def __init__(
        self,
        *,
        max_in_flight: int,
        concurrency: int,
        create: Callable[[Job], Awaitable[bool]],
        live_pods: Callable[[], Iterable[str]],
        metrics: Metrics,
        on_waiting: Callable[[str], None] = lambda uuid: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = max_in_flight
        self._create = create
        self._live_pods = live_pods
        self._metrics = metrics
        self._on_waiting = on_waiting
        self._clock = clock
        # Creates run at most this many at once; the rest wait in the heap, in priority order, so a
        # burst never becomes thousands of parked tasks (and shutdown has little to wait for).
        self._concurrency = concurrency
        self._heap: list[_Queued] = []
        self._queued: set[str] = set()
        self._creating: set[str] = set()
        self._unseen: dict[str, float] = {}
        self._seen_while_creating: set[str] = set()
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        metrics.max_in_flight.set(max_in_flight)

    async def enqueue(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            if job.uuid in self._queued or job.uuid in self._creating:
                self._metrics.duplicates_avoided.labels("admit").inc()
                continue
            self._queued.add(job.uuid)
            heapq.heappush(self._heap, _Queued((-job.priority, next(self._seq)), job))
        self._metrics.queue_depth.set(len(self._heap))
        self._wakeup.set()

    def discard(self, uuid: str) -> None:
        """Forget a queued job (it was cancelled); it is skipped when it reaches the head."""
        self._queued.discard(uuid)

    def pod_changed(self, uuid: str | None) -> None:
        """The watch saw a pod change: it is no longer unseen, and it may have finished, freeing a slot.

        Any sighting counts, even a finished or deleted pod: from then on the watch accounts for it.
        """
        if uuid is not None:
            self._unseen.pop(uuid, None)
            if uuid in self._creating:
                self._seen_while_creating.add(uuid)  # the watch beat the create's own response
        self._wakeup.set()

    def in_flight(self) -> int:
        live = set(self._live_pods())
        now = self._clock()
        for uuid, created_at in list(self._unseen.items()):
            if now - created_at > UNSEEN_EXPIRY_SECONDS:
                del self._unseen[uuid]
        count = len(live | self._creating | self._unseen.keys())
        self._metrics.in_flight.set(count)
        return count

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._admit_ready()

    def _admit_ready(self) -> None:
        if self._draining:
            return
        slots = free_slots(in_flight=self.in_flight(), limit=self._limit)
        while self._heap and (slots is None or slots > 0) and len(self._creating) < self._concurrency:
            job = heapq.heappop(self._heap).job
            if job.uuid not in self._queued:
                continue  # discarded while queued
            self._queued.discard(job.uuid)
            self._creating.add(job.uuid)
            task = asyncio.create_task(self._run_create(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if slots is not None:
                slots -= 1
        if slots == 0:  # max-in-flight, not create concurrency, holds the rest back
            for queued in self._heap:
                if queued.job.uuid in self._queued:
                    self._on_waiting(queued.job.uuid)
        self._metrics.queue_depth.set(len(self._heap))

    async def _run_create(self, job: Job) -> None:
        exists = False
        try:
            exists = await self._create(job)
        finally:
            self._creating.discard(job.uuid)
            if exists and job.uuid not in self._seen_while_creating:
                self._unseen[job.uuid] = self._clock()
            self._seen_while_creating.discard(job.uuid)
            self._wakeup.set()

    async def drain(self, *, timeout: float) -> None:
        """Stop admitting; give the creates already running ``timeout`` seconds, then cancel them.

        A cancelled create is not lost: its job is still ``scheduled`` in Buildkite, and the next
        leader's sweep (or this replica's, after a restart) picks it up; the pod name keeps it single.
        """
        self._draining = True
        running = [task for task in self._tasks if not task.done()]
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def requeue(self, job: Job) -> None:
        """A create failed for a reason that may pass (quota, API overload): queue the job again."""
        self._unseen.pop(job.uuid, None)
        heapq.heappush(self._heap, _Queued((-job.priority, next(self._seq)), job))
        self._queued.add(job.uuid)
        self._metrics.queue_depth.set(len(self._heap))
        self._wakeup.set()
