"""Intake: where job UUIDs from webhooks and the sweep meet, are de-duplicated and micro-batched.

Input: ``submit(uuid)`` from the webhook route, ``submit_confirmed(records)`` from the sweep (its
GraphQL answer already holds the job data). Output: batches of ≤100 UUIDs to ``confirm``, and
confirmed records straight to ``confirm.accept`` for the sweep's jobs.

A UUID stays known from its first sighting until its pod exists (then the pod watch knows it) or until
it is dropped; a dropped UUID is remembered for a short while so duplicate webhooks cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from app.buildkite.queries import JobRecord
from app.metrics import Metrics

log = logging.getLogger(__name__)

# How long a dropped (not scheduled / not ours / failed) UUID is remembered: duplicate webhooks arrive
# within seconds; after that a fresh confirm is cheap and correct.
DROPPED_TTL_SECONDS = 60.0
# A cancelled job never becomes scheduled again (a retry is a new job with a new UUID); an hour covers
# any late webhook or sweep page that still shows it.
CANCELLED_TTL_SECONDS = 3600.0
SETTLED_STAGES = frozenset({"done", "dropped", "waiting"})
# Confirms in flight at once. While they are busy, new UUIDs pile up and leave as one bigger batch: a
# burst of webhooks costs a few GraphQL requests per hundred jobs, and a trickle still goes out at once.
MAX_CONFIRMS_IN_FLIGHT = 2


@dataclass(slots=True)
class Entry:
    stage: str  # pending | confirming | queued | waiting (for capacity) | creating | done | dropped
    first_seen: float
    from_webhook: bool
    finished_at: float | None = None
    outcome: asyncio.Future[str] | None = field(default=None, repr=False)


class Intake:
    """De-duplicate and batch job UUIDs; ``has_pod(uuid)`` consults the pod watch."""

    def __init__(
        self,
        *,
        batch_size: int,
        window_seconds: float,
        confirm: Callable[[list[str]], Awaitable[None]],
        accept: Callable[[list[JobRecord]], Awaitable[None]],
        has_pod: Callable[[str], bool],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._batch_size = batch_size
        self._window = window_seconds
        self._confirm = confirm
        self._accept = accept
        self._has_pod = has_pod
        self._metrics = metrics
        self._clock = clock
        self.entries: dict[str, Entry] = {}
        self._pending: list[str] = []
        self._cancelled: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._confirm_done = asyncio.Event()

    # --- input ----------------------------------------------------------------------------------------

    def submit(self, uuid: str) -> bool:
        """A webhook announced ``uuid``. False when it is already known (a duplicate)."""
        uuid = uuid.lower()
        if self._is_known(uuid):
            self._metrics.duplicates_avoided.labels("intake").inc()
            return False
        self.entries[uuid] = Entry("pending", self._clock(), from_webhook=True)
        self._pending.append(uuid)
        self._metrics.intake_pending.set(len(self._pending))
        self._wakeup.set()
        return True

    async def submit_confirmed(self, records: Iterable[JobRecord]) -> tuple[list[JobRecord], int]:
        """Sweep results: (records new to us, how many were already known)."""
        fresh: list[JobRecord] = []
        known = 0
        for record in records:
            if self._is_known(record.uuid):
                known += 1
                continue
            self.entries[record.uuid] = Entry("confirming", self._clock(), from_webhook=False)
            fresh.append(record)
        if fresh:
            await self._accept(fresh)
        return fresh, known

    def cancel(self, uuid: str) -> None:
        """The job was cancelled in Buildkite: never create a pod for it, whatever is in flight."""
        uuid = uuid.lower()
        self._cancelled[uuid] = self._clock()
        entry = self.entries.get(uuid)
        if entry is not None and entry.stage in {"pending", "confirming", "queued"}:
            self.mark(uuid, "dropped")

    def is_cancelled(self, uuid: str) -> bool:
        return uuid in self._cancelled

    # --- bookkeeping used by the later stages ---------------------------------------------------------

    def mark(self, uuid: str, stage: str) -> None:
        entry = self.entries.get(uuid)
        if entry is None:
            entry = self.entries[uuid] = Entry(stage, self._clock(), from_webhook=False)
        entry.stage = stage
        if stage in {"done", "dropped"}:
            entry.finished_at = self._clock()
        if stage in SETTLED_STAGES and entry.outcome is not None and not entry.outcome.done():
            entry.outcome.set_result(stage)

    def outcome(self, uuid: str) -> asyncio.Future[str]:
        """Resolves to ``done``, ``dropped`` or ``waiting`` (for capacity) once the job's fate is known."""
        entry = self.entries[uuid]
        if entry.outcome is None:
            entry.outcome = asyncio.get_running_loop().create_future()
            if entry.stage in SETTLED_STAGES:
                entry.outcome.set_result(entry.stage)
        return entry.outcome

    def announced(self, uuid: str) -> bool:
        entry = self.entries.get(uuid)
        return bool(entry and entry.from_webhook)

    def _is_known(self, uuid: str) -> bool:
        if uuid in self._cancelled:
            return True
        entry = self.entries.get(uuid)
        if entry is not None:
            if entry.stage not in {"done", "dropped"}:
                return True
            if self._clock() - (entry.finished_at or 0) <= DROPPED_TTL_SECONDS:
                return True
        return self._has_pod(uuid)

    def forget_finished(self) -> None:
        """Drop bookkeeping older than its usefulness (called periodically)."""
        now = self._clock()
        for uuid, entry in list(self.entries.items()):
            if entry.stage in {"done", "dropped"} and now - (entry.finished_at or now) > DROPPED_TTL_SECONDS:
                del self.entries[uuid]
        for uuid, when in list(self._cancelled.items()):
            if now - when > CANCELLED_TTL_SECONDS:
                del self._cancelled[uuid]

    # --- the batching loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: wait for UUIDs, gather for a few ms (or a full batch), hand the batch to confirm."""
        while True:
            await self._wakeup.wait()
            if len(self._pending) < self._batch_size and self._window > 0:
                await asyncio.sleep(self._window)
            await self._confirm_slot()
            batch, self._pending = self._pending[: self._batch_size], self._pending[self._batch_size :]
            if not self._pending:
                self._wakeup.clear()
            self._metrics.intake_pending.set(len(self._pending))
            batch = [uuid for uuid in batch if uuid not in self._cancelled]
            for uuid in batch:
                self.mark(uuid, "confirming")
            if batch:
                task = asyncio.create_task(self._confirm_guarded(batch))
                self._tasks.add(task)
                task.add_done_callback(self._confirm_finished)

    async def _confirm_guarded(self, batch: list[str]) -> None:
        try:
            await self._confirm(batch)
        except Exception:
            # Left in "confirming", these UUIDs would count as known forever and never get a pod.
            # Dropped, they are forgotten after a while and the sweep picks them up again.
            log.exception("confirming %d jobs crashed; the sweep will pick them up", len(batch))
            for uuid in batch:
                self.mark(uuid, "dropped")

    async def _confirm_slot(self) -> None:
        while len(self._tasks) >= MAX_CONFIRMS_IN_FLIGHT:
            self._confirm_done.clear()
            await self._confirm_done.wait()

    def _confirm_finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._confirm_done.set()

    def requeue(self, uuids: Iterable[str]) -> None:
        """Confirm failed for a transient reason: try these again with the next batch."""
        for uuid in uuids:
            if uuid not in self._cancelled:
                self.mark(uuid, "pending")
                self._pending.append(uuid)
        self._wakeup.set()
