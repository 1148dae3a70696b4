"""Admit: confirmed jobs wait here, highest Buildkite priority first, until max-in-flight allows a pod.

Input: ``podspec.Job`` values from ``confirm`` (leader only). Output: ``Creator.create`` calls, whose
outcomes this stage alone acts on: ``Created``/``Exists`` → the job has its pod; ``Retry`` → back in
line after the delay (a quota refusal only until the quota deadline, then failed with the quota's
message); ``Failed`` → the job is failed in Buildkite with the message.

Only the leader admits, so max-in-flight is one cluster-wide limit and priority holds across replicas.
In flight is *derived*, never counted up and down: the unfinished pods the watch sees, plus creates
running now, plus pods created but not yet seen by the watch. A counter that misses one decrement
leaks forever (agent-stack-k8s #302); a count recomputed from the cluster cannot.

Back-pressure: while creates, not the in-flight limit, are what holds jobs here, ``room`` stays clear
once ``backlog`` confirmed jobs wait, and intake holds further confirms until it is set again. A
trickle is confirmed at once (the queue is empty); a burst is confirmed in a few large batches just
ahead of its creates, instead of hundreds of small ones whose answers would only wait here.

Zero duplicates: a job is created only while its record is ``queued`` (a pod sighting moves it on),
no pod of it was ever seen here (the book's tombstones), and Buildkite confirmed it ``scheduled``
at most ``reconfirm_after_seconds`` ago — an older confirmation is re-checked in one batched query.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.create import Created, CreateOutcome, Exists, Failed, Retry
from app.errors import BuildkiteError
from app.jobs import JobBook, Stage
from app.logs import job_log
from app.metrics import Metrics
from app.waiting import wait_set
from podspec.job import Job

log = logging.getLogger(__name__)

# A pod we created shows up in the watch within milliseconds; if it never does (deleted in between and
# the watch re-listed), stop counting it after this long.
UNSEEN_EXPIRY_SECONDS = 60.0
# A confirmation older than this is asked again before the create: a job that waited for capacity may
# have been cancelled, or taken by another agent, meanwhile. Webhook jobs are created well within it.
RECONFIRM_AFTER_SECONDS = 30.0
# A failed re-check (Buildkite down) is tried again after this long.
RECHECK_RETRY_SECONDS = 5.0
MAX_RECHECK_BATCH = 100


def free_slots(*, in_flight: int, limit: int) -> int | None:
    """How many more pods may start now; None means no limit."""
    if limit == 0:
        return None
    return max(0, limit - in_flight)


class CreateStage(Protocol):
    async def create(self, job: Job, *, attempt: int = 1) -> CreateOutcome: ...


class RecheckStage(Protocol):
    async def recheck(self, uuids: list[str]) -> dict[str, str]: ...


class FailStage(Protocol):
    # app.fail.JobFailer answers with a FailOutcome, a StrEnum: compared by its value.
    async def fail(
        self, uuid: str, *, reason: str, message: str, detected_at: float | None = None
    ) -> str: ...


@dataclass(order=True, slots=True)
class _Queued:
    sort_key: tuple[float, int]
    job: Job = field(compare=False)


class Admitter:
    def __init__(
        self,
        *,
        book: JobBook,
        creator: CreateStage,
        recheck: RecheckStage,
        failer: FailStage,
        live_pods: Callable[[], int],
        max_in_flight: int,
        concurrency: int,
        quota_deadline_seconds: float,
        metrics: Metrics,
        is_leader: Callable[[], bool] = lambda: True,
        reconfirm_after_seconds: float = RECONFIRM_AFTER_SECONDS,
        backlog: int = 100,
        hand_over: Callable[[list[str]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._book = book
        self._creator = creator
        self._recheck = recheck
        self._failer = failer
        self._live_pods = live_pods
        self._limit = max_in_flight
        # Creates run at most this many at once; the rest wait in the heap, in priority order, so a
        # burst never becomes thousands of parked tasks (and shutdown has little to wait for).
        self._concurrency = concurrency
        self._quota_deadline = quota_deadline_seconds
        self._metrics = metrics
        self._is_leader = is_leader
        self._reconfirm_after = reconfirm_after_seconds
        # Where queued jobs go when this replica stops leading: intake, which relays them to the new
        # leader (or confirms them again if leadership comes back). None: they end handed_over and the
        # next leader's sweep finds them.
        self._hand_over_to = hand_over
        self._clock = clock
        self._ready: list[_Queued] = []  # by priority
        self._later: list[_Queued] = []  # by time: retries waiting out their delay
        self._seq = itertools.count()
        self._creating: dict[str, asyncio.Task[None]] = {}
        self._seen_while_creating: set[str] = set()  # the watch beat the create's own answer
        self._unseen: dict[str, float] = {}  # created, not yet seen by the watch
        self._rechecking: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._backlog = backlog
        self._room = asyncio.Event()
        self._room.set()
        self._draining = False
        metrics.max_in_flight.set(max_in_flight)

    # --- input ----------------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._push(job)
        self._queue_changed()
        self._wakeup.set()

    def pod_changed(self, uuid: str | None) -> None:
        """The watch saw a pod change: it is no longer unseen, and it may have finished, freeing a slot."""
        if uuid is not None:
            uuid = uuid.lower()
            self._unseen.pop(uuid, None)
            if uuid in self._creating:
                self._seen_while_creating.add(uuid)
        self._wakeup.set()

    def leadership_changed(self, leading: bool) -> None:
        """A replica that stops leading hands its queue over (``hand_over``): nothing waits here for a
        leadership that may not come back, and nothing is created by two replicas."""
        if not leading:
            self._hand_over("leadership lost")
        self._wakeup.set()

    def _hand_over(self, why: str) -> None:
        uuids: list[str] = []
        for entry in (*self._ready, *self._later):
            record = self._book.get(entry.job.uuid)
            if record is None or record.stage is not Stage.QUEUED:
                continue
            if self._hand_over_to is None:
                self._book.end(entry.job.uuid, Stage.HANDED_OVER, "admit", why)
            else:
                self._book.move(entry.job.uuid, Stage.SEEN, "admit", f"{why}: back to intake")
                uuids.append(entry.job.uuid)
        if uuids and self._hand_over_to is not None:
            self._hand_over_to(uuids)
        self._ready.clear()
        self._later.clear()
        self._queue_changed()

    # --- reading --------------------------------------------------------------------------------------

    def queued(self) -> int:
        return len(self._ready) + len(self._later)

    def room(self) -> asyncio.Event:
        """Set while more confirmed jobs are wanted (see the module's "Back-pressure")."""
        return self._room

    def _queue_changed(self) -> None:
        self._metrics.queue_depth.set(self.queued())
        # At the in-flight limit jobs wait for pods to finish, not for creates: they keep coming
        # confirmed, so the highest priority among all of them is created first (and a job that is no
        # longer scheduled leaves at once). Their confirmations go stale meanwhile; see ``admit_ready``.
        if len(self._ready) < self._backlog or self.is_full():
            self._room.set()
        else:
            self._room.clear()

    def in_flight(self) -> int:
        now = self._clock()
        for uuid, created_at in list(self._unseen.items()):
            if now - created_at > UNSEEN_EXPIRY_SECONDS:
                del self._unseen[uuid]
        creating = len(self._creating) - len(self._seen_while_creating)
        count = self._live_pods() + creating + len(self._unseen)
        self._metrics.in_flight.set(count)
        return count

    def sizes(self) -> dict[str, int]:
        """How much admission holds (a memory test reads it)."""
        return {
            "ready": len(self._ready),
            "later": len(self._later),
            "creating": len(self._creating),
            "seen_while_creating": len(self._seen_while_creating),
            "unseen": len(self._unseen),
        }

    def is_full(self) -> bool:
        return self._limit > 0 and self.in_flight() >= self._limit

    @property
    def limit(self) -> int:
        return self._limit

    # --- the loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            self.admit_ready()
            timeout = None
            if self._later and not self._draining:  # draining admits nothing: no timer to spin on
                timeout = max(0.0, self._later[0].sort_key[0] - self._clock())
            await wait_set(self._wakeup, timeout)

    def admit_ready(self) -> None:
        if not self._is_leader():
            # A retry or re-check that settled after leadership was lost lands here: hand it over too,
            # or it would wait in this follower's queue, and its record stay active, until it leads again.
            self._hand_over("not the leader")
            return
        if self._draining:
            return
        now = self._clock()
        while self._later and self._later[0].sort_key[0] <= now:
            self._push(heapq.heappop(self._later).job)
        slots = free_slots(in_flight=self.in_flight(), limit=self._limit)
        stale: list[Job] = []
        deferred: list[Job] = []  # stale, while a re-check is already out: back in line unchanged
        while self._ready and (slots is None or slots > 0) and len(self._creating) < self._concurrency:
            job = heapq.heappop(self._ready).job
            record = self._book.get(job.uuid)
            if record is None or record.stage is not Stage.QUEUED or self._book.pod_ever_seen(job.uuid):
                continue  # cancelled, ended, or its pod showed up: nothing to create
            if record.cancelled:
                self._book.end(job.uuid, Stage.CANCELLED, "admit", "cancelled while queued")
                continue
            if self._book.confirmation_age(job.uuid) > self._reconfirm_after:
                if self._rechecking is None and len(stale) < MAX_RECHECK_BATCH:
                    stale.append(job)
                    continue
                deferred.append(job)
                if len(deferred) >= MAX_RECHECK_BATCH:
                    break  # a pass costs O(batch), not O(queue), however many are stale
                continue
            self._start_create(job)
            if slots is not None:
                slots -= 1
        for job in deferred:
            self._push(job)
        if stale:
            self._start_recheck(stale)
        self._queue_changed()

    # --- creating -------------------------------------------------------------------------------------

    def _start_create(self, job: Job) -> None:
        record = self._book.move(job.uuid, Stage.CREATING, "create", f"in flight {self.in_flight()}")
        record.attempts += 1
        self._creating[job.uuid] = asyncio.create_task(self._create(job, record.attempts))

    async def _create(self, job: Job, attempt: int) -> None:
        try:
            outcome = await self._creator.create(job, attempt=attempt)
            await self._settle(job, outcome)
        except Exception as exc:  # a bug must not strand the job: it goes back in line
            log.exception("create of %s crashed", job.uuid)
            await self._settle(job, Retry(5.0, f"internal error {type(exc).__name__}"))
        finally:
            self._creating.pop(job.uuid, None)
            self._seen_while_creating.discard(job.uuid)
            self._wakeup.set()

    async def _settle(self, job: Job, outcome: CreateOutcome) -> None:
        record = self._book.get(job.uuid)
        if record is None:
            return
        match outcome:
            case Created() | Exists():
                if job.uuid not in self._seen_while_creating:
                    self._unseen[job.uuid] = self._clock()
                if record.stage is Stage.CREATING:
                    what = "created" if isinstance(outcome, Created) else "exists"
                    self._book.move(job.uuid, Stage.CREATED, what, outcome.pod)
                else:
                    self._book.note(
                        job.uuid, "created" if isinstance(outcome, Created) else "exists", outcome.pod
                    )
            case Retry():
                await self._retry(job, outcome)
            case Failed():
                await self._fail(job, outcome.reason, outcome.message)

    async def _retry(self, job: Job, retry: Retry) -> None:
        record = self._book.get(job.uuid)
        if record is None or record.stage is not Stage.CREATING:
            return
        if record.cancelled:
            self._book.end(
                job.uuid, Stage.CANCELLED, "admit", f"cancelled; create had failed: {retry.reason}"
            )
            return
        now = self._clock()
        if retry.quota:
            first = record.quota_refused_at = record.quota_refused_at or now
            if now - first >= self._quota_deadline:
                await self._fail(
                    job,
                    "quota",
                    f"Kubernetes refused the pod for this job for {now - first:.0f} s because of a resource "
                    f"quota; giving up. Last refusal: {retry.reason}",
                )
                return
        jlog = job_log(log, job.uuid, stage="admit")
        jlog.warning("create refused (%s); retrying in %.1f s", retry.reason, retry.after)
        self._book.move(job.uuid, Stage.QUEUED, "retry", f"in {retry.after:.1f} s: {retry.reason}")
        heapq.heappush(self._later, _Queued((now + retry.after, next(self._seq)), job))

    async def _fail(self, job: Job, reason: str, message: str) -> None:
        self._book.note(job.uuid, "failing", reason)
        try:
            outcome = await self._failer.fail(job.uuid, reason=reason, message=message)
        except Exception:
            log.exception("failing %s crashed", job.uuid)
            outcome = "error"
        if _reported(outcome):
            self._book.end(job.uuid, Stage.FAILED, "buildkite", message, outcome=f"failed: {reason}")
        else:
            # Not reported (Buildkite unreachable, or someone else holds the job): the job is still
            # scheduled or in other hands. Dropped, the next sweep tries it again; no pod exists.
            self._book.end(job.uuid, Stage.DROPPED, "buildkite", f"{reason}: report {outcome}")

    # --- re-checking stale confirmations --------------------------------------------------------------

    def _start_recheck(self, jobs: list[Job]) -> None:
        """At most ``MAX_RECHECK_BATCH`` jobs, while no re-check is out (``admit_ready`` sees to both)."""
        for job in jobs:
            self._book.move(job.uuid, Stage.CONFIRMING, "recheck", "confirmation is stale")
        self._rechecking = asyncio.create_task(self._run_recheck(jobs))

    async def _run_recheck(self, jobs: list[Job]) -> None:
        try:
            try:
                verdicts = await self._recheck.recheck([job.uuid for job in jobs])
            except BuildkiteError as exc:
                log.warning("re-check of %d queued jobs failed: %s", len(jobs), exc)
                verdicts = {}
            now = self._clock()
            for job in jobs:
                record = self._book.get(job.uuid)
                if record is None or record.stage is not Stage.CONFIRMING:
                    continue
                verdict = verdicts.get(job.uuid)
                if verdict == "scheduled":
                    self._book.confirmed(job.uuid, at=now)
                    self._book.move(job.uuid, Stage.QUEUED, "confirmed", "still scheduled")
                    self._push(job)
                elif verdict is None:
                    self._book.move(job.uuid, Stage.QUEUED, "recheck", "Buildkite did not answer")
                    heapq.heappush(self._later, _Queued((now + RECHECK_RETRY_SECONDS, next(self._seq)), job))
                else:
                    self._book.end(job.uuid, Stage.DROPPED, "recheck", verdict)
        finally:
            self._rechecking = None
            self._wakeup.set()

    # --- shutdown -------------------------------------------------------------------------------------

    async def drain(self, *, timeout: float) -> None:
        """Stop admitting; give the creates already running ``timeout`` seconds, then cancel them.

        A cancelled create is not lost: its job is still ``scheduled`` in Buildkite, and the next
        leader's sweep (or this replica's, after a restart) picks it up; the pod name keeps it single.
        """
        self._draining = True
        running = [task for task in self._creating.values() if not task.done()]
        if self._rechecking is not None:
            running.append(self._rechecking)
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:  # a cancelled create ends at its next await; a moment is plenty, and nothing waits longer
            await asyncio.wait(pending, timeout=1.0)

    def _push(self, job: Job) -> None:
        heapq.heappush(self._ready, _Queued((-job.priority, next(self._seq)), job))


def _reported(outcome: str) -> bool:
    """Whether ``JobFailer.fail`` failed the job in Buildkite."""
    return outcome.lower() == "failed"
