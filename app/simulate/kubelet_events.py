"""The Kubernetes Events a kubelet and scheduler emit, derived from status transitions.

Pure: compare a pod's previous and new status and name what happened (Pulling, Pulled, Created,
Started, Failed, BackOff, InspectFailed, ErrImageNeverPull, Killing, Evicted), with the reasons and
messages kubectl users know. `event_body` turns one into a core/v1 Event object ready to POST. Events
are only produced on transitions, so an unchanged pod produces none.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class KubeEvent:
    reason: str
    message: str
    type: str = "Normal"
    field_path: str = ""
    component: str = "kubelet"


def _by_name(status: Mapping[str, Any]) -> dict[str, tuple[str, Json]]:
    found: dict[str, tuple[str, Json]] = {}
    for group, key in (("initContainers", "initContainerStatuses"), ("containers", "containerStatuses")):
        for index, container in enumerate(status.get(key) or []):
            found[container["name"]] = (
                (f"spec.{group}{{{container['name']}}}", container) if index >= 0 else ("", {})
            )
    return found


def _state(container: Json | None) -> tuple[str, str]:
    """(state kind, reason) of a container status; ("", "") when absent."""
    if not container:
        return "", ""
    kind, detail = next(iter((container.get("state") or {"": {}}).items()))
    return kind, (detail or {}).get("reason", "")


def _waiting_events(name: str, image: str, reason: str, message: str, path: str) -> list[KubeEvent]:
    failed = KubeEvent("Failed", f"Error: {reason}", "Warning", path)
    if reason == "ErrImagePull":
        return [
            KubeEvent("Pulling", f'Pulling image "{image}"', "Normal", path),
            KubeEvent("Failed", f'Failed to pull image "{image}": {message}', "Warning", path),
            failed,
        ]
    if reason == "ImagePullBackOff":
        return [KubeEvent("BackOff", f'Back-off pulling image "{image}"', "Normal", path), failed]
    if reason == "InvalidImageName":
        return [KubeEvent("InspectFailed", message, "Warning", path), failed]
    if reason == "ErrImageNeverPull":
        return [KubeEvent("ErrImageNeverPull", message, "Warning", path), failed]
    if reason == "CreateContainerConfigError":
        return [KubeEvent("Failed", f"Error: {message}", "Warning", path)]
    return []


def _started_events(name: str, image: str, path: str) -> list[KubeEvent]:
    return [
        KubeEvent("Pulling", f'Pulling image "{image}"', "Normal", path),
        KubeEvent(
            "Pulled",
            f'Successfully pulled image "{image}" in 1.02s (1.02s including waiting)',
            "Normal",
            path,
        ),
        KubeEvent("Created", f"Created container: {name}", "Normal", path),
        KubeEvent("Started", f"Started container {name}", "Normal", path),
    ]


def transition_events(
    previous: Mapping[str, Any], current: Mapping[str, Any], *, deleting: bool
) -> list[KubeEvent]:
    """Events for everything that changed between two statuses of one pod."""
    events: list[KubeEvent] = []
    before = _by_name(previous)
    for name, (path, container) in _by_name(current).items():
        old_kind, old_reason = _state(before.get(name, ("", {}))[1])
        kind, reason = _state(container)
        image = container.get("image", "")
        if kind == "waiting" and reason != old_reason:
            message = container["state"]["waiting"].get("message", "")
            events += _waiting_events(name, image, reason, message, path)
        elif kind in ("running", "terminated") and old_kind in ("", "waiting"):
            events += _started_events(name, image, path)
        if kind == "terminated" and old_kind == "running" and deleting:
            events.append(KubeEvent("Killing", f"Stopping container {name}", "Normal", path))
    if current.get("reason") == "Evicted" and previous.get("reason") != "Evicted":
        events.append(KubeEvent("Evicted", current.get("message", ""), "Warning"))
    return events


def event_body(pod: Mapping[str, Any], event: KubeEvent, *, node_name: str, now: str) -> Json:
    """A core/v1 Event about `pod`, as the kubelet's event recorder posts it."""
    meta = pod["metadata"]
    involved: Json = {
        "kind": "Pod",
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "apiVersion": "v1",
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if event.field_path:
        involved["fieldPath"] = event.field_path
    source: Json = {"component": event.component}
    if event.component == "kubelet":
        source["host"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": involved,
        "reason": event.reason,
        "message": event.message,
        "type": event.type,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": event.component,
        "reportingInstance": node_name if event.component == "kubelet" else "",
    }


def scheduling_events(
    pod: Mapping[str, Any], node_name: str, *, scheduled: bool, nodes: Sequence[str]
) -> list[KubeEvent]:
    """What the scheduler reports after trying to place the pod."""
    meta = pod["metadata"]
    if scheduled:
        return [
            KubeEvent(
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
                component="default-scheduler",
            )
        ]
    count = len(nodes)
    message = (
        f"0/{count} nodes are available: {count} node(s) didn't match Pod's node affinity/selector. "
        f"preemption: 0/{count} nodes are available: {count} Preemption is not helpful for scheduling."
    )
    return [KubeEvent("FailedScheduling", message, "Warning", component="default-scheduler")]
