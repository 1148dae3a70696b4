"""Intake: job UUIDs from webhooks, the sweep and followers meet here, once each, and leave in batches.

Input: ``submit(uuid, source)`` (webhook route, relay route) and ``submit_confirmed(records)`` (the sweep,
whose GraphQL answer already holds the job data). Output, on the leader: batches of ≤100 UUIDs to
``Confirmer.confirm`` and the sweep's records to ``Confirmer.accept``; on a follower: batches to the
``Relay``, which posts them to the leader. Only the leader confirms, admits and creates, so the
in-flight limit and priority order are cluster-wide and a job is never created by two replicas.

Batching is natural, not timed: a UUID that arrives while no batch is out leaves at once; UUIDs that
arrive while one is out leave together as the next batch. On the leader a batch also waits while
admission already holds a backlog of confirmed jobs (``ConfirmStage.room``): in a burst, creates are
the bottleneck, so jobs gather here into large batches instead of being confirmed in small ones only to
wait there. A burst costs about one request per hundred jobs; a trickle pays no waiting window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from app.buildkite.queries import JobRecord as BuildkiteJob
from app.jobs import JobBook, Stage, is_uuid, normalise
from app.metrics import Metrics
from app.waiting import first_set

log = logging.getLogger(__name__)

# Undelivered relays and failed confirms wait this long (doubling to the maximum) before another try.
RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
# A follower that cannot reach any leader keeps at most this many UUIDs; past it the oldest are left
# to the leader's sweep (a webhook is never answered with an error for it: it was verified and parsed).
MAX_PENDING = 50_000


class Retry:
    """A batch's work could not be done now: try these UUIDs again after ``after`` seconds."""

    __slots__ = ("after", "escalate", "reason", "uuids")

    def __init__(self, uuids: list[str], *, after: float, reason: str, escalate: bool = True) -> None:
        self.uuids = uuids
        self.after = after
        self.reason = reason
        # False: a short, expected wait (no leader elected yet), not a failure to back off from.
        self.escalate = escalate


class ConfirmStage(Protocol):
    async def confirm(self, uuids: list[str]) -> Retry | None: ...
    def room(self) -> asyncio.Event: ...
    async def accept(self, records: list[BuildkiteJob]) -> None: ...


class RelayStage(Protocol):
    async def forward(self, uuids: list[str]) -> Retry | None: ...


class Intake:
    def __init__(
        self,
        *,
        book: JobBook,
        confirmer: ConfirmStage,
        relay: RelayStage,
        is_leader: Callable[[], bool],
        batch_size: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._book = book
        self._confirmer = confirmer
        self._relay = relay
        self._is_leader = is_leader
        self._batch_size = batch_size
        self._metrics = metrics
        self._duplicates = metrics.duplicates_avoided.labels("intake")  # resolved once: it is per webhook
        self._clock = clock
        self._sleep = sleep  # only a retry's back-off waits: the idle path has no timer
        self._pending: dict[str, None] = {}  # insertion-ordered set of UUIDs for the next batch
        metrics.intake_pending.set_function(self.pending)  # read when scraped, not set per webhook
        self._not_before = 0.0  # after a failed batch: no new batch before this (monotonic)
        self._failures = 0
        self._retry_now = asyncio.Event()
        self._wakeup = asyncio.Event()

    # --- input ----------------------------------------------------------------------------------------

    def submit(self, uuid: str, *, source: str = "webhook") -> bool:
        """A webhook (or a follower's relay of one) named ``uuid``. False for a duplicate or a non-UUID."""
        key = normalise(uuid)
        if not is_uuid(key):
            return False
        if not self._book.sighted(key, source=source):
            self._duplicates.inc()
            return False
        self._enqueue([key])
        return True

    async def submit_confirmed(self, records: Iterable[BuildkiteJob]) -> tuple[list[BuildkiteJob], int]:
        """Sweep results, already known scheduled: (records new to us, how many were known)."""
        fresh: list[BuildkiteJob] = []
        known = 0
        for record in records:
            key = normalise(record.uuid)
            if self._book.sighted(key, source="sweep", still_scheduled=True):
                fresh.append(record)
            else:
                known += 1
        if not fresh:
            return fresh, known
        if self._is_leader():
            await self._confirmer.accept(fresh)
        else:  # a follower's POST /reconcile: the leader confirms and creates
            self._enqueue([normalise(record.uuid) for record in fresh])
        return fresh, known

    def take_back(self, uuids: list[str]) -> None:
        """Jobs admission gave up when this replica stopped leading: they go out again with the next
        batch — to the new leader, or to confirm if this replica leads again."""
        self._enqueue(uuid for uuid in uuids if self._still_waiting(uuid))

    def pending(self) -> int:
        return len(self._pending)

    def _enqueue(self, uuids: Iterable[str]) -> None:
        for key in uuids:
            self._pending[key] = None
        while len(self._pending) > MAX_PENDING:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self._book.end(oldest, Stage.DROPPED, "intake", "intake full; left to the leader's sweep")
        self._wakeup.set()

    # --- the batching loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: one batch out at a time; whatever arrived meanwhile is the next batch."""
        while True:
            await self._wakeup.wait()
            delay = self._not_before - self._clock()
            if delay > 0:
                await self._back_off(delay)
            if self._is_leader() and not self._confirmer.room().is_set():
                # Cleared in this same turn as the check: a leadership change after it still wakes us.
                self._retry_now.clear()
                await first_set(self._confirmer.room(), self._retry_now)
                continue  # leadership may have changed meanwhile: decide again
            batch = self._take_batch()
            if not batch:
                continue
            retry = await self._send(batch)
            if retry is None:
                self._failures = 0
                continue
            if retry.escalate:
                self._failures += 1
                self._not_before = self._clock() + min(
                    MAX_RETRY_SECONDS, max(retry.after, RETRY_SECONDS * 2 ** (self._failures - 1))
                )
                log.warning("%d jobs not handed on (%s); retrying", len(retry.uuids), retry.reason)
            else:
                self._not_before = self._clock() + retry.after
            self._enqueue(uuid for uuid in retry.uuids if self._still_waiting(uuid))

    def retry_now(self) -> None:
        """Leadership changed: whatever waits out a back-off goes now, to its new destination."""
        self._failures = 0
        self._not_before = 0.0
        self._retry_now.set()
        if self._pending:
            self._wakeup.set()

    async def _back_off(self, delay: float) -> None:
        self._retry_now.clear()
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._retry_now.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()

    def _take_batch(self) -> list[str]:
        batch: list[str] = []
        for key in list(self._pending):
            if len(batch) >= self._batch_size:
                break
            del self._pending[key]
            if self._still_waiting(key):
                batch.append(key)
        if not self._pending:
            self._wakeup.clear()
        return batch

    def _still_waiting(self, key: str) -> bool:
        record = self._book.get(key)
        return record is not None and record.stage in {Stage.SEEN, Stage.CONFIRMING}

    async def _send(self, batch: list[str]) -> Retry | None:
        """To confirm on the leader, to the leader from a follower. A crash keeps the batch for a retry."""
        try:
            if self._is_leader():
                for key in batch:
                    self._book.move(key, Stage.CONFIRMING, "confirm", f"batch of {len(batch)}")
                retry = await self._confirmer.confirm(batch)
            else:
                retry = await self._relay.forward(batch)
        except Exception as exc:
            log.exception("handing on %d jobs crashed; retrying", len(batch))
            retry = Retry(batch, after=RETRY_SECONDS, reason=f"{type(exc).__name__}")
        if retry is not None:
            for key in retry.uuids:
                record = self._book.get(key)
                if record is not None and record.stage is Stage.CONFIRMING:
                    self._book.move(key, Stage.SEEN, "retry", retry.reason)
        return retry
