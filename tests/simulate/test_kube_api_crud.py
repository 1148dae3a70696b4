"""The fake apiserver's create/get/list/update/delete semantics, driven by the official client."""

from __future__ import annotations

import asyncio
import json

import httpx
import kubernetes.aio.client
import kubernetes.client
import pytest
from kubernetes.client import ApiException

from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kube_client import kube_client_config
from app.simulate.pytest_plugin import make_pod


def _status(error: ApiException) -> dict:
    return json.loads(error.body)


def test_created_pod_gets_uid_timestamp_resource_version_and_defaults(core_v1):
    pod = core_v1.create_namespaced_pod("default", make_pod("web"))
    assert pod.metadata.uid and pod.metadata.creation_timestamp is not None
    assert int(pod.metadata.resource_version) >= 1
    assert pod.metadata.namespace == "default"
    assert pod.spec.dns_policy == "ClusterFirst"
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert pod.spec.termination_grace_period_seconds == 30
    assert pod.status.phase == "Pending"
    assert pod.status.qos_class == "BestEffort"


def test_each_write_bumps_one_global_resource_version(core_v1, fake_kube):
    first = core_v1.create_namespaced_pod("default", make_pod("a"))
    core_v1.create_namespaced_secret("default", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    second = core_v1.create_namespaced_pod("other", make_pod("b"))
    assert int(second.metadata.resource_version) == int(first.metadata.resource_version) + 2
    assert fake_kube.resource_version == int(second.metadata.resource_version)


def test_get_returns_the_stored_pod(core_v1):
    created = core_v1.create_namespaced_pod("default", make_pod("web"))
    read = core_v1.read_namespaced_pod("web", "default")
    assert read.metadata.uid == created.metadata.uid


def test_creating_a_pod_twice_is_already_exists_409(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    with pytest.raises(ApiException) as caught:
        core_v1.create_namespaced_pod("default", make_pod("web"))
    status = _status(caught.value)
    assert caught.value.status == 409
    assert (status["kind"], status["status"], status["reason"]) == ("Status", "Failure", "AlreadyExists")
    assert status["details"] == {"name": "web", "kind": "pods"}
    assert status["message"] == 'pods "web" already exists'


def test_reading_a_missing_pod_is_not_found_404(core_v1):
    with pytest.raises(ApiException) as caught:
        core_v1.read_namespaced_pod("ghost", "default")
    assert caught.value.status == 404
    assert _status(caught.value)["reason"] == "NotFound"
    assert _status(caught.value)["message"] == 'pods "ghost" not found'


def test_generate_name_gets_a_random_suffix(core_v1):
    manifest = make_pod("")
    manifest["metadata"] = {"generateName": "job-"}
    pod = core_v1.create_namespaced_pod("default", manifest)
    assert pod.metadata.name.startswith("job-") and len(pod.metadata.name) == len("job-") + 5


def test_update_with_a_stale_resource_version_is_conflict_409(core_v1):
    pod = core_v1.create_namespaced_pod("default", make_pod("web"))
    stale = pod.metadata.resource_version
    pod.metadata.labels = {"round": "1"}
    core_v1.replace_namespaced_pod("web", "default", pod)
    pod.metadata.resource_version = stale
    pod.metadata.labels = {"round": "2"}
    with pytest.raises(ApiException) as caught:
        core_v1.replace_namespaced_pod("web", "default", pod)
    assert caught.value.status == 409
    assert _status(caught.value)["reason"] == "Conflict"
    assert "the object has been modified" in _status(caught.value)["message"]


def test_a_no_op_update_keeps_the_resource_version(core_v1):
    pod = core_v1.create_namespaced_pod("default", make_pod("web"))
    again = core_v1.replace_namespaced_pod("web", "default", pod)
    assert again.metadata.resource_version == pod.metadata.resource_version


def test_list_filters_by_label_selector_operators(core_v1):
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db"}), ("c", {})):
        manifest = make_pod(name)
        manifest["metadata"]["labels"] = labels
        core_v1.create_namespaced_pod("default", manifest)

    def names(selector: str) -> list[str]:
        return [
            p.metadata.name for p in core_v1.list_namespaced_pod("default", label_selector=selector).items
        ]

    assert names("tier=web") == ["a"]
    assert names("tier==db") == ["b"]
    assert names("tier!=web") == ["b", "c"]
    assert names("tier in (web,db)") == ["a", "b"]
    assert names("tier notin (web)") == ["b", "c"]
    assert names("env") == ["a"]
    assert names("!env") == ["b", "c"]
    assert names("tier in (web, db),!env") == ["b"]


def test_list_filters_by_field_selector(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    core_v1.create_namespaced_pod("default", make_pod("b"))
    fake_kube.modify("pods", "b", lambda p: p["spec"].update(nodeName="node-1"))
    fake_kube.modify("pods", "b", lambda p: p["status"].update(phase="Running"))

    def by_field(s):
        return [p.metadata.name for p in core_v1.list_namespaced_pod("default", field_selector=s).items]

    assert by_field("metadata.name=a") == ["a"]
    assert by_field("spec.nodeName=") == ["a"]
    assert by_field("spec.nodeName=node-1,status.phase=Running") == ["b"]
    assert by_field("status.phase!=Running") == ["a"]


def test_an_unsupported_field_selector_is_bad_request(core_v1):
    with pytest.raises(ApiException) as caught:
        core_v1.list_namespaced_pod("default", field_selector="spec.image=alpine")
    assert caught.value.status == 400
    assert _status(caught.value)["message"] == "field label not supported: spec.image"


@pytest.mark.parametrize("selector", ["a in (b", "a in ()", "=x", "Bad Key=1", "a=" + "x" * 64, "a,,b"])
def test_a_malformed_label_selector_is_bad_request(core_v1, selector):
    with pytest.raises(ApiException) as caught:
        core_v1.list_namespaced_pod("default", label_selector=selector)
    assert caught.value.status == 400
    assert _status(caught.value)["reason"] == "BadRequest"


def test_list_is_paginated_with_limit_and_continue(core_v1):
    for i in range(5):
        core_v1.create_namespaced_pod("default", make_pod(f"p{i}"))
    page = core_v1.list_namespaced_pod("default", limit=2)
    seen = [p.metadata.name for p in page.items]
    assert page.metadata.remaining_item_count == 3
    while page.metadata._continue:
        page = core_v1.list_namespaced_pod("default", limit=2, _continue=page.metadata._continue)
        seen += [p.metadata.name for p in page.items]
    assert seen == ["p0", "p1", "p2", "p3", "p4"]


def test_a_continue_token_from_before_compaction_is_expired_410(core_v1, fake_kube):
    for i in range(3):
        core_v1.create_namespaced_pod("default", make_pod(f"p{i}"))
    token = core_v1.list_namespaced_pod("default", limit=1).metadata._continue
    fake_kube.expire_history()
    with pytest.raises(ApiException) as caught:
        core_v1.list_namespaced_pod("default", limit=1, _continue=token)
    assert caught.value.status == 410
    assert _status(caught.value)["reason"] == "Expired"


def test_a_forged_continue_token_is_bad_request(core_v1):
    with pytest.raises(ApiException) as caught:
        core_v1.list_namespaced_pod("default", limit=1, _continue="not-base64-json!!")
    assert caught.value.status == 400


def test_list_across_namespaces_returns_every_pod(core_v1):
    core_v1.create_namespaced_pod("one", make_pod("a"))
    core_v1.create_namespaced_pod("two", make_pod("a"))
    pods = core_v1.list_pod_for_all_namespaces().items
    assert sorted((p.metadata.namespace, p.metadata.name) for p in pods) == [("one", "a"), ("two", "a")]


def test_deleting_an_unbound_pod_removes_it_at_once(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    deleted = core_v1.delete_namespaced_pod("web", "default")
    assert deleted.metadata.name == "web"
    assert fake_kube.get("pods", "web") is None


def test_deleting_a_bound_running_pod_is_graceful(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    fake_kube.modify("pods", "web", lambda p: p["spec"].update(nodeName="node-1"))
    pod = core_v1.delete_namespaced_pod("web", "default", grace_period_seconds=20)
    assert pod.metadata.deletion_timestamp is not None
    assert pod.metadata.deletion_grace_period_seconds == 20
    assert fake_kube.get("pods", "web") is not None
    core_v1.delete_namespaced_pod("web", "default", grace_period_seconds=0)
    assert fake_kube.get("pods", "web") is None


def test_deleting_a_finished_bound_pod_removes_it_at_once(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    fake_kube.modify(
        "pods", "web", lambda p: (p["spec"].update(nodeName="n"), p["status"].update(phase="Succeeded"))
    )
    core_v1.delete_namespaced_pod("web", "default")
    assert fake_kube.get("pods", "web") is None


def test_delete_with_a_wrong_uid_precondition_is_conflict(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("web"))
    options = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid="other"))
    with pytest.raises(ApiException) as caught:
        core_v1.delete_namespaced_pod("web", "default", body=options)
    assert caught.value.status == 409
    assert "Precondition failed: UID in precondition: other" in _status(caught.value)["message"]


def test_delete_collection_removes_the_selected_pods(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    other = make_pod("b")
    other["metadata"]["labels"] = {"app": "keep"}
    core_v1.create_namespaced_pod("default", other)
    core_v1.delete_collection_namespaced_pod("default", label_selector="app=test")
    assert [p["metadata"]["name"] for p in fake_kube.list("pods")] == ["b"]


def test_secrets_podtemplates_and_events_round_trip(core_v1):
    core_v1.create_namespaced_secret("default", {"metadata": {"name": "token"}, "stringData": {"token": "x"}})
    assert core_v1.read_namespaced_secret("token", "default").metadata.name == "token"
    template = {"metadata": {"name": "tpl"}, "template": {"spec": make_pod("x")["spec"]}}
    core_v1.create_namespaced_pod_template("default", template)
    assert [t.metadata.name for t in core_v1.list_namespaced_pod_template("default").items] == ["tpl"]
    event = {
        "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Scheduled",
        "message": "assigned",
        "type": "Normal",
    }
    core_v1.create_namespaced_event("default", event)
    selected = core_v1.list_namespaced_event(
        "default", field_selector="involvedObject.name=web,involvedObject.kind=Pod"
    )
    assert [e.reason for e in selected.items] == ["Scheduled"]
    assert core_v1.list_namespaced_event("default", field_selector="involvedObject.name=other").items == []


def test_discovery_answers_version_api_and_apis(kube_api_client):
    assert kubernetes.client.VersionApi(kube_api_client).get_code().git_version.startswith("v1.37")
    assert kubernetes.client.CoreApi(kube_api_client).get_api_versions().versions == ["v1"]
    groups = kubernetes.client.ApisApi(kube_api_client).get_api_versions().groups
    assert [g.name for g in groups] == ["coordination.k8s.io"]
    resources = kubernetes.client.CoreV1Api(kube_api_client).get_api_resources().resources
    assert {"pods", "pods/status", "pods/binding", "secrets", "events"} <= {r.name for r in resources}


def test_an_unknown_path_is_a_404_status(fake_kube):
    response = httpx.get(f"{fake_kube.url}/api/v1/namespaces/default/widgets")
    assert response.status_code == 404
    assert response.json()["reason"] == "NotFound"
    assert httpx.get(f"{fake_kube.url}/apis/apps/v1/deployments").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b'{"kind": "Secret", "metadata": {"name": "x"}}',
        b'{"metadata": 7}',
    ],
    ids=["malformed-json", "a-list", "a-string", "wrong-kind", "metadata-not-an-object"],
)
def test_a_hostile_create_body_is_a_400_status(fake_kube, body):
    response = httpx.post(
        f"{fake_kube.url}/api/v1/namespaces/default/pods",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["kind"] == "Status" and response.json()["reason"] == "BadRequest"


def test_a_body_for_another_namespace_is_refused(core_v1):
    manifest = make_pod("web")
    manifest["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(ApiException) as caught:
        core_v1.create_namespaced_pod("default", manifest)
    assert caught.value.status == 400
    assert "does not match the namespace" in _status(caught.value)["message"]


def test_the_asyncio_client_creates_lists_and_deletes(fake_kube):
    async def scenario() -> tuple[list[str], int]:
        async with kubernetes.aio.client.ApiClient(kube_client_config(fake_kube.url)) as client:
            core = kubernetes.aio.client.CoreV1Api(client)
            await core.create_namespaced_pod("default", make_pod("a"))
            await core.create_namespaced_pod("default", make_pod("b"))
            names = [p.metadata.name for p in (await core.list_namespaced_pod("default")).items]
            await core.delete_namespaced_pod("a", "default")
            try:
                await core.read_namespaced_pod("a", "default")
            except kubernetes.aio.client.ApiException as error:
                return names, error.status
            return names, 200

    assert asyncio.run(scenario()) == (["a", "b"], 404)


def test_helpers_create_through_validation_and_force_state(fake_kube: FakeKubeAPI):
    created = fake_kube.create("pods", make_pod("web"))
    forced = fake_kube.modify("pods", "web", lambda p: p["status"].update(phase="Running"))
    assert int(forced["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert fake_kube.get("pods", "web")["status"]["phase"] == "Running"
    fake_kube.remove("pods", "web")
    assert fake_kube.list("pods") == []


HOSTILE_WRITES = {
    "deeply-nested-json": ("POST", "/pods", "[" * 100_000 + "]" * 100_000, "application/json", 400),
    "patch-replaces-metadata": (
        "PATCH",
        "/pods/web",
        '{"metadata": "x"}',
        "application/strategic-merge-patch+json",
        422,
    ),
    "patch-containers-not-a-list": (
        "PATCH",
        "/pods/web",
        '{"spec": {"containers": "x"}}',
        "application/strategic-merge-patch+json",
        422,
    ),
    "merge-patch-a-string": ("PATCH", "/pods/web", '"str"', "application/merge-patch+json", 422),
    "json-patch-not-a-list": ("PATCH", "/pods/web", '{"op": "add"}', "application/json-patch+json", 422),
    "put-name-not-a-string": ("PUT", "/pods/web", '{"metadata": {"name": 5}}', "application/json", 400),
    "put-spec-not-an-object": (
        "PUT",
        "/pods/web",
        '{"metadata": {"name": "web"}, "spec": 3}',
        "application/json",
        422,
    ),
    "status-not-an-object": (
        "PUT",
        "/pods/web/status",
        '{"metadata": {"name": "web"}, "status": "x"}',
        "application/json",
        422,
    ),
    "grace-not-a-number": ("DELETE", "/pods/web?gracePeriodSeconds=soon", "", "application/json", 400),
    "preconditions-not-an-object": ("DELETE", "/pods/web", '{"preconditions": "x"}', "application/json", 400),
    "binding-without-target": ("POST", "/pods/web/binding", "[]", "application/json", 422),
    "limit-not-a-number": ("GET", "/pods?limit=many", "", "application/json", 400),
    "timeout-not-a-number": ("GET", "/pods?watch=true&timeoutSeconds=x", "", "application/json", 400),
    "unknown-subresource": ("GET", "/pods/web/exec", "", "application/json", 404),
    "method-not-allowed": ("POST", "/pods/web", "{}", "application/json", 405),
}


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"), HOSTILE_WRITES.values(), ids=HOSTILE_WRITES.keys()
)
def test_hostile_requests_get_a_status_body_not_a_crash(fake_kube, method, path, body, content_type, status):
    fake_kube.create("pods", make_pod("web"))
    url = f"{fake_kube.url}/api/v1/namespaces/default{path}"
    response = httpx.request(method, url, content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert response.json()["kind"] == "Status" and response.json()["code"] == status


def test_wait_for_polls_until_the_condition_holds_or_times_out(fake_kube):
    fake_kube.create("pods", make_pod("web"))
    assert fake_kube.wait_for("pods", "web", lambda pod: pod is not None)["metadata"]["name"] == "web"
    with pytest.raises(TimeoutError, match="pods/web never satisfied the condition"):
        fake_kube.wait_for("pods", "web", lambda pod: pod is None, timeout=0.05)
