"""Admission refusals from the real apiserver, met by the whole controller acting as deploy/'s ServiceAccount:

- PodSecurity ``restricted`` on the jobs namespace refuses the pod (403, not a quota): the job is failed in
  Buildkite at once, its log carrying the apiserver's own message, and no pod exists;
- an exhausted ResourceQuota refuses it (403 "exceeded quota"): the job waits and is retried, and is failed
  naming the quota after the quota deadline (the pending timeout) — or, when the quota is raised before
  the deadline, its pod is created and the job is not failed.

The jobs namespace deploy/'s Role covers is shared by every realkube test of this worker, so each test
undoes its label or quota in ``finally``. No controller-manager runs here, so the ResourceQuota's status
(which the quota admission plugin reads) is written by the test through the status subresource.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from app.config import load
from app.main import create_app
from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.webhook_sender import WebhookSender
from tests.flow.harness import WEBHOOK_SECRET, ControllerServer, wait_until
from tests.realkube.controlplane import ControlPlane
from tests.realkube.deploy_rbac import ControllerRBAC

pytestmark = pytest.mark.realkube

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
ENFORCE = "pod-security.kubernetes.io/enforce"
QUOTA = "bkc-pods"


@pytest.fixture
def buildkite() -> Iterator[FakeBuildkite]:
    with FakeBuildkite() as fake:
        yield fake


@contextmanager
def controller(rbac: ControllerRBAC, buildkite: FakeBuildkite, pending_timeout: str) -> Iterator[str]:
    """The controller app, ready, at the URL yielded; ``pending_timeout`` is also its quota deadline."""
    flags = {
        "token": buildkite.api_token,
        "org": buildkite.org.slug,
        "agent-token": buildkite.agent_token,
        "graphql-endpoint": buildkite.graphql_url,
        "agent-endpoint": buildkite.agent_endpoint,
        "webhook-secret": WEBHOOK_SECRET,
        "kubeconfig": str(rbac.credentials.kubeconfig),
        "queue": "kubernetes",
        "namespace": rbac.jobs_namespace,
        "leader-lease-namespace": rbac.lease_namespace,
        "leader-lease-name": rbac.lease_name,
        "pod-pending-timeout": pending_timeout,
        "log-format": "text",
    }
    server = ControllerServer(create_app(load(flags=flags, env={}).settings))
    server.start()
    try:
        with httpx.Client(timeout=10) as http:
            last: list[str] = []

            def ready() -> bool:
                response = http.get(server.url + "/readyz")
                last[:] = [response.text[:2000]]
                return response.status_code == 200

            try:
                wait_until(ready, timeout=90, what="the controller ready")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; /readyz said: {last}") from None
        yield server.url
    finally:
        server.stop()


def schedule(url: str, buildkite: FakeBuildkite) -> str:
    """A job added to the fake Buildkite and announced to the controller by a signed job.scheduled."""
    uuid = buildkite.add_job(command="make test")
    with httpx.Client(timeout=10) as http:
        sender = WebhookSender(url + "/webhooks/buildkite", http=http, secret=WEBHOOK_SECRET)
        sender.send_job_event("job.scheduled", buildkite.job(uuid))
    return uuid


def create_errors(url: str, reason: str) -> float:
    """``buildkite_controller_pod_create_errors_total{reason=…}`` from the controller's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    prefix = f'buildkite_controller_pod_create_errors_total{{reason="{reason}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def trail(url: str, uuid: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/jobs/{uuid}", headers={"Accept": "application/json"}, timeout=10)
    return response.json().get("trail", []) if response.status_code == 200 else []


def is_failed(buildkite: FakeBuildkite, uuid: str) -> bool:
    job = buildkite.job(uuid)
    return job.state == "finished" and job.exit_status not in (None, "0")


def pod_status(plane: ControlPlane, namespace: str, uuid: str) -> int:
    return plane.http.get(f"/api/v1/namespaces/{namespace}/pods/buildkite-{uuid}").status_code


# ---- PodSecurity -----------------------------------------------------------------------------------


def test_a_pod_refused_by_pod_security_fails_the_job_at_once_with_the_apiservers_message(
    control_plane: ControlPlane, controller_rbac: ControllerRBAC, buildkite: FakeBuildkite
) -> None:
    plane, ns = control_plane, controller_rbac.jobs_namespace
    namespace_path = f"/api/v1/namespaces/{ns}"
    plane.request("PATCH", namespace_path, json={"metadata": {"labels": {ENFORCE: "restricted"}}},
                  headers=MERGE_PATCH)  # fmt: skip
    try:
        with controller(controller_rbac, buildkite, pending_timeout="5m") as url:
            sent = time.monotonic()
            uuid = schedule(url, buildkite)
            wait_until(lambda: is_failed(buildkite, uuid), timeout=30, what="the job failed in Buildkite")
            took = time.monotonic() - sent
            log = buildkite.log(uuid).decode(errors="replace")
            assert 'violates PodSecurity "restricted:' in log, log
            assert "quota" not in log, log
            assert took < 5, f"failed {took:.1f} s after the webhook: a policy refusal must not be retried"
            assert create_errors(url, "Forbidden") == 1  # one create, never retried
            assert pod_status(plane, ns, uuid) == 404
            print(f"\npod security: job failed {took:.2f} s after its webhook")
    finally:
        plane.request("PATCH", namespace_path, json={"metadata": {"labels": {ENFORCE: None}}},
                      headers=MERGE_PATCH)  # fmt: skip


# ---- ResourceQuota ---------------------------------------------------------------------------------


def set_pod_quota(plane: ControlPlane, namespace: str, pods: int) -> None:
    """A ``pods`` count quota with its status filled in (nothing else here would fill it)."""
    path = f"/api/v1/namespaces/{namespace}/resourcequotas"
    hard = {"pods": str(pods)}
    if plane.http.get(f"{path}/{QUOTA}").status_code == 404:
        body = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA},
            "spec": {"hard": hard},
        }
        plane.request("POST", path, json=body)
    else:
        plane.request("PATCH", f"{path}/{QUOTA}", json={"spec": {"hard": hard}}, headers=MERGE_PATCH)
    used = {"pods": str(_counted_pods(plane, namespace))}
    plane.request("PATCH", f"{path}/{QUOTA}/status", json={"status": {"hard": hard, "used": used}},
                  headers=MERGE_PATCH)  # fmt: skip


def _counted_pods(plane: ControlPlane, namespace: str) -> int:
    items = plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
    return sum(1 for p in items if p.get("status", {}).get("phase") not in ("Succeeded", "Failed"))


@contextmanager
def exhausted_quota(plane: ControlPlane, namespace: str) -> Iterator[None]:
    set_pod_quota(plane, namespace, _counted_pods(plane, namespace))  # no room for one more pod
    try:
        yield
    finally:
        response = plane.http.delete(f"/api/v1/namespaces/{namespace}/resourcequotas/{QUOTA}")
        assert response.status_code in (200, 404), response.text


def test_an_exhausted_quota_is_retried_then_fails_the_job_naming_the_quota_after_the_deadline(
    control_plane: ControlPlane, controller_rbac: ControllerRBAC, buildkite: FakeBuildkite
) -> None:
    plane, ns = control_plane, controller_rbac.jobs_namespace
    with exhausted_quota(plane, ns), controller(controller_rbac, buildkite, pending_timeout="2s") as url:
        sent = time.monotonic()
        uuid = schedule(url, buildkite)
        wait_until(lambda: create_errors(url, "Forbidden") >= 1, timeout=30, what="the first quota refusal")
        assert not is_failed(buildkite, uuid), "a quota refusal failed the job at once"
        wait_until(lambda: is_failed(buildkite, uuid), timeout=60, what="the job failed after the deadline")
        took = time.monotonic() - sent
        assert create_errors(url, "Forbidden") >= 2, "failed without retrying the create"
        retries = [s for s in trail(url, uuid) if "retry" in str(s).lower()]
        assert retries, trail(url, uuid)
        log = buildkite.log(uuid).decode(errors="replace")
        assert "exceeded quota" in log and QUOTA in log, log
        assert took >= 2, f"failed {took:.1f} s after its webhook, before the 2 s quota deadline"
        assert pod_status(plane, ns, uuid) == 404
        print(f"\nquota exhausted: job failed {took:.2f} s after its webhook")


def test_a_quota_raised_before_the_deadline_lets_the_retry_create_the_pod(
    control_plane: ControlPlane, controller_rbac: ControllerRBAC, buildkite: FakeBuildkite
) -> None:
    plane, ns = control_plane, controller_rbac.jobs_namespace
    with exhausted_quota(plane, ns), controller(controller_rbac, buildkite, pending_timeout="60s") as url:
        sent = time.monotonic()
        uuid = schedule(url, buildkite)
        wait_until(lambda: create_errors(url, "Forbidden") >= 1, timeout=30, what="the first quota refusal")
        assert pod_status(plane, ns, uuid) == 404
        set_pod_quota(plane, ns, _counted_pods(plane, ns) + 1)
        wait_until(lambda: pod_status(plane, ns, uuid) == 200, timeout=60, what="the pod created on retry")
        took = time.monotonic() - sent
        assert create_errors(url, "Forbidden") == 1
        assert not is_failed(buildkite, uuid) and buildkite.finish_calls(uuid) == 0
        plane.http.delete(f"/api/v1/namespaces/{ns}/pods/buildkite-{uuid}")
        print(f"\nquota raised: pod created {took:.2f} s after its webhook")
