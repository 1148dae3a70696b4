"""Where each demo job is, read from the outside (pure: observations in, ``JobProgress`` updated).

The demo looks at three things every few hundred milliseconds: the fake Buildkite's job (its state in
REST spelling: scheduled, running, passed, failed, canceled), the fake apiserver's pod of the job (its
phase, or absent), and the controller's record of the job (``GET /jobs/{uuid}``: stage and trail). Each
milestone is stamped with the seconds since the job was scheduled, the first time it is observed:

    confirmed  the controller's trail says Buildkite confirmed it (scheduled, ours)
    pod        its pod exists in the apiserver
    running    its pod runs
    finished   Buildkite shows the job ended (passed, failed or canceled)
    cleaned    its pod is gone again

A job has *settled* when Buildkite shows it ended, its pod (if it had one) is gone, and the controller's
record has ended too: nothing more will happen to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MILESTONES = ("confirmed", "pod", "running", "finished", "cleaned")
ENDED_STATES = frozenset({"passed", "failed", "canceled", "skipped", "expired", "timed_out", "broken"})
CONTROLLER_ENDED = frozenset({"finished", "failed", "cancelled", "dropped", "handed_over"})
CONFIRMING_STEPS = frozenset({"confirmed", "created", "exists"})


@dataclass
class JobProgress:
    label: str
    uuid: str
    expect: str
    scheduled_at: float
    at: dict[str, float] = field(default_factory=dict)  # milestone -> seconds after scheduling
    state: str = "scheduled"  # Buildkite's, REST spelling
    exit_status: str | None = None
    pod_phase: str | None = None
    stage: str | None = None  # the controller's
    outcome: str | None = None  # the controller's, once it ended the job (e.g. ``failed: image_pull``)
    reason: str | None = None
    settled: bool = False

    @property
    def outcome_as_expected(self) -> bool:
        return self.state == self.expect

    def update(
        self,
        *,
        now: float,
        state: str,
        exit_status: str | None,
        pod: dict[str, Any] | None,
        record: dict[str, Any] | None,
    ) -> None:
        self.state, self.exit_status = state, exit_status
        self.pod_phase = pod.get("phase") if pod else None
        if record is not None:
            self.stage = str(record.get("stage"))
            self.outcome = record.get("outcome")
            trail = record.get("trail") or []
            if any(step.get("what") in CONFIRMING_STEPS for step in trail):
                self._mark("confirmed", now)
            if record.get("reason") and state != "passed":
                self.reason = str(record["reason"])
        if pod is not None:
            self._mark("pod", now)
            if pod.get("phase") in ("Running", "Succeeded", "Failed"):
                self._mark("running", now)
        elif "pod" in self.at:
            self._mark("cleaned", now)
        if state in ENDED_STATES:
            self._mark("finished", now)
        pod_gone = pod is None
        record_ended = record is None or self.stage in CONTROLLER_ENDED
        self.settled = state in ENDED_STATES and pod_gone and record_ended

    def _mark(self, milestone: str, now: float) -> None:
        self.at.setdefault(milestone, round(max(0.0, now - self.scheduled_at), 1))
