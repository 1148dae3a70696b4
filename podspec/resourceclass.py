"""Resource classes: named sizes chosen per job by the agent tag ``resource_class`` (reference §3.4).

The controller's ``resource-classes`` map a name to container resources, pod-level resources and a
node selector. A job tagged ``resource_class=large`` gets class ``large``; an untagged job gets
``default-resource-class-name`` if set. The class is applied before patches, to command containers
only (the agent and checkout containers stay small), and its keys win over the podSpec's.
"""

from __future__ import annotations

from typing import Any

from podspec.config import PodConfig, ResourceClass
from podspec.errors import BuildError
from podspec.gojson import clone
from podspec.job import Job
from podspec.patching import is_command_container

RESOURCE_CLASS_TAG = "resource_class"


def select_resource_class(job: Job, config: PodConfig) -> ResourceClass | None:
    name = job.agent_tags.get(RESOURCE_CLASS_TAG) or config.default_resource_class_name
    if not name:
        return None
    if name not in config.resource_classes:
        known = ", ".join(sorted(config.resource_classes)) or "none are configured"
        raise BuildError(RESOURCE_CLASS_TAG, f"resource class {name!r} does not exist (known: {known})")
    return config.resource_classes[name]


def apply_resource_class(spec: dict[str, Any], resource_class: ResourceClass) -> None:
    if resource_class.node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **resource_class.node_selector}
    if resource_class.resource:
        for container in spec.get("containers", []):
            if is_command_container(container):
                container["resources"] = _merged(container.get("resources", {}), resource_class.resource)
    if resource_class.pod_resource:
        spec["resources"] = _merged(spec.get("resources", {}), resource_class.pod_resource)


def _merged(current: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = clone(current)
    for kind in ("requests", "limits"):
        if overlay.get(kind):
            merged[kind] = {**merged.get(kind, {}), **overlay[kind]}
    return merged
