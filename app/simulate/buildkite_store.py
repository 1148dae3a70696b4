"""The fake Buildkite's in-memory job store and its state machine.

Every surface of the fake (GraphQL, agent API, test control) changes jobs only through
this store, under one lock, so two concurrent acquires have exactly one winner. After a change the
store tells its listeners (the webhook emitter) which Buildkite event the change means, outside the
lock. Rules follow reference/buildkite-api.md §5.2, §5.4 and §7.1.

Errors: `JobNotFound` (404) and `JobConflict(status, message)` (422, or 423 for a job that is waiting).
"""

from __future__ import annotations

import copy
import secrets
import threading
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.simulate.buildkite_clock import Clock
from app.simulate.buildkite_jobs import STATES, TERMINAL_STATES, FakeJob, JobEvent

# Acquire answers 423 (retry later) for these: the job is waiting on something (§7.1 row 12).
LOCKED_STATES = frozenset({"waiting", "blocked", "limited", "limiting"})
ACQUIRABLE_STATES = frozenset({"scheduled", "reserved"})
# Cancel moves these straight to canceled; an agent owns the AGENT_OWNED ones, so they go via canceling.
CANCEL_AT_ONCE_STATES = frozenset(
    {"scheduled", "reserved", "waiting", "blocked", "limited", "limiting", "pending"}
)
AGENT_OWNED_STATES = frozenset({"assigned", "accepted", "running"})

Listener = Callable[[str, FakeJob], None]
# `JobStore.acquire(cluster_id=ANY_CLUSTER)`: an acquire that does not model the agent's cluster.
ANY_CLUSTER = "*"


class JobNotFound(LookupError):
    def __init__(self, job_uuid: str) -> None:
        super().__init__(f"No job found with uuid {job_uuid!r}")
        self.job_uuid = job_uuid


class JobConflict(Exception):
    """The job's state forbids the request; `status` is the HTTP status the agent API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class NewJob:
    """What `JobStore.add` needs; `FakeBuildkite.add_job` builds it from step-like arguments."""

    uuid: str
    command: str
    agent_query_rules: list[str]
    env: dict[str, str]
    priority: int = 0
    state: str = "scheduled"
    label: str | None = None
    step_key: str | None = None
    pipeline_slug: str = "pipeline"
    build_number: int = 1
    branch: str = "main"
    cluster_id: str | None = None


def webhook_event_for(old: str, new: str) -> str | None:
    """The Buildkite webhook event a state change emits, if any (reference §1.2)."""
    if new == old:
        return None
    if new == "scheduled":
        return "job.scheduled"
    if new == "running":
        return "job.started"
    if new in TERMINAL_STATES:
        return "job.finished"
    return None


class JobStore:
    """Jobs keyed by UUID. All reads return deep copies, so callers never see a half-made change."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._jobs: dict[str, FakeJob] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(event_name, job_copy)` after each change that Buildkite announces."""
        self._listeners.append(listener)

    def clear(self) -> None:
        """Forget every job (a shared fake is reset between tests)."""
        with self._lock:
            self._jobs.clear()

    # -- reads ------------------------------------------------------------------------------------

    def get(self, job_uuid: str) -> FakeJob:
        with self._lock:
            return copy.deepcopy(self._require(job_uuid))

    def find(self, job_uuid: str) -> FakeJob | None:
        with self._lock:
            job = self._jobs.get(job_uuid)
            return copy.deepcopy(job) if job is not None else None

    def all(self) -> list[FakeJob]:
        """Every job, oldest first."""
        with self._lock:
            self._expire_reservations()
            return [copy.deepcopy(job) for job in self._jobs.values()]

    # -- changes ----------------------------------------------------------------------------------

    def add(self, new: NewJob) -> FakeJob:
        if new.state not in STATES:
            raise ValueError(f"unknown job state {new.state!r}")
        with self._lock:
            if new.uuid in self._jobs:
                raise JobConflict(422, f"a job with uuid {new.uuid} already exists")
            self._seq += 1
            now = self._clock.now()
            job = FakeJob(
                uuid=new.uuid,
                seq=self._seq,
                state="pending",
                command=new.command,
                agent_query_rules=list(new.agent_query_rules),
                priority=new.priority,
                env=dict(new.env),
                created_at=now,
                scheduled_at=None,
                label=new.label,
                step_key=new.step_key,
                step_uuid=str(uuid_module.uuid4()),
                pipeline_slug=new.pipeline_slug,
                pipeline_uuid=str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, new.pipeline_slug)),
                build_uuid=str(uuid_module.uuid4()),
                build_number=new.build_number,
                branch=new.branch,
                cluster_id=new.cluster_id,
            )
            self._jobs[job.uuid] = job
            event = self._move(job, new.state)
        return self._announce(event, job)

    def set_state(self, job_uuid: str, state: str) -> FakeJob:
        """Force a state (tests use it to reach waiting, blocked, expired …), announcing the change."""
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        with self._lock:
            job = self._require(job_uuid)
            event = self._move(job, state)
        return self._announce(event, job)

    def cancel(self, job_uuid: str) -> FakeJob:
        """Cancel as the UI does (§7.1 row 17): at once, or via canceling while an agent owns it."""
        with self._lock:
            job = self._require(job_uuid)
            if job.state in CANCEL_AT_ONCE_STATES:
                event = self._move(job, "canceled")
            elif job.state in AGENT_OWNED_STATES:
                event = self._move(job, "canceling")
                self._add_event(job, "CANCELATION")
            else:
                raise JobConflict(422, f"Job can't be canceled while it is {job.state}")
        return self._announce(event, job)

    def acquire(self, job_uuid: str, *, agent_id: str, cluster_id: str | None = ANY_CLUSTER) -> FakeJob:
        """Self-assign and accept (§5.2 step 4): one winner; 423 while waiting, 422 otherwise.

        An agent belongs to its token's cluster (``cluster_id``; None for an unclustered token) and
        cannot take another cluster's job: the pod a controller made for such a job can never run it.
        ``ANY_CLUSTER`` skips the check (in-process stand-ins for agents that model no token).
        """
        with self._lock:
            self._expire_reservations()
            job = self._require(job_uuid)
            if cluster_id != ANY_CLUSTER and job.cluster_id != cluster_id:
                raise JobConflict(422, "Job belongs to a different cluster than this agent")
            if job.state in LOCKED_STATES:
                raise JobConflict(423, f"Job is {job.state} and can't be acquired yet")
            if job.state not in ACQUIRABLE_STATES:
                raise JobConflict(422, f"Job is {job.state} and can't be acquired")
            job.agent_id = agent_id
            job.job_token = secrets.token_hex(16)
            job.reserved_by = job.reserved_until = None
            event = self._move(job, "accepted")
            self._add_event(job, "ACCEPTED", actor="AGENT")
        return self._announce(event, job)

    def start(self, job_uuid: str, *, agent_id: str) -> FakeJob:
        with self._lock:
            job = self._require_owned(job_uuid, agent_id)
            if job.state != "accepted":
                raise JobConflict(422, f"Job is {job.state} and can't be started")
            job.started_at = self._clock.now()
            event = self._move(job, "running")
            self._add_event(job, "STARTED", actor="AGENT")
        return self._announce(event, job)

    def append_log(self, job_uuid: str, *, agent_id: str, data: bytes) -> None:
        with self._lock:
            job = self._require_owned(job_uuid, agent_id)
            if job.state in TERMINAL_STATES:
                raise JobConflict(422, f"Job is {job.state}; its log is closed")
            job.log.extend(data)

    def finish(
        self, job_uuid: str, *, agent_id: str, exit_status: str, signal: str | None, signal_reason: str | None
    ) -> FakeJob:
        """Agent finish (§7.1 row 16): running → finished, canceling → canceled; at most once."""
        with self._lock:
            job = self._require_owned(job_uuid, agent_id)
            if job.state not in {"running", "canceling"}:
                raise JobConflict(422, f"Job is {job.state} and can't be finished")
            job.exit_status, job.signal, job.signal_reason = exit_status, signal, signal_reason
            event = self._move(job, "canceled" if job.state == "canceling" else "finished")
            self._add_event(job, "FINISHED", actor="AGENT")
        return self._announce(event, job)

    def update(self, job_uuid: str, change: Callable[[FakeJob], Any]) -> FakeJob:
        """Apply a field change that is not a state move (reservations)."""
        with self._lock:
            job = self._require(job_uuid)
            change(job)
            return copy.deepcopy(job)

    def transition(self, job_uuid: str, change: Callable[[FakeJob], str | None]) -> FakeJob:
        """Run `change(job) -> new_state_or_None` under the lock, then announce the move it made."""
        with self._lock:
            self._expire_reservations()
            job = self._require(job_uuid)
            new_state = change(job)
            event = self._move(job, new_state) if new_state is not None else None
        return self._announce(event, job)

    def add_event(self, job_uuid: str, event_type: str, *, detail: str | None = None) -> None:
        with self._lock:
            self._add_event(self._require(job_uuid), event_type, detail=detail, actor="STACK")

    # -- internals (caller holds the lock) -------------------------------------------------------

    def _require(self, job_uuid: str) -> FakeJob:
        job = self._jobs.get(job_uuid)
        if job is None:
            raise JobNotFound(job_uuid)
        return job

    def _require_owned(self, job_uuid: str, agent_id: str) -> FakeJob:
        job = self._require(job_uuid)
        if job.agent_id != agent_id:
            raise JobConflict(422, "Job is not assigned to this agent")
        return job

    def _move(self, job: FakeJob, state: str) -> str | None:
        old, now = job.state, self._clock.now()
        job.state = state
        if state == "scheduled" and old != "scheduled":
            job.scheduled_at = now
            self._add_event(job, "SCHEDULED")
        if state in TERMINAL_STATES and job.finished_at is None:
            job.finished_at = now
        if state in {"canceled", "canceling"} and job.canceled_at is None:
            job.canceled_at = now
        return webhook_event_for(old, state)

    def _add_event(
        self, job: FakeJob, event_type: str, *, detail: str | None = None, actor: str = "SYSTEM"
    ) -> None:
        job.events.append(
            JobEvent(str(uuid_module.uuid4()), event_type, self._clock.now(), detail=detail, actor=actor)
        )

    def _expire_reservations(self) -> None:
        # A reservation that outlives its expiry hands the job back to `scheduled` (§3.2 V).
        now = self._clock.now()
        for job in self._jobs.values():
            if job.state == "reserved" and job.reserved_until is not None and job.reserved_until <= now:
                job.state, job.reserved_by, job.reserved_until = "scheduled", None, None
                self._add_event(job, "RESERVED_EXPIRED")

    def _announce(self, event: str | None, job: FakeJob) -> FakeJob:
        with self._lock:
            snapshot = copy.deepcopy(job)
        if event is not None:
            for listener in self._listeners:
                listener(event, snapshot)
        return snapshot
