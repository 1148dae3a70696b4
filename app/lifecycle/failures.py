"""Detectors: what is wrong with a pod right now, read from a ``PodView`` alone (pure).

Input: a ``PodView`` (``app.podview``), the clock value and the lifecycle timings. Output: a
:class:`Failure` (machine reason, the detail for failing the Buildkite job, a one-line notice for when
the agent already owns the job) or ``None``, plus the time at which a pending problem becomes due.
``app.lifecycle.decide`` turns these into actions once it knows the Buildkite job state.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.lifecycle import messages as text
from app.podview import AGENT_CONTAINER, ContainerView, PodView

# Waiting reasons that mean a container will never start without outside help. kubelet retries
# pulls with back-off, and a registry hiccup or a just-pushed image can recover, so these get a grace.
GRACE_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ImageInspectError",
        "RegistryUnavailable",
        "CreateContainerError",
        "CreateContainerConfigError",  # e.g. a missing Secret/ConfigMap key, which someone may create
        "PreCreateHookError",
        "PreStartHookError",
    }
)
# These can never recover: the reference is malformed, or the pull policy forbids pulling.
IMMEDIATE_WAITING_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})
_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ImageInspectError", "RegistryUnavailable"})
_PULL_REASONS |= IMMEDIATE_WAITING_REASONS


@dataclass(frozen=True, slots=True)
class Failure:
    """A problem that should end the Buildkite job if nobody has acquired it yet."""

    reason: str  # machine word for metrics, e.g. "image_pull"
    message: str  # the job's failure detail: one sentence and a small table
    notice_reason: str  # reason word used when we may only notify (the agent owns the job)
    notice: str  # one line for a stack notification


def agent_ran_job(pod: PodView) -> bool:
    """True when the pod itself proves the job was acquired and run: the agent exited 0.

    With ``BUILDKITE_AGENT_ACQUIRE_JOB`` the agent exits non-zero when it cannot acquire the job, and 0
    after running it (whatever the job's result), so exit 0 lets us skip a Buildkite state lookup.
    """
    if pod.phase == "Succeeded":
        return True
    agent = pod.container(AGENT_CONTAINER)
    return agent is not None and agent.terminated is not None and agent.terminated.exit_code == 0


def failed_init_containers(pod: PodView) -> list[ContainerView]:
    """Init containers that exited non-zero; native sidecars are excluded (their exit is not fatal)."""
    return [
        c
        for c in pod.init_containers
        if not c.is_native_sidecar and c.terminated is not None and c.terminated.exit_code not in (0, None)
    ]


def init_failure(pod: PodView) -> Failure | None:
    failed = failed_init_containers(pod)
    if not failed:
        return None
    return Failure(
        reason="init_container",
        message=text.init_failure_message(failed),
        notice_reason="init_container",
        notice=text.notice("Init container failure.", failed),
    )


def lost(pod: PodView) -> Failure:
    """The pod ended (deleted, evicted, OOM, node lost, or Failed) before or while running the job."""
    return Failure(
        reason="lost_before_acquire",
        message=text.lost_message(pod),
        notice_reason="pod_lost",
        notice=text.lost_notice(pod),
    )


def image_failure(pod: PodView, *, now: float, grace_seconds: float) -> tuple[Failure | None, float | None]:
    """Containers stuck on an image or create error; returns (failure if due, time it becomes due).

    The grace runs from ``status.startTime`` (the kubelet accepted the pod; pulls start then), else
    from creation, because scheduling delay is not an image problem.
    """
    stuck = [
        c for c in pod.all_containers if c.waiting_reason in GRACE_WAITING_REASONS | IMMEDIATE_WAITING_REASONS
    ]
    if not stuck:
        return None, None
    start = pod.started_at if pod.started_at is not None else pod.created_at
    due_at = (start or 0.0) + grace_seconds
    immediate = any(c.waiting_reason in IMMEDIATE_WAITING_REASONS for c in stuck)
    if not immediate and now < due_at:
        return None, due_at
    is_pull = any(c.waiting_reason in _PULL_REASONS for c in stuck)
    reason = "image_pull" if is_pull else "container_create"
    headline = "Image pull failure" if is_pull else "Container create failure"
    return (
        Failure(
            reason=reason,
            message=text.image_failure_message(stuck),
            notice_reason=reason,
            notice=text.notice(f"{headline}; the job will fail once the agent times out.", stuck),
        ),
        None,
    )


def pending_timeout(
    pod: PodView, *, now: float, timeout_seconds: float
) -> tuple[Failure | None, float | None]:
    """A pod still Pending ``timeout_seconds`` after creation (unschedulable, volumes, quota …)."""
    if pod.phase != "Pending" or pod.created_at is None:
        return None, None
    due_at = pod.created_at + timeout_seconds
    if now < due_at:
        return None, due_at
    message = text.pending_timeout_message(now - pod.created_at, pod.conditions)
    unhappy = [c for c in pod.conditions if c.status != "True"]
    summary = "; ".join(f"{c.type}: {c.reason or c.status} ({c.message})" for c in unhappy)
    sentence = message.partition("\n")[0]
    return (
        Failure(
            reason="pending_timeout",
            message=message,
            notice_reason="pending_timeout",
            notice=text.cut(f"{sentence} {summary}".strip(), text.MAX_NOTICE_CHARS),
        ),
        None,
    )


def finished_at(pod: PodView) -> float:
    """When a finished pod finished: its last container exit, else the best later timestamp we have.

    Falls back to 0 (long ago) so a finished pod with no timestamps at all is cleaned up, not kept.
    """
    exits = [
        c.terminated.finished_at for c in pod.all_containers if c.terminated and c.terminated.finished_at
    ]
    if exits:
        return max(exits)
    transitions = [c.last_transition_at for c in pod.conditions if c.last_transition_at is not None]
    if transitions:
        return max(transitions)
    return pod.started_at or pod.created_at or 0.0
