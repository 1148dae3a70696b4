"""The whole controller against the real apiserver, acting as deploy/'s ServiceAccount: a signed webhook,
confirmed against the fake Buildkite, becomes a pod on the real apiserver; the pod is bound and driven to
Succeeded through the binding and status subresources (as scheduler and kubelet would); the controller
sees it through its watch and deletes it after the retention.

Every request the controller sends goes through the real authenticator, RBAC authorizer and admission:
a verb deploy/'s Role lacks fails this test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def buildkite() -> Iterator[FakeBuildkite]:
    with FakeBuildkite() as fake:
        yield fake


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def test_webhook_to_pod_on_the_real_apiserver_to_deletion_after_retention(
    control_plane: ControlPlane, controller_rbac: ControllerRBAC, buildkite: FakeBuildkite, tmp_path: Path
) -> None:
    rbac, plane = controller_rbac, control_plane
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
        "succeeded-pod-retention": "1s",
        "log-format": "text",
    }
    settings = load(flags=flags, env={}).settings
    server = ControllerServer(create_app(settings))
    server.start()
    pods = f"/api/v1/namespaces/{rbac.jobs_namespace}/pods"
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
            uuid = buildkite.add_job(command="make test")
            sender = WebhookSender(server.url + "/webhooks/buildkite", http=http, secret=WEBHOOK_SECRET)
            sender.send_job_event("job.scheduled", buildkite.job(uuid))
            name = f"buildkite-{uuid}"

            def created() -> dict | None:
                response = plane.http.get(f"{pods}/{name}")
                return response.json() if response.status_code == 200 else None

            pod = wait_until(created, timeout=30, what="the agent pod on the real apiserver")
            assert pod["metadata"]["labels"]["buildkite.com/job-uuid"] == uuid
            binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                       "target": {"kind": "Node", "name": "node-1"}}  # fmt: skip
            plane.request("POST", f"{pods}/{name}/binding", json=binding)
            finished_at = int(time.time())  # whole seconds, as RFC 3339 timestamps in status carry them
            now = rfc3339(finished_at)
            states = [
                {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "startedAt": now, "finishedAt": now}}}
                for c in pod["spec"]["containers"]
            ]  # fmt: skip
            status = {"status": {"phase": "Succeeded", "startTime": now, "containerStatuses": states}}
            plane.request("PATCH", f"{pods}/{name}/status", json=status, headers=MERGE_PATCH)
            wait_until(
                lambda: plane.http.get(f"{pods}/{name}").status_code == 404,
                timeout=30,
                what="the finished pod deleted after its retention",
            )
            # Retention counts from the containers' finishedAt.
            assert time.time() >= finished_at + 1, "deleted before its 1 s retention"
            assert buildkite.finish_calls(uuid) == 0  # the agent ran the job; the controller only cleans up
    finally:
        server.stop()
