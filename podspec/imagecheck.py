"""Pull policies and ``imagecheck-<n>`` init containers (reference §4.4).

An image that cannot be pulled should fail the pod *before* the agent acquires the job, while the
controller can still fail the job with a clear message. So every image of a regular container gets
an init container that pulls it and runs ``/workspace/tini-static --version`` (a static binary, so it
works in any image), unless an earlier init container already pulls that image with an equal or
stronger policy (``copy-agent`` normally covers the agent image).

Policies, strongest first: ``Always`` > ``IfNotPresent`` > ``Never``. A check pulls with the image's
strongest "nominal" policy: the container's own, else ``default-image-check-pull-policy``, else
``default-image-pull-policy``, else ``Always`` (``IfNotPresent`` for a digest-pinned image, which
cannot change). App containers get their own, else ``default-image-pull-policy``, else the same
digest rule — downgraded from ``Always`` to ``IfNotPresent`` when an init container has just pulled
the image with ``Always``. Checks are numbered in container order, so the same job always yields the
same pod (agent-stack-k8s numbers them in Go map order).

Unlike agent-stack-k8s, images that only arrive with a patch or the step's ``image:`` are checked too
(``check_patched_images``, run after the patches): otherwise a typo in ``image:`` surfaces only after
the agent has taken the job, as a five-minute "containers did not connect" timeout.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

from podspec.config import PodConfig
from podspec.errors import BuildError
from podspec.images import is_digested, parse_image_reference
from podspec.patching import TINI

STRENGTH = {"Never": 0, "IfNotPresent": 1, "Always": 2}
CHECK_REQUESTS = {"cpu": "100m", "memory": "64Mi"}
_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}  # fmt: skip


def digest_default(image: str, config: PodConfig) -> str:
    """``default-image-pull-policy``, else Always (IfNotPresent when the image is digest-pinned)."""
    if config.default_image_pull_policy:
        return config.default_image_pull_policy
    return "IfNotPresent" if _is_digested(image) else "Always"


def kubelet_default(image: str) -> str:
    """What Kubernetes assumes for a container without a policy: Always only for ``:latest``/untagged."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


def plan_image_checks(
    spec: dict[str, Any], *, config: PodConfig, workspace_mount: dict[str, Any]
) -> list[dict[str, Any]]:
    """``imagecheck-*`` containers for ``spec``; also sets the regular containers' pull policies.

    ``spec["initContainers"]`` must already hold every earlier init container (``copy-agent`` first).
    """
    containers = spec.get("containers", [])
    _check_references(containers)
    _check_policies(spec)
    pulled = _init_pulls(spec.get("initContainers", []))
    nominal: dict[str, str] = {}
    for container in containers:
        policy = container.get("imagePullPolicy") or config.default_image_check_pull_policy
        policy = policy or digest_default(container["image"], config)
        nominal[container["image"]] = _stronger(nominal.get(container["image"]), policy)
    checks: list[dict[str, Any]] = []
    if not config.skip_image_check_containers:
        for image, policy in nominal.items():
            covered = pulled.get(image)
            if covered is not None and STRENGTH[covered] >= STRENGTH[policy]:
                continue
            checks.append(_check_container(len(checks), image, policy, workspace_mount, config))
            pulled[image] = policy
    for container in containers:
        _set_app_policy(container, pulled.get(container["image"]), config)
    return checks


def check_patched_images(spec: dict[str, Any], *, config: PodConfig, workspace_mount: dict[str, Any]) -> None:
    """After the patches: an ``imagecheck-*`` for every regular container's image nothing pulls yet.

    The new checks go right after the existing ones, with the nominal policy of a fresh image; a
    container whose image was just pulled with ``Always`` is downgraded to ``IfNotPresent`` as usual.
    A check of an image that no container runs any more (a patch replaced it) is dropped.
    """
    if config.skip_image_check_containers:
        return
    containers = spec.get("containers", [])
    _check_references(containers)
    used = {container["image"] for container in containers}
    # A check whose image a patch replaced everywhere would only pull an image nobody runs.
    init_containers = [
        c for c in spec.get("initContainers", []) if not (_is_check(c) and c.get("image") not in used)
    ]
    pulled = _init_pulls(init_containers)
    names = {c.get("name") for c in init_containers}
    added: list[dict[str, Any]] = []
    for container in containers:
        image = container["image"]
        if image in pulled:
            continue  # checked (or pulled) before the patches, with the policy the first pass chose
        # The container's policy was chosen for the image it had before the patch; the new image
        # gets the nominal check policy a fresh image gets.
        policy = config.default_image_check_pull_policy or digest_default(image, config)
        index = 0
        while f"imagecheck-{index}" in names:
            index += 1
        added.append(_check_container(index, image, policy, workspace_mount, config))
        names.add(f"imagecheck-{index}")
        pulled[image] = policy
        if policy == "Always":
            container["imagePullPolicy"] = "IfNotPresent"  # the check has just pulled it
    checks_at = [i for i, c in enumerate(init_containers) if _is_check(c)]
    at = checks_at[-1] + 1 if checks_at else 1  # after the last check, else after copy-agent
    init_containers[at:at] = added
    spec["initContainers"] = init_containers


def _is_check(container: dict[str, Any]) -> bool:
    """One of ours: named ``imagecheck-*`` and still running the check (a patch may have changed it)."""
    return (
        str(container.get("name", "")).startswith("imagecheck-")
        and container.get("command") == [TINI]
        and container.get("args") == ["--version"]
    )


def _stronger(current: str | None, policy: str) -> str:
    return policy if current is None or STRENGTH[policy] > STRENGTH[current] else current


def _init_pulls(init_containers: list[dict[str, Any]]) -> dict[str, str]:
    pulled: dict[str, str] = {}
    for container in init_containers:
        image = container.get("image")
        if isinstance(image, str) and image:
            policy = container.get("imagePullPolicy") or kubelet_default(image)
            pulled[image] = _stronger(pulled.get(image), policy)
    return pulled


def _set_app_policy(container: dict[str, Any], pulled_with: str | None, config: PodConfig) -> None:
    policy = container.get("imagePullPolicy") or digest_default(container["image"], config)
    if policy == "Always" and pulled_with == "Always":
        policy = "IfNotPresent"  # the init container has just pulled it
    container["imagePullPolicy"] = policy


def _check_container(
    index: int, image: str, policy: str, workspace_mount: dict[str, Any], config: PodConfig
) -> dict[str, Any]:
    limits = {
        "cpu": config.image_check_container_cpu_limit,
        "memory": config.image_check_container_memory_limit,
    }
    # A limit below the default request would make the pod invalid; requests never exceed limits.
    requests = {k: v if quantity(v) <= quantity(limits[k]) else limits[k] for k, v in CHECK_REQUESTS.items()}
    return {
        "name": f"imagecheck-{index}",
        "image": image,
        "imagePullPolicy": policy,
        "command": [TINI],
        "args": ["--version"],
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [dict(workspace_mount)],
    }


# Pure functions of the image string; the same few images recur in every pod.
_is_digested = functools.lru_cache(maxsize=1024)(is_digested)


@functools.lru_cache(maxsize=1024)
def image_problem(image: str) -> str | None:
    """Why ``image`` is not a valid reference, or None when it is."""
    try:
        parse_image_reference(image)
    except ValueError as exc:
        return str(exc).removeprefix("invalid reference format: ")
    return None


def _check_references(containers: list[dict[str, Any]]) -> None:
    bad = []
    for index, container in enumerate(containers):
        image = container.get("image") or ""
        problem = image_problem(image)
        if problem is not None:
            bad.append((index, container.get("name", ""), image, problem))
    if len(bad) == 1:
        index, name, image, problem = bad[0]
        message = f'invalid reference format "{image}" for container "{name}" ({problem})'
        raise BuildError(f"containers[{index}].image", message)
    if bad:
        rows = "\n".join(f"  {name:<20} {image!r}: {problem}" for _, name, image, problem in bad)
        raise BuildError("containers", f"invalid image references:\n  {'CONTAINER':<20} IMAGE\n{rows}")


def _check_policies(spec: dict[str, Any]) -> None:
    for list_name in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(list_name, [])):
            policy = container.get("imagePullPolicy")
            if policy and policy not in STRENGTH:
                raise BuildError(
                    f"{list_name}[{index}].imagePullPolicy",
                    f"must be one of Always, IfNotPresent, Never (got {policy!r})",
                )


def quantity(value: str | int | float) -> Decimal:
    """The numeric value of a Kubernetes quantity (validated earlier by ``gojson.is_quantity``)."""
    text = str(value)
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"):
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * _SUFFIX[suffix]
    return Decimal(text)
