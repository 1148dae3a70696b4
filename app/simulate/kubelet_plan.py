"""The timeline of one pod on the simulated node, decided once when the kubelet first sees it.

Ticks count kubelet steps since then. Tick 0 creates the sandbox; init containers then run one after
another (a native sidecar — an init container with `restartPolicy: Always` — only has to start before
the next one begins, and keeps running); regular containers all start together once init is done.
A container can be blocked before it starts, for the reasons a real kubelet reports: an unparsable
image reference (InvalidImageName), `imagePullPolicy: Never` with the image absent
(ErrImageNeverPull), a missing Secret/ConfigMap (CreateContainerConfigError) or a failed pull
(ErrImagePull, alternating with ImagePullBackOff). Pure: the kubelet supplies which references exist.
Container restarts are not simulated (every container runs once, as under `restartPolicy: Never`, which
is what job pods use), and Secret/ConfigMap presence is checked once, when the plan is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from app.simulate.kubelet_script import ContainerScript, PodScript

# Docker reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest], lowercase path.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?/)"
_TAG = r"(?::[\w][\w.-]{0,127})"
_DIGEST = r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})"
_REFERENCE = re.compile(rf"^{_DOMAIN}?{_COMPONENT}(?:/{_COMPONENT})*{_TAG}?{_DIGEST}?$")


def is_valid_image(image: str) -> bool:
    return len(image) <= 255 and bool(_REFERENCE.match(image))


@dataclass(frozen=True)
class Blocker:
    """Why a container cannot start: the waiting reason and message the kubelet reports."""

    reason: str
    message: str


@dataclass(frozen=True)
class ContainerPlan:
    """When a container starts and ends (None: never), and how it ends."""

    name: str
    image: str
    is_init: bool
    is_sidecar: bool
    start: int | None
    end: int | None
    exit_code: int = 0
    oom_killed: bool = False
    blocker: Blocker | None = None
    blocked_from: int | None = None  # the tick the blocker first shows (when the container's turn came)


@dataclass(frozen=True)
class PodPlan:
    containers: tuple[ContainerPlan, ...]
    main_start: int | None  # the tick regular containers start (None: initialisation never finishes)
    evict_at: int | None = None

    @property
    def init(self) -> tuple[ContainerPlan, ...]:
        return tuple(c for c in self.containers if c.is_init)

    @property
    def main(self) -> tuple[ContainerPlan, ...]:
        return tuple(c for c in self.containers if not c.is_init)


def _missing_reference(container: Mapping[str, Any], exists: Callable[[str, str], bool]) -> str | None:
    """The first non-optional Secret/ConfigMap the container needs that does not exist, as a message."""
    refs: list[tuple[str, dict[str, Any]]] = []
    for source in container.get("envFrom") or []:
        refs += [
            (kind, source[key])
            for key, kind in (("secretRef", "secret"), ("configMapRef", "configmap"))
            if key in source
        ]
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        refs += [
            (kind, value_from[key])
            for key, kind in (("secretKeyRef", "secret"), ("configMapKeyRef", "configmap"))
            if key in value_from
        ]
    for kind, ref in refs:
        if not ref.get("optional") and not exists(kind, ref.get("name", "")):
            return f'{kind} "{ref.get("name", "")}" not found'
    return None


def blocker_for(
    container: Mapping[str, Any],
    script: ContainerScript,
    *,
    present_images: Collection[str],
    exists: Callable[[str, str], bool],
) -> Blocker | None:
    image = str(container.get("image", ""))
    if not is_valid_image(image):
        return Blocker(
            "InvalidImageName",
            f'Failed to apply default image tag "{image}": couldn\'t parse image name "{image}": '
            "invalid reference format",
        )
    if container.get("imagePullPolicy") == "Never" and image not in present_images:
        return Blocker(
            "ErrImageNeverPull", f'Container image "{image}" is not present with pull policy of Never'
        )
    if missing := _missing_reference(container, exists):
        return Blocker("CreateContainerConfigError", missing)
    if script.pull_fails:
        return Blocker("ErrImagePull", f'failed to pull and unpack image "{image}": not found')
    return None


def plan_pod(
    pod: Mapping[str, Any],
    script: PodScript,
    *,
    present_images: Collection[str] = (),
    exists: Callable[[str, str], bool] = lambda kind, name: True,
) -> PodPlan:
    """Lay out the pod's timeline; `exists(kind, name)` says whether a secret/configmap is there."""
    spec = pod.get("spec") or {}
    plans: list[ContainerPlan] = []
    tick: int | None = 1  # tick 0 creates the sandbox
    for container in spec.get("initContainers") or []:
        plan = _plan_container(
            container, script, tick, is_init=True, present_images=present_images, exists=exists
        )
        plans.append(plan)
        if plan.is_sidecar:
            tick = None if plan.start is None else plan.start + 1
        else:
            # A failed or never-ending init container stops the pod from ever initialising.
            tick = plan.end if plan.exit_code == 0 else None
    for container in spec.get("containers") or []:
        plans.append(
            _plan_container(
                container, script, tick, is_init=False, present_images=present_images, exists=exists
            )
        )
    return PodPlan(tuple(plans), main_start=tick, evict_at=script.evict_after_ticks)


def _plan_container(
    container: Mapping[str, Any],
    script: PodScript,
    tick: int | None,
    *,
    is_init: bool,
    present_images: Collection[str],
    exists: Callable[[str, str], bool],
) -> ContainerPlan:
    name, image = container["name"], str(container.get("image", ""))
    behaviour = script.containers.get(name, ContainerScript())
    is_sidecar = is_init and container.get("restartPolicy") == "Always"
    blocker = (
        blocker_for(container, behaviour, present_images=present_images, exists=exists)
        if tick is not None
        else None
    )
    if tick is None or blocker is not None:
        return ContainerPlan(name, image, is_init, is_sidecar, None, None, blocker=blocker, blocked_from=tick)
    ends = None if is_sidecar or behaviour.run_ticks is None else tick + behaviour.run_ticks
    return ContainerPlan(
        name, image, is_init, is_sidecar, tick, ends, behaviour.exit_code, behaviour.oom_killed
    )
