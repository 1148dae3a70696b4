"""Builders for raw pod JSON as the apiserver sends it in watch events, for lifecycle tests.

Times are epoch seconds relative to ``T0``; builders turn them into RFC 3339 strings, as the API does.
A default pod looks like one of ours: init container ``copy-agent``, then ``container-0``, ``agent``
and ``checkout``, labelled with ``JOB_UUID``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
JOB_UUID = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
POD_NAME = f"buildkite-{JOB_UUID}"
AGENT_IMAGE = "ghcr.io/buildkite/agent:3.100.0"
STEP_IMAGE = "alpine:3.20"


def ts(seconds: float) -> str:
    """Epoch seconds → RFC 3339 UTC, as Kubernetes writes timestamps."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    body = {"reason": reason, "message": message} if message else {"reason": reason}
    return {"waiting": body}


def running(since: float = T0 + 5) -> dict[str, Any]:
    return {"running": {"startedAt": ts(since)}}


def terminated(
    exit_code: int, *, reason: str = "", signal: int | None = None, message: str = "", at: float = T0 + 60
) -> dict[str, Any]:
    body: dict[str, Any] = {"exitCode": exit_code, "finishedAt": ts(at), "startedAt": ts(T0 + 5)}
    body |= {k: v for k, v in (("reason", reason), ("signal", signal), ("message", message)) if v}
    return {"terminated": body}


@dataclass
class Ctr:
    """One container: its spec entry and its status entry."""

    name: str
    image: str = STEP_IMAGE
    state: dict[str, Any] = field(default_factory=lambda: waiting("PodInitializing"))
    sidecar: bool = False

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "image": self.image}
        return spec | {"restartPolicy": "Always"} if self.sidecar else spec

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "image": self.image, "state": self.state, "ready": "running" in self.state}


def condition(kind: str, status: str, reason: str = "", message: str = "", at: float = T0) -> dict[str, Any]:
    body = {"type": kind, "status": status, "lastTransitionTime": ts(at)}
    return body | {k: v for k, v in (("reason", reason), ("message", message)) if v}


def default_init() -> list[Ctr]:
    return [Ctr("copy-agent", AGENT_IMAGE, terminated(0, reason="Completed", at=T0 + 4))]


def default_main(state: dict[str, Any] | None = None) -> list[Ctr]:
    state = state or waiting("PodInitializing")
    return [
        Ctr("container-0", STEP_IMAGE, state),
        Ctr("agent", AGENT_IMAGE, state),
        Ctr("checkout", AGENT_IMAGE, state),
    ]


def pod(
    *,
    phase: str = "Pending",
    init: list[Ctr] | None = None,
    main: list[Ctr] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    created: float = T0,
    started: float | None = T0 + 2,
    deletion: float | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    reason: str = "",
    message: str = "",
    statuses: bool = True,
) -> dict[str, Any]:
    """A raw pod dict; every argument defaults to a freshly scheduled pod of ours.

    ``statuses=False`` leaves out container statuses, as for a pod no node has accepted yet.
    """
    init = default_init() if init is None else init
    main = default_main() if main is None else main
    meta: dict[str, Any] = {
        "name": POD_NAME,
        "namespace": "buildkite",
        "uid": "3f1c2d4e-0000-4000-8000-000000000001",
        "resourceVersion": "4242",
        "creationTimestamp": ts(created),
        "labels": {"buildkite.com/job-uuid": JOB_UUID} if labels is None else labels,
        "annotations": annotations or {},
    }
    if deletion is not None:
        meta["deletionTimestamp"] = ts(deletion)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions if conditions is not None else [condition("PodScheduled", "True")],
        "initContainerStatuses": [c.status() for c in init],
        "containerStatuses": [c.status() for c in main],
    }
    status |= {
        k: v
        for k, v in (("startTime", started and ts(started)), ("reason", reason), ("message", message))
        if v
    }
    spec = {
        "nodeName": "node-a",
        "restartPolicy": "Never",
        "initContainers": [c.spec() for c in init],
        "containers": [c.spec() for c in main],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def event(reason: str, message: str, *, at: float, kind: str = "Normal", count: int = 1) -> dict[str, Any]:
    """A core/v1 Event about our pod, as `list events` returns it."""
    return {
        "metadata": {"name": f"{POD_NAME}.{reason.lower()}", "namespace": "buildkite"},
        "involvedObject": {"kind": "Pod", "name": POD_NAME, "namespace": "buildkite"},
        "type": kind,
        "reason": reason,
        "message": message,
        "count": count,
        "firstTimestamp": ts(at - 10 * (count - 1)),
        "lastTimestamp": ts(at),
    }
