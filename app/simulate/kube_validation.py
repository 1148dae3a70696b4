"""Validation of Pod manifests the way kube-apiserver does it, as a pure function.

`validate_pod(manifest) -> list[Cause]` first checks structure against the strict JSON schema bundled in
kubernetes-validate (unknown fields, wrong types), then the rules schemas cannot express: DNS-1123 names,
unique container and volume names, volume mount references, quantities and `requests <= limits`, enums,
label keys and values, env var names, and `restartPolicy: Always` only on init containers (native
sidecars). The fake apiserver answers 422 Invalid with these causes; the pod builder's tests call it
directly to prove their manifests would be accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema

from app.simulate import kube_names
from app.simulate.kube_quantity import parse_quantity
from app.simulate.kube_schema import validator
from app.simulate.kube_status import Cause

Problems = list[Cause]

RESTART_POLICIES = ("Always", "OnFailure", "Never")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
PROTOCOLS = ("TCP", "UDP", "SCTP")


def _required(field: str) -> Cause:
    return Cause(field, "Required value", "FieldValueRequired")


def _invalid(field: str, value: Any, message: str) -> Cause:
    return Cause(field, f'Invalid value: "{value}": {message}', "FieldValueInvalid")


def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    listed = ", ".join(f'"{a}"' for a in allowed)
    return Cause(field, f'Unsupported value: "{value}": supported values: {listed}', "FieldValueNotSupported")


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def schema_causes(manifest: Any, schema_file: str = "pod-v1.json") -> Problems:
    """Structural problems against the strict schema (one cause per violation, deepest path first)."""
    errors = sorted(
        validator(schema_file).iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path))
    )
    return [Cause(_path(e.absolute_path), _schema_message(e), "FieldValueInvalid") for e in errors]


def _schema_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return f"field not declared in schema: {error.message}"
    return error.message


def validate_pod(manifest: Any) -> Problems:
    """All the reasons the apiserver would refuse to create this Pod (empty list = acceptable)."""
    if not isinstance(manifest, dict):
        return [Cause("<root>", "must be a JSON object", "FieldValueTypeInvalid")]
    return schema_causes(manifest) or pod_rule_causes(manifest)


def pod_rule_causes(manifest: dict[str, Any]) -> Problems:
    """The rules beyond the schema, for a manifest the schema accepts (``validate_pod``'s second half)."""
    causes = validate_metadata(
        manifest.get("metadata") or {}, "metadata", name_rule=kube_names.dns1123_subdomain
    )
    return causes + validate_pod_spec(manifest.get("spec") or {}, "spec")


def validate_metadata(meta: dict[str, Any], path: str, *, name_rule: Callable[[str], list[str]]) -> Problems:
    causes: Problems = []
    name, generate = meta.get("name") or "", meta.get("generateName") or ""
    if not name and not generate:
        causes.append(
            Cause(f"{path}.name", "Required value: name or generateName is required", "FieldValueRequired")
        )
    if name:
        causes += [_invalid(f"{path}.name", name, m) for m in name_rule(name)]
    if generate and not name:
        # The prefix only has to be valid once a random suffix is appended.
        causes += [_invalid(f"{path}.generateName", generate, m) for m in name_rule(generate + "x")]
    causes += _validate_labels(meta.get("labels") or {}, f"{path}.labels")
    for key in meta.get("annotations") or {}:
        causes += [_invalid(f"{path}.annotations", key, m) for m in kube_names.qualified_name(key)]
    return causes


def _validate_labels(labels: dict[str, str], path: str) -> Problems:
    causes: Problems = []
    for key, value in labels.items():
        causes += [_invalid(path, key, m) for m in kube_names.qualified_name(key)]
        causes += [_invalid(f"{path}[{key}]", value, m) for m in kube_names.label_value(value)]
    return causes


def _enum(spec: dict[str, Any], key: str, allowed: tuple[str, ...], path: str) -> Problems:
    value = spec.get(key)
    return (
        [_unsupported(f"{path}.{key}", value, allowed)] if value is not None and value not in allowed else []
    )


def validate_pod_spec(spec: dict[str, Any], path: str) -> Problems:
    causes = _enum(spec, "restartPolicy", RESTART_POLICIES, path) + _enum(
        spec, "dnsPolicy", DNS_POLICIES, path
    )
    containers, inits = spec.get("containers") or [], spec.get("initContainers") or []
    if not containers:
        causes.append(_required(f"{path}.containers"))
    volumes = spec.get("volumes") or []
    causes += _validate_volumes(volumes, f"{path}.volumes")
    volume_names = {v.get("name") for v in volumes}
    seen: set[str] = set()
    for group, items in (("initContainers", inits), ("containers", containers)):
        for index, container in enumerate(items):
            where = f"{path}.{group}[{index}]"
            causes += _validate_container(container, where, volume_names, is_init=group == "initContainers")
            name = container.get("name", "")
            if name in seen:
                causes.append(Cause(f"{where}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
            seen.add(name)
    causes += _validate_labels(spec.get("nodeSelector") or {}, f"{path}.nodeSelector")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline <= 0:
        causes.append(
            _invalid(f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive")
        )
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and grace < 0:
        causes.append(
            _invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0")
        )
    return causes


def _validate_volumes(volumes: list[dict[str, Any]], path: str) -> Problems:
    causes: Problems = []
    seen: set[str] = set()
    for index, volume in enumerate(volumes):
        name = volume.get("name", "")
        where = f"{path}[{index}].name"
        causes += [_invalid(where, name, m) for m in kube_names.dns1123_label(name)]
        if name in seen:
            causes.append(Cause(where, f'Duplicate value: "{name}"', "FieldValueDuplicate"))
        seen.add(name)
        if len([k for k in volume if k != "name"]) > 1:
            causes.append(
                Cause(
                    f"{path}[{index}]",
                    "Forbidden: may not specify more than 1 volume type",
                    "FieldValueForbidden",
                )
            )
    return causes


def _validate_container(
    container: dict[str, Any], path: str, volumes: set[Any], *, is_init: bool
) -> Problems:
    name = container.get("name", "")
    causes = [_invalid(f"{path}.name", name, m) for m in kube_names.dns1123_label(name)]
    if not container.get("image"):
        causes.append(_required(f"{path}.image"))
    causes += _enum(container, "imagePullPolicy", PULL_POLICIES, path)
    causes += _enum(container, "terminationMessagePolicy", TERMINATION_MESSAGE_POLICIES, path)
    restart = container.get("restartPolicy")
    if restart is not None and not is_init:
        causes.append(
            Cause(
                f"{path}.restartPolicy",
                "Forbidden: may not be set for non-init containers",
                "FieldValueForbidden",
            )
        )
    elif restart is not None and restart != "Always":
        causes.append(_unsupported(f"{path}.restartPolicy", restart, ("Always",)))
    causes += _validate_env(container.get("env") or [], f"{path}.env")
    causes += _validate_mounts(container.get("volumeMounts") or [], f"{path}.volumeMounts", volumes)
    causes += _validate_ports(container.get("ports") or [], f"{path}.ports")
    return causes + _validate_resources(container.get("resources") or {}, f"{path}.resources")


def _validate_env(env: list[dict[str, Any]], path: str) -> Problems:
    causes: Problems = []
    for index, var in enumerate(env):
        name = var.get("name", "")
        causes += [_invalid(f"{path}[{index}].name", name, m) for m in kube_names.env_var_name(name)]
        if var.get("value") and var.get("valueFrom"):
            causes.append(
                _invalid(f"{path}[{index}].valueFrom", "", "may not be specified when `value` is not empty")
            )
    return causes


def _validate_mounts(mounts: list[dict[str, Any]], path: str, volumes: set[Any]) -> Problems:
    causes: Problems = []
    seen_paths: set[str] = set()
    for index, mount in enumerate(mounts):
        name, mount_path = mount.get("name", ""), mount.get("mountPath", "")
        if name not in volumes:
            causes.append(Cause(f"{path}[{index}].name", f'Not found: "{name}"', "FieldValueNotFound"))
        if not mount_path:
            causes.append(_required(f"{path}[{index}].mountPath"))
        elif mount_path in seen_paths:
            causes.append(_invalid(f"{path}[{index}].mountPath", mount_path, "must be unique"))
        seen_paths.add(mount_path)
    return causes


def _validate_ports(ports: list[dict[str, Any]], path: str) -> Problems:
    causes: Problems = []
    for index, port in enumerate(ports):
        number = port.get("containerPort", 0)
        if not 1 <= number <= 65535:
            causes.append(
                _invalid(f"{path}[{index}].containerPort", number, "must be between 1 and 65535, inclusive")
            )
        causes += _enum(port, "protocol", PROTOCOLS, f"{path}[{index}]")
    return causes


def _quantities(amounts: dict[str, Any], path: str) -> tuple[dict[str, Any], Problems]:
    parsed, causes = {}, []
    for resource, amount in amounts.items():
        causes += [_invalid(f"{path}[{resource}]", resource, m) for m in kube_names.qualified_name(resource)]
        try:
            parsed[resource] = parse_quantity(amount)
        except ValueError as error:
            causes.append(_invalid(f"{path}[{resource}]", amount, str(error)))
            continue
        if parsed[resource] < 0:
            causes.append(_invalid(f"{path}[{resource}]", amount, "must be greater than or equal to 0"))
    return parsed, causes


def _validate_resources(resources: dict[str, Any], path: str) -> Problems:
    limits, causes = _quantities(resources.get("limits") or {}, f"{path}.limits")
    requests, more = _quantities(resources.get("requests") or {}, f"{path}.requests")
    causes += more
    for resource, requested in requests.items():
        if resource in limits and requested > limits[resource]:
            value = resources["requests"][resource]
            causes.append(
                _invalid(
                    f"{path}.requests",
                    value,
                    f"must be less than or equal to {resource} limit of {resources['limits'][resource]}",
                )
            )
    return causes


def validate_pod_update(old: dict[str, Any], new: dict[str, Any]) -> Problems:
    """Pod specs are immutable apart from images, activeDeadlineSeconds and added tolerations."""

    def mutable_stripped(spec: dict[str, Any]) -> dict[str, Any]:
        stripped = {k: v for k, v in spec.items() if k not in ("activeDeadlineSeconds", "tolerations")}
        for group in ("containers", "initContainers"):
            stripped[group] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(group) or []]
        return stripped

    if mutable_stripped(old.get("spec") or {}) == mutable_stripped(new.get("spec") or {}):
        return []
    message = (
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
        "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
        "to 1 if it was previously negative)"
    )
    return [Cause("spec", message, "FieldValueForbidden")]
