"""Lifecycle rules for our pods: one pure decision per look at a pod.

Input: the *current* ``PodView`` (from the pod watch or a relist, never the event type), the Buildkite
job state if the shell knows it, the clock, and a :class:`LifecyclePolicy`. Output: one printable
:class:`Action` that the I/O shell carries out. Nothing here reads a clock, calls an API or remembers
anything; every fact that must survive a controller restart lives on the pod (annotations in
``app.podview``), so calling ``decide`` again with the same inputs gives the same answer.

The actions, and what the shell does with each:

    Keep(recheck_at, poll_job_state)  nothing now; call ``decide`` again at ``recheck_at`` (a timer) or
                                      on the next pod event; while ``poll_job_state`` is true, include
                                      the job in the periodic batched state check (cancellation).
    CheckJobState(reason)             look up the job state (batched), then call ``decide`` again with it.
    FailJob(reason, message, then_delete)
                                      annotate the pod ``failure-reported=<reason>``, finish the Buildkite
                                      job with ``message`` (+ ``compose_detail`` events), then delete the
                                      pod with grace 0 if ``then_delete``. Allowed in scheduled/reserved only.
    Notify(reason, message)           the agent owns the job: send one stack notification and annotate
                                      the pod ``failure-notified=<reason>``; never fail the job.
    Delete(reason, grace_seconds)     delete the pod (``None`` = the pod's own termination grace).

Until the annotation written for FailJob/Notify comes back in a watch event, the shell must remember
in memory that it acted, or a second event could repeat the call. A pod that is already gone cannot be
annotated: skip that step (its DELETED event is the last one). A ``finish`` refused because the job is
no longer scheduled means someone else settled it: record the marker and move on.

Rules, in order: a gone pod (deleted, or terminating past its deadline) may need its job failed as
lost; finished pods fail their job if it was never acquired, then are kept for a retention; a live pod
whose job was already failed is deleted; a pending pod of a cancelled or ended job is deleted; an
agent that exited ends its pod after a grace; init, image and pending failures fail a scheduled job,
notify an owned one, and clean up after an ended one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from app.lifecycle import failures as detect
from app.podview import AGENT_CONTAINER, PodView

# Buildkite's internal (stacks API) job states, lower case. Only these may be failed by us: the
# stacks `finish` call works while no agent holds the job.
FAILABLE_STATES = frozenset({"scheduled", "reserved"})
# An agent holds the job; it fails or finishes it itself (timeouts, lost heartbeats).
AGENT_OWNED_STATES = frozenset({"assigned", "accepted", "running", "timing_out"})
CANCELLED_STATES = frozenset({"canceling", "canceled"})
ENDED_STATES = frozenset(
    {
        "finished",
        "passed",  # REST spelling of finished, accepted in case a state comes from the REST API
        "failed",
        "timed_out",
        "skipped",
        "expired",
        "broken",
        "waiting_failed",
        "blocked_failed",
        "unblocked_failed",
    }
)
# Buildkite does not know the job (deleted with its pipeline, or never ours): nobody will run it.
UNKNOWN_STATE = "unknown"
# Any other state (pending, waiting, limited, …) means "not runnable yet": we neither fail nor delete.

# Every `reason` an action can carry, so the shell can pre-register metric label values.
REASONS = frozenset(
    {
        # Delete
        "succeeded",
        "failed",
        "agent_done",
        "cancelled",
        "job_ended",
        "job_unknown",
        "failure_reported",
        # FailJob, CheckJobState, Notify
        "image_pull",
        "container_create",
        "init_container",
        "pending_timeout",
        "lost_before_acquire",
        # Notify only: the pod ended while the agent held the job
        "pod_lost",
    }
)


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """Timings of the lifecycle rules, in seconds."""

    # Succeeded pods hold nothing worth reading (logs are in Buildkite); a short delay lets log
    # shippers finish, and agent-stack-k8s users asked for prompt cleanup of finished pods.
    succeeded_retention_seconds: float = 30
    # Failed pods are kept ten minutes so someone can `kubectl describe` them (agent-stack-k8s' job TTL).
    failed_retention_seconds: float = 600
    # kubelet backs off pulls 10 s, 20 s, …; 30 s covers a registry blip (agent-stack-k8s' default).
    image_pull_grace_seconds: float = 30
    # Cluster autoscalers take minutes to add a node; 15 min is agent-stack-k8s' pod-pending-timeout.
    pending_timeout_seconds: float = 900
    # Sidecars and unmanaged containers get a moment to notice the agent left before the pod is ended.
    agent_done_grace_seconds: float = 10
    # Pods we abort (failed to start, cancelled) never ran user code, so there is nothing to flush.
    abort_grace_seconds: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"lifecycle.{item.name}: must be a number of seconds (got {value!r})")
            if value < 0:
                raise ValueError(f"lifecycle.{item.name}: must be 0 or more (got {value!r})")


@dataclass(frozen=True, slots=True)
class Keep:
    """Nothing to do now. ``recheck_at``: when the decision could change by time alone."""

    recheck_at: float | None = None
    poll_job_state: bool = False


@dataclass(frozen=True, slots=True)
class CheckJobState:
    """The decision depends on the Buildkite job state, which the caller did not give."""

    reason: str


@dataclass(frozen=True, slots=True)
class FailJob:
    """Finish the still-unacquired Buildkite job with ``message``; at most once per job."""

    reason: str
    message: str
    then_delete: bool = True


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell the job's timeline what went wrong; the agent owns the job, so it is not failed."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the pod now."""

    reason: str
    grace_seconds: int | None = None


Action = Keep | CheckJobState | FailJob | Notify | Delete


def decide(pod: PodView, *, job_state: str | None, now: float, policy: LifecyclePolicy) -> Action:
    """The one thing to do about ``pod`` now. Pure: same inputs, same action."""
    if pod.job_uuid is None:
        return Keep()  # not a job pod; the watch's label selector should not even deliver it
    if pod.deleted or (pod.deletion_timestamp is not None and now >= pod.deletion_timestamp):
        # Terminating past its deadline means stuck (a lost node): as good as gone for the job.
        return _decide_gone(pod, job_state)
    if pod.deletion_timestamp is not None:
        return Keep(recheck_at=pod.deletion_timestamp)
    if pod.phase in ("Succeeded", "Failed"):
        return _decide_finished(pod, job_state, now, policy)
    if pod.failure_reported:
        return Delete("failure_reported", policy.abort_grace_seconds)  # failed it, then crashed
    if pod.phase == "Unknown":  # the node stopped reporting: the pod may never come back
        return _resolve(detect.lost(pod), pod, job_state, policy)
    return _decide_live(pod, job_state, now, policy)


def _decide_gone(pod: PodView, job_state: str | None) -> Action:
    return _report_ended_pod(pod, job_state) or Keep()


def _decide_finished(pod: PodView, job_state: str | None, now: float, policy: LifecyclePolicy) -> Action:
    report = _report_ended_pod(pod, job_state) if pod.phase == "Failed" else None
    return report or _retention(pod, now, policy)


def _report_ended_pod(pod: PodView, job_state: str | None) -> Action | None:
    """A pod that ended without proof that its agent ran the job: fail the job if still unacquired.

    The pod is not deleted with the job (``then_delete=False``): a gone pod needs nothing, and a
    Failed pod is kept for its retention so people can inspect it.
    """
    if pod.failure_reported or pod.failure_notified or detect.agent_ran_job(pod):
        return None
    failure = detect.init_failure(pod) or detect.lost(pod)
    if job_state is None:
        return CheckJobState(failure.reason)
    if job_state in FAILABLE_STATES:
        return FailJob(failure.reason, failure.message, then_delete=False)
    if job_state in AGENT_OWNED_STATES:
        # Buildkite will call the agent lost; the timeline should say why (evicted, OOM-killed …).
        return Notify(failure.notice_reason, failure.notice)
    return None


def _retention(pod: PodView, now: float, policy: LifecyclePolicy) -> Action:
    succeeded = pod.phase == "Succeeded"
    keep_seconds = policy.succeeded_retention_seconds if succeeded else policy.failed_retention_seconds
    due_at = detect.finished_at(pod) + keep_seconds
    if now >= due_at:
        return Delete("succeeded" if succeeded else "failed")
    return Keep(recheck_at=due_at)


def _decide_live(pod: PodView, job_state: str | None, now: float, policy: LifecyclePolicy) -> Action:
    is_pending = pod.phase == "Pending"
    if is_pending and job_state in CANCELLED_STATES | ENDED_STATES:
        # Nobody will ever run this job in this pod: free the node now (lesson: cancelled builds
        # flooded clusters with pending pods). Running pods are left to their agent.
        return Delete(_ended_reason(job_state), policy.abort_grace_seconds)
    agent = pod.container(AGENT_CONTAINER)
    if agent is not None and agent.terminated is not None:
        # Zombie guard: a sidecar or unmanaged container must not keep a finished job's pod alive.
        due_at = (agent.terminated.finished_at or 0.0) + policy.agent_done_grace_seconds
        return Delete("agent_done") if now >= due_at else Keep(recheck_at=due_at)
    failure = detect.init_failure(pod)
    image, image_due = detect.image_failure(pod, now=now, grace_seconds=policy.image_pull_grace_seconds)
    pending, pending_due = detect.pending_timeout(
        pod, now=now, timeout_seconds=policy.pending_timeout_seconds
    )
    failure = failure or image or pending
    if failure is not None:
        return _resolve(failure, pod, job_state, policy)
    due = [t for t in (image_due, pending_due) if t is not None]
    return Keep(recheck_at=min(due) if due else None, poll_job_state=is_pending)


def _resolve(failure: detect.Failure, pod: PodView, job_state: str | None, policy: LifecyclePolicy) -> Action:
    """What a failure of a live pod means for its job: fail it, notify, or clean up."""
    if job_state is None:
        return CheckJobState(failure.reason)
    if job_state in FAILABLE_STATES:
        return FailJob(failure.reason, failure.message, then_delete=True)
    if job_state in CANCELLED_STATES | ENDED_STATES:
        return Delete(_ended_reason(job_state), policy.abort_grace_seconds)
    if job_state == UNKNOWN_STATE:
        # A failing pod of a job Buildkite does not know would otherwise wait for its 6 h deadline.
        return Delete("job_unknown", policy.abort_grace_seconds)
    if job_state in AGENT_OWNED_STATES and not pod.failure_notified:
        return Notify(failure.notice_reason, failure.notice)
    # Owned and already notified, or not runnable yet: the agent's own timeouts (or a state change
    # seen by the job-state poll) will move things on.
    return Keep(poll_job_state=pod.phase == "Pending")


def _ended_reason(job_state: str | None) -> str:
    return "cancelled" if job_state in CANCELLED_STATES else "job_ended"
