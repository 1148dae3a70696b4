"""The test renderer in tests/deploy/kustomize.py: kustomize's semantics for its subset, errors otherwise.

Input: small kustomizations written into tmp_path. The expected outputs were checked against
`kubectl kustomize` (kustomize v5.8) while writing the renderer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import KustomizeError, render, strategic_merge

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web", "env": [{"name": "A", "value": "1"}]}]},
        },
    },
}
BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "b"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
    "subjects": [
        {"kind": "ServiceAccount", "name": "named"},
        {"kind": "ServiceAccount", "name": "absent"},
        {"kind": "ServiceAccount", "name": "named", "namespace": "elsewhere"},
    ],
}
ACCOUNT = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "named"}}


def write(directory: Path, kustomization: dict[str, Any], **files: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    for name, content in files.items():
        (directory / name).write_text(yaml.safe_dump_all(content if isinstance(content, list) else [content]))
    return directory


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(obj for obj in objects if obj["kind"] == kind)


def test_overlay_namespace_renames_the_namespace_and_moves_subjects_with_their_account(
    tmp_path: Path,
) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "base"}}
    files = {"all.yaml": [namespace, ACCOUNT, BINDING]}
    write(tmp_path / "base", {"namespace": "base", "resources": ["all.yaml"]}, **files)
    objects = render(write(tmp_path / "overlay", {"namespace": "prod", "resources": ["../base"]}))
    assert by_kind(objects, "Namespace")["metadata"] == {"name": "prod"}
    binding = by_kind(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == "prod"
    # The first subject follows its ServiceAccount; the second names none in the build; the third
    # names the same account in another namespace.
    assert [s.get("namespace") for s in binding["subjects"]] == ["prod", None, "elsewhere"]


def test_images_replicas_labels_and_patches_apply_to_the_named_objects(tmp_path: Path) -> None:
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}]}}
        },
    }
    kustomization = {
        "resources": ["deployment.yaml"],
        "images": [{"name": "web", "newName": "localhost:5000/web", "newTag": "1.2"}],
        "replicas": [{"name": "web", "count": 3}],
        "labels": [{"pairs": {"team": "ci"}, "includeTemplates": True}],
        "patches": [{"path": "patch.yaml"}],
    }
    write(tmp_path, kustomization, **{"deployment.yaml": DEPLOYMENT, "patch.yaml": patch})
    (deployment,) = render(tmp_path)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost:5000/web:1.2"
    assert [item["name"] for item in container["env"]] == ["B", "A"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["labels"] == {"team": "ci"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "web", "team": "ci"}
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "web"}}


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [
        pytest.param({"a": 1, "b": 2}, {"b": None}, {"a": 1}, id="null-deletes-a-key"),
        pytest.param({"args": ["x", "y"]}, {"args": ["z"]}, {"args": ["z"]}, id="unkeyed-list-is-replaced"),
        pytest.param(
            {"volumeMounts": [{"mountPath": "/a", "name": "a"}]},
            {"volumeMounts": [{"mountPath": "/a", "name": "b"}]},
            {"volumeMounts": [{"mountPath": "/a", "name": "b"}]},
            id="mounts-merge-by-mount-path",
        ),
        pytest.param({"x": {"y": 1}}, {"x": {"z": 2}}, {"x": {"y": 1, "z": 2}}, id="maps-merge-recursively"),
    ],
)
def test_strategic_merge_follows_kubernetes_patch_rules(original: Any, patch: Any, expected: Any) -> None:
    assert strategic_merge(original, patch) == expected


@pytest.mark.parametrize(
    ("kustomization", "files", "message"),
    [
        pytest.param({"commonLabels": {"a": "b"}}, {}, "unsupported kustomization keys", id="unknown-key"),
        pytest.param({"resources": ["missing.yaml"]}, {}, "does not exist", id="missing-resource"),
        pytest.param(
            {"resources": ["bad.yaml"]}, {"bad.yaml": {"a": 1}}, "kind and metadata", id="not-an-object"
        ),
        pytest.param(
            {"resources": ["d.yaml"], "patches": [{"path": "d.yaml", "target": {"kind": "Pod"}}]},
            {"d.yaml": DEPLOYMENT},
            "only {path: file}",
            id="patch-with-target",
        ),
        pytest.param(
            {"resources": ["d.yaml"], "replicas": [{"name": "nothing", "count": 1}]},
            {"d.yaml": DEPLOYMENT},
            "0 objects match",
            id="replicas-for-nothing",
        ),
        pytest.param(
            {"resources": ["d.yaml"], "labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
            {"d.yaml": DEPLOYMENT},
            "only pairs",
            id="labels-into-selectors",
        ),
    ],
)
def test_unsupported_or_broken_kustomizations_raise(
    tmp_path: Path, kustomization: dict[str, Any], files: dict[str, Any], message: str
) -> None:
    with pytest.raises(KustomizeError, match=re.escape(message)):
        render(write(tmp_path, kustomization, **files))


def test_patch_for_a_missing_object_raises(tmp_path: Path) -> None:
    patch = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "absent"}, "data": {}}
    write(
        tmp_path,
        {"resources": ["d.yaml"], "patches": [{"path": "p.yaml"}]},
        **{"d.yaml": DEPLOYMENT, "p.yaml": patch},
    )
    with pytest.raises(KustomizeError, match=re.escape("p.yaml: 0 objects match")):
        render(tmp_path)


def test_patch_directives_are_refused_rather_than_misapplied() -> None:
    with pytest.raises(KustomizeError, match="directives"):
        strategic_merge({"a": {"b": 1}}, {"a": {"$patch": "delete"}})
