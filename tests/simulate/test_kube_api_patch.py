"""PATCH flavours, the pods/status subresource, pod update rules and leases on the fake apiserver."""

from __future__ import annotations

import json

import httpx
import kubernetes.client
import pytest
from kubernetes.client import ApiException

from app.simulate.kube_patch import PatchError, json_patch, merge_patch, strategic_merge
from app.simulate.kube_schema import POD_DEFINITION
from app.simulate.pytest_plugin import make_pod

SIDECAR = {"name": "sidecar", "image": "busybox:1.36"}


def _pod_with_two_containers(core_v1) -> None:
    manifest = make_pod("web")
    manifest["spec"]["containers"].append(SIDECAR)
    manifest["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    core_v1.create_namespaced_pod("default", manifest)


def test_a_dict_patch_is_a_strategic_merge_that_merges_containers_by_name(core_v1):
    _pod_with_two_containers(core_v1)
    patch = {"spec": {"containers": [{"name": "main", "image": "alpine:3.21"}]}}
    pod = core_v1.patch_namespaced_pod("web", "default", patch)
    assert [(c.name, c.image) for c in pod.spec.containers] == [
        ("main", "alpine:3.21"),
        ("sidecar", "busybox:1.36"),
    ]
    assert [(e.name, e.value) for e in pod.spec.containers[0].env] == [("A", "1")]


def test_a_merge_patch_replaces_lists_and_null_deletes_keys(fake_kube, core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    core_v1.patch_namespaced_pod(
        "web",
        "default",
        {"metadata": {"labels": {"app": None, "team": "ci"}}},
        _content_type="application/merge-patch+json",
    )
    assert fake_kube.get("pods", "web")["metadata"]["labels"] == {"team": "ci"}


def test_a_list_patch_is_a_json_patch(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    ops = [
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}},
        {"op": "test", "path": "/metadata/name", "value": "web"},
    ]
    pod = core_v1.patch_namespaced_pod("web", "default", ops)
    assert pod.metadata.annotations == {"a": "1"}


def test_a_failing_json_patch_test_operation_is_unprocessable(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    with pytest.raises(ApiException) as caught:
        core_v1.patch_namespaced_pod(
            "web", "default", [{"op": "test", "path": "/metadata/name", "value": "other"}]
        )
    assert caught.value.status == 422


def test_a_patch_with_a_stale_resource_version_is_conflict(core_v1):
    pod = core_v1.create_namespaced_pod("default", make_pod("web"))
    core_v1.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as caught:
        core_v1.patch_namespaced_pod(
            "web",
            "default",
            {"metadata": {"resourceVersion": pod.metadata.resource_version, "labels": {"x": "2"}}},
        )
    assert caught.value.status == 409


def test_an_unknown_patch_content_type_is_415(fake_kube):
    fake_kube.create("pods", make_pod("web"))
    response = httpx.patch(
        f"{fake_kube.url}/api/v1/namespaces/default/pods/web",
        content=b"metadata: {}",
        headers={"content-type": "application/apply-patch+yaml"},
    )
    assert response.status_code == 415
    assert response.json()["reason"] == "UnsupportedMediaType"


def test_patching_a_missing_pod_is_not_found(core_v1):
    with pytest.raises(ApiException) as caught:
        core_v1.patch_namespaced_pod("ghost", "default", {"metadata": {"labels": {"a": "b"}}})
    assert caught.value.status == 404


def test_spec_changes_other_than_image_are_forbidden_on_update(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    core_v1.patch_namespaced_pod(
        "web", "default", {"spec": {"containers": [{"name": "main", "image": "alpine:3.21"}]}}
    )
    with pytest.raises(ApiException) as caught:
        core_v1.patch_namespaced_pod("web", "default", {"spec": {"restartPolicy": "Always"}})
    body = json.loads(caught.value.body)
    assert caught.value.status == 422
    assert body["details"]["causes"][0]["field"] == "spec"
    assert "pod updates may not change fields" in body["details"]["causes"][0]["message"]


def test_writes_to_the_pod_ignore_status_and_status_writes_ignore_spec(core_v1, fake_kube):
    pod = core_v1.create_namespaced_pod("default", make_pod("web"))
    pod.status.phase = "Running"
    pod.metadata.labels = {"changed": "yes"}
    core_v1.replace_namespaced_pod("web", "default", pod)
    assert fake_kube.get("pods", "web")["status"]["phase"] == "Pending"
    status = {"status": {"phase": "Running"}, "metadata": {"labels": {"ignored": "yes"}}}
    patched = core_v1.patch_namespaced_pod_status(
        "web", "default", status, _content_type="application/merge-patch+json"
    )
    assert patched.status.phase == "Running"
    assert patched.metadata.labels == {"changed": "yes"}


def test_the_status_subresource_supports_get_and_put_with_conflicts(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    pod = core_v1.read_namespaced_pod_status("web", "default")
    stale = pod.metadata.resource_version
    pod.status.phase = "Running"
    core_v1.replace_namespaced_pod_status("web", "default", pod)
    pod.metadata.resource_version = stale
    with pytest.raises(ApiException) as caught:
        core_v1.replace_namespaced_pod_status("web", "default", pod)
    assert caught.value.status == 409


def test_a_strategic_status_patch_merges_conditions_by_type(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    first = {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    second = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    core_v1.patch_namespaced_pod_status("web", "default", first)
    pod = core_v1.patch_namespaced_pod_status("web", "default", second)
    assert [(c.type, c.status) for c in pod.status.conditions] == [
        ("PodScheduled", "True"),
        ("Ready", "False"),
    ]


def test_garbage_in_a_status_patch_is_invalid(fake_kube):
    fake_kube.create("pods", make_pod("web"))
    response = httpx.patch(
        f"{fake_kube.url}/api/v1/namespaces/default/pods/web/status",
        json={"status": {"phase": 7, "bogus": True}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert response.status_code == 422
    assert {c["field"] for c in response.json()["details"]["causes"]} == {"status", "status.phase"}


def test_binding_assigns_the_node_once(fake_kube):
    fake_kube.create("pods", make_pod("web"))
    url = f"{fake_kube.url}/api/v1/namespaces/default/pods/web/binding"
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "web"},
        "target": {"kind": "Node", "name": "n1"},
    }
    assert httpx.post(url, json=binding).status_code == 201
    pod = fake_kube.get("pods", "web")
    assert pod["spec"]["nodeName"] == "n1"
    assert pod["status"]["conditions"][0]["type"] == "PodScheduled"
    assert httpx.post(url, json=binding).status_code == 409
    assert httpx.post(url, json={"target": {}}).status_code == 422


def _lease(name: str, holder: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}


def test_leases_are_created_read_updated_with_conflicts_and_deleted(kube_api_client):
    leases = kubernetes.client.CoordinationV1Api(kube_api_client)
    created = leases.create_namespaced_lease("default", _lease("controller", "pod-a"))
    with pytest.raises(ApiException) as exists:
        leases.create_namespaced_lease("default", _lease("controller", "pod-b"))
    assert exists.value.status == 409 and json.loads(exists.value.body)["reason"] == "AlreadyExists"
    current = leases.read_namespaced_lease("controller", "default")
    current.spec.holder_identity = "pod-b"
    updated = leases.replace_namespaced_lease("controller", "default", current)
    assert updated.spec.holder_identity == "pod-b"
    created.spec.holder_identity = "pod-c"  # still carries the first resourceVersion
    with pytest.raises(ApiException) as conflict:
        leases.replace_namespaced_lease("controller", "default", created)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "Conflict"
    assert "leases.coordination.k8s.io" in json.loads(conflict.value.body)["message"]
    status = leases.delete_namespaced_lease("controller", "default")  # the client types this as a bare object
    assert status["kind"] == "Status" and status["status"] == "Success"
    with pytest.raises(ApiException) as gone:
        leases.read_namespaced_lease("controller", "default")
    assert gone.value.status == 404


def test_a_lease_update_without_resource_version_is_invalid(kube_api_client):
    leases = kubernetes.client.CoordinationV1Api(kube_api_client)
    leases.create_namespaced_lease("default", _lease("controller", "pod-a"))
    with pytest.raises(ApiException) as caught:
        leases.replace_namespaced_lease("controller", "default", _lease("controller", "pod-b"))
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["details"]["causes"][0]["field"] == "metadata.resourceVersion"


# ---- the patch functions themselves ----------------------------------------------------------------


def test_strategic_merge_deletes_list_items_with_the_patch_directive():
    pod = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}
    patched = strategic_merge(
        pod, {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}, POD_DEFINITION
    )
    assert patched["spec"]["containers"] == [{"name": "b", "image": "y"}]


def test_strategic_merge_replaces_lists_without_a_merge_strategy():
    pod = {"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}}
    patch = {"spec": {"containers": [{"name": "a", "args": ["3"]}]}}
    assert strategic_merge(pod, patch, POD_DEFINITION)["spec"]["containers"][0]["args"] == ["3"]


def test_strategic_merge_unions_primitive_lists_that_merge():
    pod = {"metadata": {"finalizers": ["a"]}}
    assert strategic_merge(pod, {"metadata": {"finalizers": ["b", "a"]}}, POD_DEFINITION)["metadata"][
        "finalizers"
    ] == ["a", "b"]
    removed = strategic_merge(
        pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, POD_DEFINITION
    )
    assert removed["metadata"]["finalizers"] == []


def test_strategic_merge_honours_map_replace_and_retain_keys():
    pod = {"spec": {"nodeSelector": {"a": "1", "b": "2"}, "volumes": [{"name": "v", "emptyDir": {}}]}}
    patch = {
        "spec": {
            "nodeSelector": {"$patch": "replace", "c": "3"},
            "volumes": [{"name": "v", "hostPath": {"path": "/x"}, "$retainKeys": ["name", "hostPath"]}],
        }
    }
    patched = strategic_merge(pod, patch, POD_DEFINITION)
    assert patched["spec"]["nodeSelector"] == {"c": "3"}
    assert patched["spec"]["volumes"] == [{"name": "v", "hostPath": {"path": "/x"}}]


def test_strategic_merge_rejects_items_without_the_merge_key():
    with pytest.raises(PatchError, match="merge key"):
        strategic_merge(
            {"spec": {"containers": []}}, {"spec": {"containers": [{"image": "x"}]}}, POD_DEFINITION
        )


def test_merge_patch_follows_rfc_7386():
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3},
        "d": [2],
    }
    assert merge_patch({"a": 1}, ["x"]) == ["x"]


@pytest.mark.parametrize(
    "ops",
    [
        {"op": "add"},
        [{"op": "add", "path": "no-slash", "value": 1}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/a/9", "value": 1}],
        [{"op": "explode", "path": "/a"}],
        [{"op": "add", "path": "/a/01", "value": 1}],
        [{"op": "add", "path": "/a/-"}],
        ["not-an-object"],
    ],
    ids=[
        "not-a-list",
        "bad-pointer",
        "remove-missing",
        "index-out-of-range",
        "unknown-op",
        "leading-zero",
        "no-value",
        "not-an-op",
    ],
)
def test_json_patch_rejects_malformed_operations(ops):
    with pytest.raises(PatchError):
        json_patch({"a": [0]}, ops)


def test_json_patch_supports_move_copy_and_append():
    doc = {"a": [1], "b": {"c": 2}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "copy", "from": "/b/c", "path": "/d"},
        {"op": "move", "from": "/b", "path": "/e"},
    ]
    assert json_patch(doc, ops) == {"a": [1, 3], "d": 2, "e": {"c": 2}}
    assert doc == {"a": [1], "b": {"c": 2}}
