"""What the status page and the decision trail show, read from a running controller (pure reads).

``job_view`` turns one ``JobRecord`` into plain data (the JSON of ``GET /jobs/{uuid}``; the HTML page
renders the same dict). ``status_view`` gathers the status page: this replica's role, jobs in flight
with their stage and age, the last outcomes, in-flight against max-in-flight, the GraphQL budget and the
last sweep. Nothing here changes the controller; job data is untrusted input and is escaped by the
templates, never here.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.jobs import JobRecord, Step

if TYPE_CHECKING:  # app.main imports the routes, which import this module
    from app.main import Controller

# The status page lists this many ended jobs by default; ``?recent=`` may ask for up to MAX_RECENT.
DEFAULT_RECENT = 20
MAX_RECENT = 200


def iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat(timespec="milliseconds")


def job_view(record: JobRecord, *, now: float) -> dict[str, Any]:
    """The record as plain data: stage, outcome and every step with its time (unix and ISO 8601)."""
    return {
        "uuid": record.uuid,
        "stage": str(record.stage),
        "first_seen": record.first_seen,
        "first_seen_time": iso(record.first_seen),
        "stage_since": record.stage_since,
        "age_seconds": round(max(0.0, now - record.first_seen), 3),
        "outcome": record.outcome,
        "reason": record.reason,
        "trail": [
            {
                "at": step.at,
                "time": iso(step.at),
                "offset_seconds": round(step.at - record.first_seen, 3),
                "replica": step.replica,
                "what": step.what,
                "detail": step.detail,
            }
            for step in record.trail
        ],
    }


@dataclass(frozen=True)
class Budget:
    remaining: int | None
    limit: int | None
    resets_in_seconds: float | None


@dataclass(frozen=True)
class StatusView:
    replica: str
    is_leader: bool
    leader: str | None  # who holds the Lease, as this replica last read it; None: nobody or unknown
    leader_url: str | None
    lease: str  # "<namespace>/<name>"
    election_error: str | None  # why this replica cannot take part (e.g. the Role lacks a Lease rule)
    in_flight: int
    max_in_flight: int  # 0: no limit
    queued: int
    budget: Budget | None
    last_sweep: dict[str, Any] | None
    jobs_in_flight: list[dict[str, Any]]
    recent: list[dict[str, Any]]


def status_view(controller: Controller, *, now: float, recent: int = DEFAULT_RECENT) -> StatusView:
    """Everything the status page shows about the running ``controller``."""
    leadership = controller.elector.status()
    in_flight = sorted(controller.jobs.in_flight(), key=lambda r: r.first_seen)
    budget = controller.graphql.budget
    last = controller.sweeper.last
    return StatusView(
        replica=leadership.identity,
        is_leader=leadership.is_leader,
        leader=leadership.holder,
        leader_url=leadership.leader_url,
        lease=leadership.lease,
        election_error=(
            f"the Role lacks: {leadership.forbidden.rule()}"
            if leadership.forbidden is not None
            else leadership.last_error
        ),
        in_flight=controller.admitter.in_flight(),
        max_in_flight=controller.admitter.limit,
        queued=controller.admitter.queued(),
        budget=(
            Budget(
                budget.remaining,
                budget.limit,
                None if budget.reset_at is None else max(0.0, budget.reset_at - now),
            )
            if budget is not None
            else None
        ),
        last_sweep=(
            {**last.as_dict(), "ago_seconds": _ago(controller.sweeper.last_at, now=now)}
            if last is not None
            else None
        ),
        jobs_in_flight=[_row(record, now=now) for record in in_flight],
        recent=[_row(record, now=now) for record in controller.jobs.recent(recent)],
    )


def _row(record: JobRecord, *, now: float) -> dict[str, Any]:
    last = record.trail[-1] if record.trail else None
    return {
        "uuid": record.uuid,
        "stage": str(record.stage),
        "age_seconds": max(0.0, now - record.first_seen),
        "in_stage_seconds": max(0.0, now - record.stage_since),
        "ended_at": iso(record.stage_since),
        "outcome": record.outcome,
        "reason": record.reason,
        "last_step": _describe(last),
    }


def _ago(at: float | None, *, now: float) -> float | None:
    return None if at is None else max(0.0, now - at)


def _describe(step: Step | None) -> str:
    if step is None:
        return ""
    return f"{step.what}: {step.detail}" if step.detail else str(step.what)


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 5 s``, ``2 h 10 min``: short and exact enough for an operator."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
