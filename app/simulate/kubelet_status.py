"""Render the status a real kubelet would report for a pod at a given tick of its `PodPlan`.

Pure: the plan, the tick, the wall-clock time of each tick so far, and the tick the kubelet saw the
deletion (if any) in; a `PodStatus` dict out, shaped like the kubelet's (phase, conditions with
lastTransitionTime, startTime, per-container waiting/running/terminated states with reasons and exit
codes, init container statuses). Terminal states are sticky: an eviction or deletion after the pod
finished changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.simulate.kubelet_plan import ContainerPlan, PodPlan

Json = dict[str, Any]

EVICTION_MESSAGE = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
DELETED_EXIT_CODE = 143  # SIGTERM
EVICTED_EXIT_CODE = 137  # SIGKILL
POD_REASONS = {
    "Evicted": EVICTION_MESSAGE,
    "DeadlineExceeded": "Pod was active on the node longer than the specified deadline",
}


@dataclass(frozen=True)
class Moment:
    """Where the pod is: the current tick, when each tick happened, and when it was deleted/evicted."""

    tick: int
    times: Sequence[str]
    deleted_at: int | None = None
    deadline_at: int | None = None  # the tick activeDeadlineSeconds ran out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def natural_end(plan: PodPlan) -> int | None:
    """The tick the pod finishes by itself: last main container exit, or a failed init container."""
    failed_init = [c.end for c in plan.init if not c.is_sidecar and c.end is not None and c.exit_code != 0]
    if failed_init:
        return failed_init[0]
    ends = [c.end for c in plan.main]
    return None if not ends or None in ends else max(e for e in ends if e is not None)


def kill_tick(plan: PodPlan, moment: Moment) -> tuple[int | None, str]:
    """When running containers are killed, and why: "Evicted", "DeadlineExceeded", "Deleted" or ""."""
    finished = natural_end(plan)
    causes = (
        (plan.evict_at, "Evicted"),
        (moment.deadline_at, "DeadlineExceeded"),
        (moment.deleted_at, "Deleted"),
    )
    candidates = [
        (tick, cause) for tick, cause in causes if tick is not None and (finished is None or tick < finished)
    ]
    return min(candidates) if candidates else (None, "")


def container_state(c: ContainerPlan, plan: PodPlan, moment: Moment) -> Json:
    t = moment.tick
    killed_at, cause = kill_tick(plan, moment)
    if c.blocker is not None and c.blocked_from is not None and t >= c.blocked_from:
        return {"waiting": _blocked(c, t - c.blocked_from)}
    if c.start is None or t < c.start or (killed_at is not None and killed_at <= c.start):
        return {"waiting": {"reason": "PodInitializing" if plan.init else "ContainerCreating"}}
    end, exit_code, reason = c.end, c.exit_code, "OOMKilled" if c.oom_killed else None
    if c.is_sidecar:
        end, exit_code = natural_end(plan), 0
    if killed_at is not None and (end is None or killed_at < end):
        end, reason = killed_at, "Error"
        exit_code = EVICTED_EXIT_CODE if cause == "Evicted" else DELETED_EXIT_CODE
    started = moment.times[c.start]
    if end is None or t < end:
        return {"running": {"startedAt": started}}
    reason = reason or ("Completed" if exit_code == 0 else "Error")
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": moment.times[end],
            "containerID": _container_id(c),
        }
    }


def _blocked(c: ContainerPlan, ticks_blocked: int) -> Json:
    assert c.blocker is not None
    if c.blocker.reason == "ErrImagePull" and ticks_blocked % 2 == 1:
        return {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{c.image}"'}
    return {"reason": c.blocker.reason, "message": c.blocker.message}


def _container_id(c: ContainerPlan) -> str:
    return "containerd://" + _digest(c.name + c.image)


def container_status(c: ContainerPlan, plan: PodPlan, moment: Moment) -> Json:
    state = container_state(c, plan, moment)
    running = "running" in state
    status: Json = {
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": running and (not c.is_init or c.is_sidecar),
        "restartCount": 0,
        "started": running,
        "state": state,
        "lastState": {},
    }
    if "waiting" not in state:
        status["imageID"] = f"{c.image.split(':')[0]}@sha256:{_digest(c.image)}"
        status["containerID"] = _container_id(c)
    return status


def phase_of(plan: PodPlan, statuses: Mapping[str, Json], moment: Moment) -> tuple[str, str]:
    """The pod phase, and the pod-level reason when the kubelet ended it (Evicted, DeadlineExceeded)."""
    killed_at, cause = kill_tick(plan, moment)
    if cause in POD_REASONS and killed_at is not None and moment.tick >= killed_at:
        return "Failed", cause
    for c in plan.init:
        terminated = statuses[c.name]["state"].get("terminated")
        if not c.is_sidecar and terminated and terminated["exitCode"] != 0:
            return "Failed", ""
    main = [statuses[c.name]["state"] for c in plan.main]
    if all("terminated" in s for s in main):
        return ("Succeeded" if all(s["terminated"]["exitCode"] == 0 for s in main) else "Failed"), ""
    if all("waiting" not in s for s in main):
        return "Running", ""
    return "Pending", ""


def _condition(
    kind: str, ok: bool, moment: Moment, previous: Mapping[str, Json], reason: str = "", message: str = ""
) -> Json:
    status = "True" if ok else "False"
    before = previous.get(kind)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == status
        else moment.times[moment.tick]
    )
    condition: Json = {"type": kind, "status": status, "lastTransitionTime": since}
    if reason:
        condition.update(reason=reason, message=message)
    return condition


def _incomplete_init(plan: PodPlan, statuses: Mapping[str, Json]) -> list[str]:
    names = []
    for c in plan.init:
        state = statuses[c.name]["state"]
        done = "running" in state if c.is_sidecar else (state.get("terminated") or {}).get("exitCode") == 0
        if not done:
            names.append(c.name)
    return names


def conditions_of(
    plan: PodPlan,
    statuses: Mapping[str, Json],
    phase: str,
    moment: Moment,
    previous: Sequence[Json],
    *,
    evicted: bool,
) -> list[Json]:
    prior = {c.get("type", ""): c for c in previous}
    initialized = plan.main_start is not None and moment.tick >= plan.main_start
    init_detail = (
        ()
        if initialized
        else (
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(_incomplete_init(plan, statuses))}]",
        )
    )
    unready = [
        c.name for c in plan.containers if (not c.is_init or c.is_sidecar) and not statuses[c.name]["ready"]
    ]
    terminal = phase in ("Succeeded", "Failed")
    ready = not unready and not terminal
    ready_detail: tuple[str, ...] = ()
    if terminal:
        ready_detail = ("PodCompleted", "")
    elif not ready:
        ready_detail = ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
    conditions = [
        _condition("PodReadyToStartContainers", not terminal, moment, prior),
        _condition("Initialized", initialized, moment, prior, *init_detail),
        _condition("Ready", ready, moment, prior, *ready_detail),
        _condition("ContainersReady", ready, moment, prior, *ready_detail),
        prior.get("PodScheduled") or _condition("PodScheduled", True, moment, prior),
    ]
    if evicted:
        conditions.insert(
            0, _condition("DisruptionTarget", True, moment, prior, "TerminationByKubelet", EVICTION_MESSAGE)
        )
    return conditions


def render_status(
    pod: Mapping[str, Any], plan: PodPlan, moment: Moment, *, pod_ip: str, host_ip: str
) -> Json:
    """The complete `status` the kubelet reports for `pod` at `moment`."""
    previous: Json = pod.get("status") or {}
    statuses = {c.name: container_status(c, plan, moment) for c in plan.containers}
    phase, reason = phase_of(plan, statuses, moment)
    status: Json = {
        "phase": phase,
        "conditions": conditions_of(
            plan, statuses, phase, moment, previous.get("conditions") or [], evicted=reason == "Evicted"
        ),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": previous.get("startTime") or moment.times[0],
        "containerStatuses": [statuses[c.name] for c in plan.main],
        "qosClass": previous.get("qosClass", "BestEffort"),
    }
    if plan.init:
        status["initContainerStatuses"] = [statuses[c.name] for c in plan.init]
    if reason:
        status.update(reason=reason, message=POD_REASONS[reason])
    return status
