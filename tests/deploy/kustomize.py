"""Renders a kustomization in Python, for the subset deploy/ uses (no kustomize binary here).

Input: a directory with `kustomization.yaml`. Keys, with kustomize v5 semantics: `resources` (files,
or directories with their own kustomization), `namespace` (also renames a Namespace and moves binding
subjects along with the ServiceAccount they name), `labels` (on objects and, with includeTemplates,
pod templates), `images`, `replicas`, and `patches` by `path` (strategic merge onto kind + name).
Anything else raises `KustomizeError`, so a test never passes on a feature it ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
KNOWN_KEYS = {"apiVersion", "kind", "namespace", "resources", "labels", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
REPLICATED_KINDS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
_WRITTEN = "internal: namespace as written in the file"
# Strategic-merge list keys (x-kubernetes-patch-merge-key) of the fields these manifests patch; any
# other list is replaced whole, as kustomize does for lists without a merge key.
MERGE_KEYS = dict.fromkeys(["containers", "initContainers", "env", "volumes", "imagePullSecrets"], "name") | {
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not implement, or refers to nothing."""


def render(directory: Path) -> list[Obj]:
    """Every object the kustomization in `directory` produces, in resource order."""
    objects = _build(directory)
    for item in [*objects, *(subject for obj in objects for subject in obj.get("subjects", []))]:
        item.pop(_WRITTEN, None)
    return objects


def _build(directory: Path) -> list[Obj]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    if not isinstance(spec, dict) or (unknown := set(spec) - KNOWN_KEYS):
        raise KustomizeError(f"{directory}: unsupported kustomization keys {sorted(unknown or [spec])}")
    objects = [obj for entry in spec.get("resources", []) for obj in _load(directory / entry)]
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch, directory)
    if "namespace" in spec:
        _set_namespace(objects, spec["namespace"])
    for entry in spec.get("labels", []):
        _add_labels(objects, entry)
    for image in spec.get("images", []):
        _set_image(objects, image)
    for entry in spec.get("replicas", []):
        workload = _find(objects, kinds=REPLICATED_KINDS, name=entry["name"], where="replicas")
        workload["spec"]["replicas"] = entry["count"]
    return objects


def _load(path: Path) -> list[Obj]:
    if path.is_dir():
        return _build(path)
    if not path.is_file():
        raise KustomizeError(f"resource {path} does not exist")
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    if not all(isinstance(doc, dict) and "kind" in doc and "metadata" in doc for doc in docs):
        raise KustomizeError(f"{path}: every document must be an object with kind and metadata")
    for item in [*docs, *(subject for doc in docs for subject in doc.get("subjects", []))]:
        item[_WRITTEN] = item.get("metadata", item).get("namespace") or "default"
    return docs


def _find(objects: list[Obj], *, kinds: set[str], name: str, where: str) -> Obj:
    matches = [o for o in objects if o["metadata"].get("name") == name and o["kind"] in kinds]
    if len(matches) != 1:
        raise KustomizeError(f"{where}: {len(matches)} objects match kind in {sorted(kinds)}, name {name}")
    return matches[0]


def _apply_patch(objects: list[Obj], entry: Obj, directory: Path) -> None:
    if set(entry) != {"path"}:
        raise KustomizeError(f"patches: only {{path: file}} is supported, got {sorted(entry)}")
    patch = yaml.safe_load((directory / entry["path"]).read_text())
    target = _find(objects, kinds={patch["kind"]}, name=patch["metadata"]["name"], where=entry["path"])
    target.update(strategic_merge(target, patch))


def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into a copy of `original`: maps recursively, keyed lists by MERGE_KEYS."""
    if isinstance(original, dict) and isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise KustomizeError(f"{field}: patch directives ($patch, ...) are not supported")
        merged = copy.deepcopy(original)
        for key, value in patch.items():
            merged[key] = value if value is None else strategic_merge(original.get(key), value, key)
        return {k: v for k, v in merged.items() if v is not None}
    if isinstance(original, list) and isinstance(patch, list) and field in MERGE_KEYS:
        # kustomize (kyaml) lists the patch's items first, then the original items it did not name.
        key = MERGE_KEYS[field]
        by_key = {item.get(key): item for item in original}
        patched = [strategic_merge(by_key.get(item.get(key), {}), item, field) for item in patch]
        named = {item.get(key) for item in patch}
        return patched + [copy.deepcopy(item) for item in original if item.get(key) not in named]
    return copy.deepcopy(patch)


def _set_namespace(objects: list[Obj], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
    # kustomize's name references: a subject follows the ServiceAccount it named in the files (same
    # name and written namespace, unset meaning `default`) to wherever that account now lives.
    accounts = {(o["metadata"]["name"], o[_WRITTEN]): o for o in objects if o["kind"] == "ServiceAccount"}
    for obj in objects:
        for subject in obj.get("subjects", []) if obj["kind"].endswith("RoleBinding") else []:
            account = accounts.get((subject.get("name"), subject.get(_WRITTEN)))
            if subject.get("kind") == "ServiceAccount" and account is not None:
                subject["namespace"] = account["metadata"]["namespace"]


def _add_labels(objects: list[Obj], entry: Obj) -> None:
    if entry.get("includeSelectors", False) or set(entry) - {"pairs", "includeSelectors", "includeTemplates"}:
        raise KustomizeError(f"labels: only pairs + includeTemplates are supported, got {entry}")
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
        if entry.get("includeTemplates") and obj["kind"] in POD_TEMPLATE_KINDS:
            template = obj["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(entry["pairs"])


def _set_image(objects: list[Obj], image: Obj) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise KustomizeError(f"images: only name/newName/newTag are supported, got {sorted(image)}")
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            reference = container["image"]
            # A ':' after the last '/' starts the tag; one before it belongs to a registry port.
            name, tag = reference, ""
            if ":" in reference.rsplit("/", 1)[-1]:
                name, tag = reference.rsplit(":", 1)
            if "@" in reference or name != image["name"]:
                continue
            tag = image.get("newTag", tag)
            container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
