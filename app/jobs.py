"""The job book: the one place a replica keeps what it knows about each job.

Every stage reads and moves a job's ``JobRecord`` through ``JobBook``; no stage keeps job state of its
own. A record has one ``Stage`` and moves only along ``TRANSITIONS`` (an illegal move is a bug and
raises), with the time of every move and a trail of what happened, for operators (``GET /jobs/{uuid}``).

    seen ─► confirming ─► queued ─► creating ─► created ─► finished
      │          │           │          │           └────► failed | cancelled
      └──────────┴───────────┴──────────┴─► dropped | cancelled | failed | handed_over

``handed_over`` is a follower's end: it passed the job to the leader. Ended records stay for a while
(duplicate webhooks cost nothing, the trail stays readable), then only a *tombstone* remains for jobs
whose pod this replica's watch ever saw: no job is created twice, even after its pod ran, finished and
was deleted, while a late webhook or sweep page still names it.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from app.buildkite.uuids import is_hyphenated

# Counted from the last sighting of the job's pod (its deletion): long enough for any late webhook or
# stale sweep page to have passed (and agent-stack-k8s' default activeDeadlineSeconds is 6 h), so a job
# whose pod we saw is never created again while Buildkite may still list it.
TOMBSTONE_SECONDS = 6 * 3600.0
# Ended records keep their trail this long (and at most ``max_ended``), for duplicates and operators.
ENDED_KEEP_SECONDS = 600.0
# A trail longer than this keeps its first and last steps: a pod that flaps must not grow it forever.
MAX_TRAIL = 64


class Stage(enum.StrEnum):
    SEEN = "seen"  # announced by a webhook, the sweep or a follower; not yet confirmed
    CONFIRMING = "confirming"  # in a GraphQL confirm
    QUEUED = "queued"  # confirmed scheduled and ours; waiting for a create slot or capacity
    CREATING = "creating"  # pod create sent
    CREATED = "created"  # its pod exists (ours, or AlreadyExists); the lifecycle follows it
    FINISHED = "finished"  # its pod ended and is gone
    FAILED = "failed"  # we failed it in Buildkite (or could not, and gave up: see ``reason``)
    CANCELLED = "cancelled"  # cancelled in Buildkite
    DROPPED = "dropped"  # not scheduled any more, not ours, or unknown to Buildkite
    HANDED_OVER = "handed_over"  # a follower passed it to the leader


ENDED = frozenset({Stage.FINISHED, Stage.FAILED, Stage.CANCELLED, Stage.DROPPED, Stage.HANDED_OVER})
# Before the pod exists; a cancel or a failure can still stop these.
BEFORE_POD = frozenset({Stage.SEEN, Stage.CONFIRMING, Stage.QUEUED, Stage.CREATING})

# Phase names of ``buildkite_controller_phase_seconds`` (seconds from the first sighting).
PHASES: dict[Stage, str] = {Stage.QUEUED: "confirmed", Stage.CREATED: "pod_created"}

TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.SEEN: frozenset(
        {Stage.CONFIRMING, Stage.QUEUED, Stage.CREATED, Stage.DROPPED, Stage.CANCELLED, Stage.HANDED_OVER}
    ),
    Stage.CONFIRMING: frozenset(
        {Stage.SEEN, Stage.QUEUED, Stage.CREATED, Stage.DROPPED, Stage.CANCELLED, Stage.HANDED_OVER}
    ),
    # Back to seen: the replica stopped leading, and its queue goes to whoever leads now (via intake).
    Stage.QUEUED: frozenset(
        {
            Stage.SEEN,
            Stage.CONFIRMING,
            Stage.CREATING,
            Stage.CREATED,
            Stage.DROPPED,
            Stage.CANCELLED,
            Stage.HANDED_OVER,
        }
    ),
    Stage.CREATING: frozenset({Stage.QUEUED, Stage.CREATED, Stage.FAILED, Stage.CANCELLED, Stage.DROPPED}),
    Stage.CREATED: frozenset({Stage.FINISHED, Stage.FAILED, Stage.CANCELLED}),
    # An ended job may be seen again: a pod of it shows up (another replica made it), or a sweep finds
    # it still scheduled after we dropped or handed it over (the only ways back in; see ``sighted``).
    Stage.FINISHED: frozenset({Stage.CREATED}),
    Stage.FAILED: frozenset({Stage.CREATED}),
    Stage.CANCELLED: frozenset({Stage.CREATED}),
    Stage.DROPPED: frozenset({Stage.SEEN, Stage.QUEUED, Stage.CREATED}),
    Stage.HANDED_OVER: frozenset({Stage.SEEN, Stage.QUEUED, Stage.CREATED}),
}


class PhaseTimer(Protocol):
    """Where the seconds from first sighting to each phase go (``Metrics.phase_seconds``)."""

    def observe_phase(self, phase: str, seconds: float) -> None: ...


class IllegalMove(RuntimeError):
    """A stage tried a move the table does not allow: a bug, never a runtime condition."""


def normalise(uuid: str) -> str:
    """The one spelling of a job UUID inside the controller (lower case, hyphenated)."""
    return uuid.strip().lower()


def is_uuid(value: str) -> bool:
    """A job UUID in the hyphenated form (``normalise`` only lower-cases: a key has no other form)."""
    return is_hyphenated(value)


@dataclass(slots=True)
class Step:
    at: float  # unix time
    replica: str
    what: str  # webhook, sweep, relay, confirmed, dropped, queued, waited, created, exists, …
    detail: str = ""


@dataclass(slots=True)
class JobRecord:
    uuid: str
    stage: Stage
    first_seen: float
    stage_since: float
    trail: list[Step] = field(default_factory=list)
    # Set once, when the job ended: why (a short reason code) and the outcome for the status page.
    outcome: str | None = None
    reason: str | None = None
    # When Buildkite last said "scheduled and ours" (monotonic); a create needs it recent enough.
    confirmed_at: float | None = None
    announced: bool = False  # a webhook (or a follower's relay of one) named it
    cancelled: bool = False
    pod_phase: str | None = None
    pod_containers: str = ""  # the containers' states as last noted in the trail
    ended_at: float | None = None  # monotonic
    seen_at: float = 0.0  # monotonic, for the phase timings
    since: dict[Stage, float] = field(default_factory=dict)  # unix time each stage was entered
    # Admission's memory of the job: create attempts so far, and when a quota first refused it.
    attempts: int = 0
    quota_refused_at: float | None = None  # monotonic


class JobBook:
    """Records of every job this replica is handling or handled recently, plus tombstones."""

    def __init__(
        self,
        *,
        replica: str,
        max_ended: int = 1000,
        ended_keep_seconds: float = ENDED_KEEP_SECONDS,
        tombstone_seconds: float = TOMBSTONE_SECONDS,
        timer: PhaseTimer | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.replica = replica
        self._timer = timer
        self._max_ended = max_ended
        self._ended_keep = ended_keep_seconds
        self._tombstone_keep = tombstone_seconds
        self._clock = clock
        self._wall = wall_clock
        self._active: dict[str, JobRecord] = {}
        self._ended: OrderedDict[str, JobRecord] = OrderedDict()  # oldest end first
        self._tombstones: OrderedDict[str, float] = OrderedDict()  # uuid -> pod last seen (monotonic)
        self._change: asyncio.Future[None] | None = None

    # --- reading --------------------------------------------------------------------------------------

    def get(self, uuid: str) -> JobRecord | None:
        key = normalise(uuid)
        return self._active.get(key) or self._ended.get(key)

    def in_flight(self) -> list[JobRecord]:
        return list(self._active.values())

    def recent(self, limit: int) -> list[JobRecord]:
        """Ended jobs, newest first."""
        out: list[JobRecord] = []
        for record in reversed(self._ended.values()):
            if len(out) >= limit:
                break
            out.append(record)
        return out

    def pod_ever_seen(self, uuid: str) -> bool:
        return normalise(uuid) in self._tombstones

    def sizes(self) -> dict[str, int]:
        return {
            "active": len(self._active),
            "ended": len(self._ended),
            "tombstones": len(self._tombstones),
        }

    # --- sightings ------------------------------------------------------------------------------------

    def sighted(self, uuid: str, *, source: str, detail: str = "", still_scheduled: bool = False) -> bool:
        """A webhook, sweep or relay named ``uuid``. True when it is new work for this replica.

        Known active jobs and jobs whose pod we saw are duplicates. An ended record is a duplicate
        too, unless the sighting is a fresh "still scheduled" (a sweep page) of a job we dropped or
        handed over — Buildkite says it still waits, so nobody ran it.
        """
        key = normalise(uuid)
        if key in self._active or key in self._tombstones:
            self._step(self._active.get(key) or self._ended.get(key), source, f"duplicate {detail}".strip())
            return False
        ended = self._ended.get(key)
        if ended is not None:
            retake = still_scheduled and ended.stage in {Stage.DROPPED, Stage.HANDED_OVER}
            if not retake:
                self._step(ended, source, f"duplicate {detail}".strip())
                return False
            self._revive(ended)
            self._move(ended, Stage.SEEN, source, detail)
        else:
            wall = self._wall()
            record = JobRecord(key, Stage.SEEN, first_seen=wall, stage_since=wall, seen_at=self._clock())
            record.since[Stage.SEEN] = wall
            self._active[key] = record
            self._step(record, source, detail)
        record = self._active[key]
        if source in {"webhook", "relay"}:
            record.announced = True
        return True

    def pod_seen(
        self, uuid: str, *, phase: str | None, deleted: bool, detail: str = "", containers: str = ""
    ) -> None:
        """The pod watch saw a pod of ``uuid``: tombstone it, follow its phase, end it when it is gone."""
        key = normalise(uuid)
        now = self._clock()
        # From the last sighting, oldest first: a pod that outlives the TTL still leaves a full one behind.
        self._tombstones[key] = now
        self._tombstones.move_to_end(key)
        record = self.get(key)
        if record is None:
            if deleted:
                return  # a pod we never tracked went away: the tombstone is all we need
            wall = self._wall()
            record = JobRecord(key, Stage.CREATED, first_seen=wall, stage_since=wall)
            record.since[Stage.CREATED] = wall
            self._active[key] = record
            self._step(record, "pod", f"seen {phase or 'Pending'} (created elsewhere or before a restart)")
        elif record.stage is not Stage.CREATED and record.stage not in ENDED:
            self.move(key, Stage.CREATED, "pod", f"seen {phase or 'Pending'}")
        elif record.stage in ENDED and not deleted and record.stage is not Stage.FAILED:
            self._revive(record)
            self._move(record, Stage.CREATED, "pod", f"seen {phase or 'Pending'}")
        if phase and phase != record.pod_phase:
            record.pod_phase = phase
            self._step(record, "pod", f"phase {phase} {detail}".strip())
        if containers and containers != record.pod_containers:
            record.pod_containers = containers
            self._step(record, "containers", containers[:500])
        if deleted and record.stage is Stage.CREATED:
            self.end(key, Stage.CANCELLED if record.cancelled else Stage.FINISHED, "pod", "pod deleted")
        elif deleted:
            self._step(record, "pod", "pod deleted")

    # --- moving ---------------------------------------------------------------------------------------

    def move(self, uuid: str, stage: Stage, what: str, detail: str = "") -> JobRecord:
        """Move an active job to ``stage`` (not an end: use ``end``)."""
        if stage in ENDED:  # it would stay among the active records, never trimmed
            raise IllegalMove(f"job {uuid}: {stage} is an end; use end()")
        record = self._active.get(normalise(uuid))
        if record is None:
            raise IllegalMove(f"job {uuid} is not active (moving to {stage})")
        self._move(record, stage, what, detail)
        return record

    def end(
        self, uuid: str, stage: Stage, what: str, reason: str = "", *, outcome: str | None = None
    ) -> None:
        """End an active job (``stage`` in ``ENDED``); a job already ended only gets the step noted."""
        key = normalise(uuid)
        record = self._active.get(key)
        if record is None:
            ended = self._ended.get(key)
            if ended is not None:
                self._step(ended, what, reason)
            return
        if stage not in ENDED:
            raise IllegalMove(f"{stage} is not an end")
        self._move(record, stage, what, reason)
        record.outcome = outcome or stage.value
        record.reason = reason or None
        record.ended_at = self._clock()
        del self._active[key]
        self._ended[key] = record
        self._trim_ended()

    def note(self, uuid: str, what: str, detail: str = "") -> None:
        """Add a step to the job's trail without moving it."""
        self._step(self.get(uuid), what, detail)

    def confirmed(self, uuid: str, *, at: float | None = None) -> None:
        record = self._active.get(normalise(uuid))
        if record is not None:
            record.confirmed_at = self._clock() if at is None else at

    def confirmation_age(self, uuid: str) -> float:
        record = self._active.get(normalise(uuid))
        if record is None or record.confirmed_at is None:
            return float("inf")
        return self._clock() - record.confirmed_at

    def cancel(self, uuid: str, what: str = "webhook") -> Stage | None:
        """Buildkite cancelled the job. Before its pod exists it ends here; returns the stage it was in."""
        key = normalise(uuid)
        record = self._active.get(key)
        if record is None:
            ended = self._ended.get(key)
            if ended is not None:
                ended.cancelled = True
                self._step(ended, what, "cancelled")
            return None
        record.cancelled = True
        stage = record.stage
        if stage in {Stage.SEEN, Stage.CONFIRMING, Stage.QUEUED}:
            self.end(key, Stage.CANCELLED, what, "cancelled before its pod was created")
        else:
            self._step(record, what, "cancelled")
        return stage

    # --- waiting ------------------------------------------------------------------------------------

    async def next_change(self, *, timeout: float) -> None:
        """Return after the next move of any job, or after ``timeout`` seconds."""
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._change], timeout=timeout)

    # --- housekeeping ---------------------------------------------------------------------------------

    def forget_old(self) -> None:
        """Drop ended records past their keep time and tombstones past theirs (called periodically)."""
        now = self._clock()
        while self._ended:
            key, record = next(iter(self._ended.items()))
            if now - (record.ended_at or now) <= self._ended_keep:
                break
            del self._ended[key]
        while self._tombstones:
            key, seen_at = next(iter(self._tombstones.items()))
            if now - seen_at <= self._tombstone_keep:
                break
            del self._tombstones[key]

    # --- internals ------------------------------------------------------------------------------------

    def _move(self, record: JobRecord, stage: Stage, what: str, detail: str) -> None:
        if stage is not record.stage and stage not in TRANSITIONS[record.stage]:
            raise IllegalMove(f"job {record.uuid}: {record.stage} -> {stage} ({what}: {detail})")
        wall = self._wall()
        if self._timer is not None and stage not in record.since and record.seen_at:
            phase = PHASES.get(stage)
            if phase is not None:
                self._timer.observe_phase(phase, self._clock() - record.seen_at)
        record.stage = stage
        record.stage_since = wall
        record.since[stage] = wall
        self._step(record, what, detail)
        if self._change is not None and not self._change.done():
            self._change.set_result(None)

    def _revive(self, record: JobRecord) -> None:
        self._ended.pop(record.uuid, None)
        self._active[record.uuid] = record
        record.ended_at = None
        record.outcome = None
        record.reason = None

    def _step(self, record: JobRecord | None, what: str, detail: str) -> None:
        if record is None:
            return
        trail = record.trail
        trail.append(Step(self._wall(), self.replica, what, detail))
        if len(trail) > MAX_TRAIL:
            del trail[MAX_TRAIL // 2]  # keep how it started and how it is going

    def _trim_ended(self) -> None:
        while len(self._ended) > self._max_ended:
            self._ended.popitem(last=False)
