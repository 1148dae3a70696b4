"""A slim, frozen view of one of our pods, read straight from raw Kubernetes JSON.

Input: the ``object`` of a pod watch event or one item of a pod list, as a plain dict. We never build
``V1Pod`` models here: deserialising full models caps a watch at a few thousand events per second,
and the lifecycle rules need only a dozen fields. Output: a :class:`PodView` that
``app.lifecycle.decide`` reads.

The apiserver is trusted but not blindly: a field with the wrong type or an unparsable timestamp is
read as absent, never as an error, so one odd pod cannot stop the watch. Only a pod without a name
is refused (``ValueError``), because nothing could be done with it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The pod builder owns the pod's labels and annotations, and refuses user input that names these.
from podspec.metadata import FAILURE_NOTIFIED_ANNOTATION, FAILURE_REPORTED_ANNOTATION, JOB_UUID_LABEL

AGENT_CONTAINER = "agent"


@dataclass(frozen=True, slots=True)
class Terminated:
    """``state.terminated`` of a container."""

    exit_code: int | None = None
    reason: str = ""
    signal: int | None = None
    message: str = ""
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class ContainerView:
    """One container: its spec (name, image, restart policy) joined with its status by name."""

    name: str
    image: str = ""
    is_init: bool = False
    # An init container with ``restartPolicy: Always`` is a native sidecar (KEP-753): it keeps
    # running beside the main containers, so its exit is not an init failure.
    is_native_sidecar: bool = False
    waiting_reason: str = ""
    waiting_message: str = ""
    terminated: Terminated | None = None
    is_running: bool = False
    restart_count: int = 0
    last_terminated: Terminated | None = None  # ``lastState.terminated``: the instance before a restart


@dataclass(frozen=True, slots=True)
class PodCondition:
    """One entry of ``status.conditions``."""

    type: str
    status: str = ""
    reason: str = ""
    message: str = ""
    last_transition_at: float | None = None


@dataclass(frozen=True, slots=True)
class PodView:
    """What the lifecycle rules know about a pod. Times are float epoch seconds."""

    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    job_uuid: str | None = None
    phase: str = ""
    reason: str = ""  # status.reason, e.g. "Evicted"
    message: str = ""  # status.message, e.g. "The node was low on resource: memory."
    created_at: float | None = None
    started_at: float | None = None
    deletion_timestamp: float | None = None
    node_name: str = ""
    conditions: tuple[PodCondition, ...] = ()
    init_containers: tuple[ContainerView, ...] = ()
    containers: tuple[ContainerView, ...] = ()
    failure_reported: str | None = None  # value of FAILURE_REPORTED_ANNOTATION
    failure_notified: str | None = None  # value of FAILURE_NOTIFIED_ANNOTATION
    deleted: bool = False  # built from a DELETED watch event: the object is gone
    # Literal ``env[].value``s of containers whose names look like credentials (``SENSITIVE_ENV_NAME``),
    # for redacting container logs. Values from ``secretKeyRef``/``envFrom`` are not in the spec and
    # cannot be listed here (we never read Secrets). Kept out of ``repr`` so a logged view leaks none.
    sensitive_env_values: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_raw(cls, obj: Mapping[str, Any], *, deleted: bool = False) -> PodView:
        """Build a view from raw pod JSON; raises ``ValueError`` only if ``metadata.name`` is missing."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"pod must be a JSON object, got {type(obj).__name__}")
        meta = _mapping(obj.get("metadata"))
        name = _str(meta.get("name"))
        if not name:
            raise ValueError("pod has no metadata.name")
        spec, status = _mapping(obj.get("spec")), _mapping(obj.get("status"))
        labels, annotations = _mapping(meta.get("labels")), _mapping(meta.get("annotations"))
        return cls(
            name=name,
            namespace=_shared(meta.get("namespace")),
            uid=_str(meta.get("uid")),
            resource_version=_str(meta.get("resourceVersion")),
            job_uuid=_str(labels.get(JOB_UUID_LABEL)) or None,
            phase=_shared(status.get("phase")),
            reason=_shared(status.get("reason")),
            message=_str(status.get("message")),
            created_at=parse_time(meta.get("creationTimestamp")),
            started_at=parse_time(status.get("startTime")),
            deletion_timestamp=parse_time(meta.get("deletionTimestamp")),
            node_name=_shared(spec.get("nodeName")),
            conditions=tuple(_conditions(status.get("conditions"))),
            init_containers=_containers(
                spec.get("initContainers"), status.get("initContainerStatuses"), True
            ),
            containers=_containers(spec.get("containers"), status.get("containerStatuses"), False),
            failure_reported=_str(annotations.get(FAILURE_REPORTED_ANNOTATION)) or None,
            failure_notified=_str(annotations.get(FAILURE_NOTIFIED_ANNOTATION)) or None,
            deleted=deleted,
            sensitive_env_values=_sensitive_env_values(spec),
        )

    def container(self, name: str) -> ContainerView | None:
        """The regular container called ``name``, if the pod has one."""
        return next((c for c in self.containers if c.name == name), None)

    @property
    def all_containers(self) -> tuple[ContainerView, ...]:
        return self.init_containers + self.containers


# Env names that by convention hold credentials; matched anywhere in the name, case-insensitively.
SENSITIVE_ENV_NAME = re.compile(
    r"TOKEN|SECRET|PASSW|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY|AUTH(?!OR)", re.IGNORECASE
)
# Shorter values ("1", "true") would redact ordinary words all over a log.
MIN_SENSITIVE_VALUE_CHARS = 6


def _sensitive_env_values(spec: Mapping[str, Any]) -> tuple[str, ...]:
    values = {
        value
        for key in ("initContainers", "containers")
        for container in _items(spec.get(key))
        for env in _items(container.get("env"))
        if SENSITIVE_ENV_NAME.search(_str(env.get("name")))
        and len(value := _str(env.get("value"))) >= MIN_SENSITIVE_VALUE_CHARS
    }
    return tuple(sorted(values))


def parse_time(value: object) -> float | None:
    """RFC 3339 (``2024-05-01T10:00:00Z``, with or without fractions) → epoch seconds; else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:  # Kubernetes always sends UTC; a naive time would read as local time.
        return None
    return parsed.timestamp()


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _shared(value: object) -> str:
    """``_str`` for values that repeat across pods (namespace, phase, container names, images,
    reasons): one string object for all of them, not a copy per pod (10,000 tracked pods)."""
    return sys.intern(value) if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    # bool is an int subclass in Python; a JSON true is not an exit code.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _items(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _conditions(raw: object) -> list[PodCondition]:
    return [
        PodCondition(
            type=_shared(item.get("type")),
            status=_shared(item.get("status")),
            reason=_shared(item.get("reason")),
            message=_str(item.get("message")),
            last_transition_at=parse_time(item.get("lastTransitionTime")),
        )
        for item in _items(raw)
        if _str(item.get("type"))
    ]


def _containers(specs: object, statuses: object, is_init: bool) -> tuple[ContainerView, ...]:
    """Join spec and status entries by name, in spec order; status-only entries follow.

    Status-only entries exist when the shell strips the spec before caching, as informers often do.
    """
    by_name = {_shared(s.get("name")): s for s in _items(statuses) if _str(s.get("name"))}
    views: list[ContainerView] = []
    seen: set[str] = set()
    for spec in _items(specs):
        name = _shared(spec.get("name"))
        if name and name not in seen:
            seen.add(name)
            views.append(_container(name, spec, by_name.get(name, {}), is_init))
    views.extend(_container(n, {}, s, is_init) for n, s in by_name.items() if n not in seen)
    return tuple(views)


def _container(name: str, spec: Mapping[str, Any], status: Mapping[str, Any], is_init: bool) -> ContainerView:
    state = _mapping(status.get("state"))
    waiting, terminated = _mapping(state.get("waiting")), state.get("terminated")
    last = _mapping(status.get("lastState")).get("terminated")
    return ContainerView(
        name=name,
        # The spec image is what the user wrote; the status may show a resolved digest instead.
        image=_shared(spec.get("image")) or _shared(status.get("image")),
        is_init=is_init,
        is_native_sidecar=is_init and spec.get("restartPolicy") == "Always",
        waiting_reason=_shared(waiting.get("reason")),
        waiting_message=_str(waiting.get("message")),
        terminated=_terminated(terminated) if isinstance(terminated, Mapping) else None,
        is_running=isinstance(state.get("running"), Mapping),
        restart_count=max(0, _int(status.get("restartCount")) or 0),
        last_terminated=_terminated(last) if isinstance(last, Mapping) else None,
    )


def _terminated(raw: Mapping[str, Any]) -> Terminated:
    return Terminated(
        exit_code=_int(raw.get("exitCode")),
        reason=_shared(raw.get("reason")),
        signal=_int(raw.get("signal")),
        message=_str(raw.get("message")),
        finished_at=parse_time(raw.get("finishedAt")),
    )


def container_summary(view: PodView) -> str:
    """The containers' states in a few words, for a job's trail: "imagecheck-0 waiting ErrImagePull; …"."""
    parts: list[str] = []
    for container in (*view.init_containers, *view.containers):
        if container.terminated is not None:
            reason = f" {container.terminated.reason}" if container.terminated.reason else ""
            parts.append(f"{container.name} exited {container.terminated.exit_code}{reason}")
        elif container.is_running:
            parts.append(f"{container.name} running")
        elif container.waiting_reason:
            parts.append(f"{container.name} waiting {container.waiting_reason}")
    return "; ".join(parts)
