"""``build``: one confirmed Buildkite job + the controller's pod config → one Pod manifest.

Pure: no I/O, no clock. The caller fetches the PodTemplate a job names (``pod_template_name``) and
passes its ``.template.spec`` in. The steps, and their order, are agent-stack-k8s' (reference §3.6),
because the precedence between plugin, controller config and the step's ``image:`` is part of what
pipelines rely on:

 1. start from the plugin ``podSpec``, else the PodTemplate's spec, else nothing;
 2. default grace period; workspace and agent-config volumes;
 3. command containers (§4.5);  4. sidecars as native sidecars;  5. resource class;
 6. ``agent`` then ``checkout``;  7. ``copy-agent`` + ``imagecheck-*``, ``restartPolicy: Never``;
 8. controller ``pod-spec-patch``;  9. the step's ``image:``;  10. plugin ``podSpecPatch``;
11. drop ``checkout`` if skipped;  12. one volume mount per path and container (first wins).

Unlike agent-stack-k8s we create a bare Pod (not a batch Job): the Job's ``activeDeadlineSeconds``
moves onto the pod, and our watcher replaces the Job's TTL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from podspec import containers as ct
from podspec.agentenv import agent_config_volumes
from podspec.config import PodConfig
from podspec.errors import BuildError
from podspec.gojson import Decoder, clone
from podspec.imagecheck import check_patched_images, digest_default, plan_image_checks
from podspec.images import parse_image_reference
from podspec.inputs import Inputs, make_inputs
from podspec.job import Job
from podspec.metadata import (
    check_metadata,
    check_spec_metadata,
    is_dns_subdomain,
    pod_annotations,
    pod_labels,
)
from podspec.params import k8s_table
from podspec.patching import apply_patch, is_command_container
from podspec.plugin import KubernetesPlugin, parse_plugins
from podspec.resourceclass import apply_resource_class, select_resource_class


@dataclass(frozen=True, slots=True)
class BuiltPod:
    """The Pod to create, and notes for the job log (ignored plugin keys, skipped tag labels)."""

    manifest: dict[str, Any]
    warnings: tuple[str, ...] = ()


def pod_template_name(job: Job) -> str | None:
    """The PodTemplate ``build`` will need for ``job`` (None if it needs none).

    Raises ``BuildError`` for an unreadable plugin config, exactly as ``build`` would.
    """
    plugin = parse_plugins(job.env.get("BUILDKITE_PLUGINS")).plugin
    if plugin is None or plugin.pod_spec is not None:
        return None
    return plugin.pod_template


def build(
    job: Job, *, config: PodConfig, pod_template_spec: dict[str, Any] | None = None, strict: bool = False
) -> BuiltPod:
    """The Pod manifest for ``job``. Raises ``BuildError`` naming the field when it cannot be built.

    ``strict`` (lint mode) turns unknown plugin keys from warnings into errors.
    """
    parsed = parse_plugins(job.env.get("BUILDKITE_PLUGINS"), strict=strict)
    if parsed.plugin is not None and config.prohibit_kubernetes_plugin:
        raise BuildError(
            "kubernetes", "the kubernetes plugin is prohibited on this cluster (prohibit-kubernetes-plugin)"
        )
    plugin = parsed.plugin or KubernetesPlugin()
    warnings = list(parsed.warnings)
    check_metadata(plugin.metadata.labels, plugin.metadata.annotations, field="kubernetes.metadata")
    spec, template_name = _starting_spec(plugin, pod_template_spec, strict=strict, warnings=warnings)
    spec.setdefault("terminationGracePeriodSeconds", config.default_termination_grace_period_seconds)
    inputs = make_inputs(job, config=config, plugin=plugin, spec=spec)
    spec = _patched(_assembled(spec, inputs), inputs)
    _finish(spec, inputs)
    check_patched_images(spec, config=config, workspace_mount=inputs.workspace_mount)
    metadata = _metadata(job, config=config, plugin=plugin, template_name=template_name, warnings=warnings)
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return BuiltPod(manifest, tuple(warnings))


def _metadata(
    job: Job, *, config: PodConfig, plugin: KubernetesPlugin, template_name: str | None, warnings: list[str]
) -> dict[str, Any]:
    labels = pod_labels(
        job,
        controller_id=config.id,
        user=[config.default_metadata.labels, plugin.metadata.labels],
        warnings=warnings,
    )
    annotations = pod_annotations(
        job,
        user=[config.default_metadata.annotations, plugin.metadata.annotations],
        pod_template_name=template_name,
        sidecar_names=[s.get("name") or f"sidecar-{i}" for i, s in enumerate(plugin.sidecars)],
    )
    name = _pod_name(job, config)
    return {"name": name, "namespace": config.namespace, "labels": labels, "annotations": annotations}


def _starting_spec(
    plugin: KubernetesPlugin, template_spec: dict[str, Any] | None, *, strict: bool, warnings: list[str]
) -> tuple[dict[str, Any], str | None]:
    if plugin.pod_spec is not None:
        return clone(plugin.pod_spec), None
    if not plugin.pod_template:
        return {}, None
    name = plugin.pod_template
    if template_spec is None:
        raise BuildError("kubernetes.podTemplate", f"PodTemplate {name!r} was not fetched for this job")
    path = f"podTemplate[{name}].template.spec"
    check_spec_metadata(template_spec, field=path)
    decoder = Decoder(k8s_table(), strict=strict)
    spec = decoder.decode(template_spec, ["ref", "PodSpec"], path)
    warnings.extend(decoder.warnings)
    return clone(spec), name


def _assembled(spec: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    """Steps 2-7: everything the controller adds before any patch."""
    config = inputs.config
    workspace = (
        clone(config.workspace_volume) if config.workspace_volume else {"name": "workspace", "emptyDir": {}}
    )
    spec["volumes"] = [*spec.get("volumes", []), workspace, *agent_config_volumes(config.agent_config)]
    spec["containers"] = ct.command_containers(spec.get("containers", []), inputs)
    spec["initContainers"] = [*spec.get("initContainers", []), *ct.sidecars(inputs)]
    resource_class = select_resource_class(inputs.job, config)
    if resource_class is not None:
        apply_resource_class(spec, resource_class)
    spec["containers"].append(ct.agent_container(inputs, command_count=len(spec["containers"])))
    checkout = ct.checkout_container(inputs)
    if checkout is not None:
        spec["containers"].append(checkout)
        spec["volumes"].extend(ct.checkout_volumes(inputs))
    copy_agent = ct.copy_agent_container(inputs, pull_policy=digest_default(config.image, config))
    spec["initContainers"].insert(0, copy_agent)
    checks = plan_image_checks(spec, config=config, workspace_mount=inputs.workspace_mount)
    spec["initContainers"][1:1] = checks
    spec["restartPolicy"] = "Never"
    return spec


def _patched(spec: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    """Steps 8-10: controller patch, the step's ``image:``, plugin patch."""
    patch = functools.partial(
        apply_patch,
        step_command=inputs.job.command,
        interposer=inputs.interposer,
        allow_unsafe=inputs.config.allow_pod_spec_patch_unsafe_command_modification,
    )
    if inputs.config.pod_spec_patch:
        spec = patch(spec, inputs.config.pod_spec_patch, field="pod-spec-patch")
    image = inputs.job.env.get("BUILDKITE_IMAGE")
    if image:
        _set_step_image(spec, image)
    if inputs.plugin.pod_spec_patch:
        spec = patch(spec, inputs.plugin.pod_spec_patch, field="kubernetes.podSpecPatch")
    return spec


def _set_step_image(spec: dict[str, Any], image: str) -> None:
    try:
        parse_image_reference(image)
    except ValueError:
        raise BuildError(
            "image", f'invalid reference format "{image}" (from the step\'s image: attribute)'
        ) from None
    for container in spec.get("containers", []):
        if is_command_container(container):
            container["image"] = image


def _finish(spec: dict[str, Any], inputs: Inputs) -> None:
    """Steps 11-12 and the bare-Pod rules."""
    if inputs.checkout.skip:
        spec["containers"] = [c for c in spec.get("containers", []) if c.get("name") != "checkout"]
    for list_name in ("initContainers", "containers"):
        for container in spec.get(list_name, []):
            _dedupe_mounts(container)
    deadline = inputs.plugin.job_active_deadline_seconds or inputs.config.job_active_deadline_seconds
    user_deadline = spec.get("activeDeadlineSeconds")
    spec["activeDeadlineSeconds"] = min(deadline, user_deadline) if user_deadline else deadline
    if spec.get("restartPolicy") != "Never":
        # A restarted agent would try to acquire a job it already ran; a Job would refuse this too.
        raise BuildError(
            "restartPolicy", f"job pods must use restartPolicy Never (got {spec.get('restartPolicy')!r})"
        )
    _check_unique_names(spec, "volumes")
    _check_unique_names(spec, "initContainers", "containers")
    _check_images_set(spec)


def _check_images_set(spec: dict[str, Any]) -> None:
    """A patch that adds a container without an image would be refused by Kubernetes; say it here."""
    for list_name in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(list_name, [])):
            if not container.get("image"):
                raise BuildError(
                    f"{list_name}[{index}].image", f"container {container.get('name')!r} has no image"
                )


def _dedupe_mounts(container: dict[str, Any]) -> None:
    mounts = container.get("volumeMounts")
    if not mounts:
        return
    seen: set[str] = set()
    kept = []
    for mount in mounts:
        path = mount.get("mountPath")
        if path not in seen:
            seen.add(path)
            kept.append(mount)
    container["volumeMounts"] = kept


def _check_unique_names(spec: dict[str, Any], *list_names: str) -> None:
    """Kubernetes would refuse the pod; say which name clashes (often a user container named agent)."""
    seen: set[str] = set()
    for list_name in list_names:
        for index, item in enumerate(spec.get(list_name, [])):
            name = item.get("name")
            if not name:
                image = item.get("image", "")
                raise BuildError(
                    f"{list_name}[{index}].name", f"is required (the container with image {image!r})"
                )
            if name in seen:
                raise BuildError(f"{list_name}[{index}].name", f"the name {name!r} is used twice in the pod")
            seen.add(name)


def _pod_name(job: Job, config: PodConfig) -> str:
    name = f"{config.job_prefix}{job.uuid}"
    if not is_dns_subdomain(name):
        raise BuildError("job.uuid", f"pod name {name!r} is not a valid Kubernetes name")
    return name
