"""Fault injection and request accounting of the fake apiserver, seen through the official client."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from kubernetes.client import ApiException

from app.simulate.kube_faults import KUBELET_USER_AGENT
from app.simulate.pytest_plugin import make_pod


def _fails(call) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value


def test_an_injected_429_carries_retry_after_and_is_consumed(core_v1, fake_kube):
    fake_kube.inject("create", "pods", status=429, retry_after=7)
    error = _fails(lambda: core_v1.create_namespaced_pod("default", make_pod("a")))
    assert error.status == 429
    assert error.headers["Retry-After"] == "7"
    assert json.loads(error.body)["reason"] == "TooManyRequests"
    assert core_v1.create_namespaced_pod("default", make_pod("a")).metadata.name == "a"


def test_an_injected_403_distinguishes_quota_from_rbac(core_v1, fake_kube):
    fake_kube.inject("create", "pods", status=403, quota=True)
    fake_kube.inject("create", "pods", status=403)
    quota = json.loads(_fails(lambda: core_v1.create_namespaced_pod("default", make_pod("a"))).body)
    rbac = json.loads(_fails(lambda: core_v1.create_namespaced_pod("default", make_pod("a"))).body)
    assert quota["reason"] == rbac["reason"] == "Forbidden"
    assert "exceeded quota" in quota["message"]
    assert 'cannot create resource "pods"' in rbac["message"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(409, "Conflict"), (422, "Invalid"), (500, "InternalError"), (503, "ServiceUnavailable")],
)
def test_each_injected_status_has_a_realistic_status_body(core_v1, fake_kube, status, reason):
    fake_kube.inject("get", "pods", status=status)
    error = _fails(lambda: core_v1.read_namespaced_pod("web", "default"))
    body = json.loads(error.body)
    assert (error.status, body["code"], body["reason"], body["kind"], body["status"]) == (
        status,
        status,
        reason,
        "Status",
        "Failure",
    )


def test_a_fault_counts_down_and_only_matches_its_verb_and_resource(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    fake_kube.inject("get", "pods", status=500, count=2)
    assert core_v1.list_namespaced_pod("default").items  # other verb: untouched
    assert _fails(lambda: core_v1.read_namespaced_pod("a", "default")).status == 500
    assert _fails(lambda: core_v1.read_namespaced_pod("a", "default")).status == 500
    assert core_v1.read_namespaced_pod("a", "default").metadata.name == "a"


def test_a_status_subresource_fault_leaves_the_main_resource_alone(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    fake_kube.inject("patch", "pods/status", status=503)
    core_v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}})
    assert (
        _fails(
            lambda: core_v1.patch_namespaced_pod_status("a", "default", {"status": {"phase": "Running"}})
        ).status
        == 503
    )


def test_a_delay_only_fault_slows_the_response(core_v1, fake_kube):
    fake_kube.inject("list", "pods", delay=0.3)
    started = time.monotonic()
    core_v1.list_namespaced_pod("default")
    assert time.monotonic() - started >= 0.3


def test_a_wildcard_fault_matches_any_request(core_v1, fake_kube):
    fake_kube.inject("*", "*", status=500)
    assert _fails(lambda: core_v1.list_namespaced_secret("default")).status == 500
    fake_kube.inject("*", "*", status=500, count=5)
    fake_kube.clear_faults()
    assert core_v1.list_namespaced_secret("default").items == []


def test_an_unknown_verb_is_refused_when_arming(fake_kube):
    with pytest.raises(ValueError, match="unknown verb"):
        fake_kube.inject("destroy", "pods", status=500)


def test_requests_are_counted_by_verb_and_resource_with_the_kubelet_apart(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    core_v1.list_namespaced_pod("default")
    core_v1.list_namespaced_pod("default")
    core_v1.read_namespaced_pod_status("a", "default")
    httpx.get(f"{fake_kube.url}/api/v1/pods", headers={"user-agent": f"{KUBELET_USER_AGENT}/node-1"})
    assert fake_kube.request_count("list", "pods") == 2
    assert fake_kube.request_count("create") == 1
    assert fake_kube.request_count(resource="pods/status") == 1
    assert fake_kube.request_count() == 4
    assert fake_kube.request_count("list", "pods", kubelet=True) == 1
