"""Pod-specific apiserver behaviour: defaulting on create, what may change on update, graceful deletion,
binding to a node, and the status subresource.

These mirror the registry strategy of pods in kube-apiserver: defaults are filled in before validation
(so clients see `restartPolicy`, `imagePullPolicy`, … on the returned object); a user update keeps the
old status and a status update keeps the old spec; deleting a pod that is bound to a node and not yet
terminal only sets `deletionTimestamp` — the kubelet finishes it — while an unbound or finished pod
goes at once.
"""

from __future__ import annotations

import copy
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from app.simulate import kube_status

DEFAULT_GRACE_SECONDS = 30


def _pull_policy(image: str) -> str:
    # An untagged or :latest image is re-pulled every time; a pinned tag or digest is not.
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    return "Always" if ":" not in name or name.endswith(":latest") else "IfNotPresent"


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("imagePullPolicy", _pull_policy(str(container.get("image", ""))))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})


def _qos_class(spec: dict[str, Any]) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k) is not None
        and (r.get("requests") or {}).get(k, r["limits"][k]) == r["limits"][k]
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


# What the DefaultTolerationSeconds admission plugin adds: survive a node outage for 5 minutes.
NODE_OUTAGE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
TOLERATION_SECONDS = 300


def _tolerates(toleration: Any, key: str) -> bool:
    if not isinstance(toleration, dict) or toleration.get("effect", "") not in ("", "NoExecute"):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key", "") in ("", key)
    return toleration.get("key") == key


def _default_tolerations(spec: dict[str, Any]) -> None:
    tolerations = spec.get("tolerations")
    if tolerations is not None and not isinstance(tolerations, list):
        return  # malformed: validation reports it
    added = [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": TOLERATION_SECONDS}
        for key in NODE_OUTAGE_TAINTS
        if not any(_tolerates(t, key) for t in tolerations or [])
    ]
    if added:
        spec["tolerations"] = [*(tolerations or []), *added]


# What the ServiceAccount admission plugin mounts into every container unless the pod opts out.
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphabet (no vowels, no look-alikes)


def _token_volume(name: str) -> dict[str, Any]:
    token = {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    ca = {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    field = {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    namespace = {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": field}]}}
    return {"name": name, "projected": {"sources": [token, ca, namespace], "defaultMode": 420}}


def _mount_service_account_token(spec: dict[str, Any]) -> None:
    volumes, containers = (
        spec.get("volumes"),
        (spec.get("initContainers") or []) + (spec.get("containers") or []),
    )
    if spec.get("automountServiceAccountToken") is False or not isinstance(volumes or [], list):
        return
    if not all(isinstance(c, dict) and isinstance(c.get("volumeMounts") or [], list) for c in containers):
        return  # malformed: validation reports it
    name = "kube-api-access-" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
    mount = {"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}
    needing = [
        c
        for c in containers
        if not any(
            isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH
            for m in c.get("volumeMounts") or []
        )
    ]
    if not needing:
        return
    spec["volumes"] = [*(volumes or []), _token_volume(name)]
    for container in needing:
        container["volumeMounts"] = [*(container.get("volumeMounts") or []), dict(mount)]


def apply_defaults(pod: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `pod` with the defaults the apiserver fills in on create."""
    pod = copy.deepcopy(pod)
    spec = pod.setdefault("spec", {})
    for key, value in (
        ("restartPolicy", "Always"),
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
        ("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS),
        ("securityContext", {}),
        ("enableServiceLinks", True),
        ("priority", 0),
        ("serviceAccountName", "default"),
    ):
        spec.setdefault(key, value)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")  # the Priority admission plugin
    spec.setdefault("serviceAccount", spec["serviceAccountName"])  # the deprecated alias, still filled in
    _default_tolerations(spec)
    _mount_service_account_token(spec)
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if isinstance(container, dict):
            _default_container(container)
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
    pod.setdefault("metadata", {})["generation"] = 1
    return pod


def keep_status(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A write to the main resource cannot change status (that is what `pods/status` is for)."""
    merged = dict(new)
    merged["status"] = old.get("status", {})
    if new.get("spec") != old.get("spec"):
        merged["metadata"] = {**new["metadata"], "generation": old["metadata"].get("generation", 1) + 1}
    return merged


def keep_spec(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A write to `pods/status` changes only status; spec and metadata stay as stored."""
    merged = copy.deepcopy(old)
    merged["status"] = new.get("status") or {}
    return merged


def is_terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def grace_seconds(pod: dict[str, Any], requested: int | None) -> int:
    """How long deletion may take: 0 (delete now) for unbound or finished pods, as the apiserver decides."""
    if not (pod.get("spec") or {}).get("nodeName") or is_terminal(pod):
        return 0
    if requested is not None:
        return max(requested, 0)
    return int((pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))


def mark_deleting(pod: dict[str, Any], *, grace: int, now: datetime) -> dict[str, Any] | None:
    """Set `deletionTimestamp`; None if the pod is already terminating with an equal or shorter grace."""
    meta = pod["metadata"]
    current = meta.get("deletionGracePeriodSeconds")
    if current is not None and current <= grace:
        return None
    marked = copy.deepcopy(pod)
    marked["metadata"]["deletionTimestamp"] = (now + timedelta(seconds=grace)).strftime("%Y-%m-%dT%H:%M:%SZ")
    marked["metadata"]["deletionGracePeriodSeconds"] = grace
    if current is None and "generation" in meta:
        marked["metadata"]["generation"] = meta["generation"] + 1  # the first mark is a new generation
    return marked


def bind(pod: dict[str, Any], binding: Any, *, now: str) -> dict[str, Any]:
    """Apply a `Binding` (what the scheduler posts to `pods/binding`)."""
    target = binding.get("target") if isinstance(binding, dict) else None
    node = target.get("name") if isinstance(target, dict) else None
    name = pod["metadata"]["name"]
    if not isinstance(node, str) or not node:
        raise kube_status.invalid(
            "Binding", name, [kube_status.Cause("target.name", "Required value", "FieldValueRequired")]
        )
    if (pod.get("spec") or {}).get("nodeName"):
        why = f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"'
        raise kube_status.conflict("pods/binding", name, why=why)
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = node
    conditions = [c for c in bound["status"].get("conditions", []) if c.get("type") != "PodScheduled"]
    conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": now})
    bound["status"]["conditions"] = conditions
    return bound


def utc_now(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
