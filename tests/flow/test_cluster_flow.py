"""Two Buildkite clusters use the same queue name; a controller with ``cluster-uuid`` creates pods only
for its own cluster's jobs — by webhook, by sweep, and when a webhook cannot tell (the confirm decides)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.webhook_sender import sign
from tests.flow.harness import WEBHOOK_SECRET, Stack, running_stack, wait_until

OTHER_CLUSTER = "5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"


def post_scheduled(stack: Stack, uuid: str, *, drop_cluster: bool = False) -> int:
    """The job.scheduled webhook, optionally without ``job.cluster_id`` (then only the confirm can tell)."""
    payload = json.loads(stack.sender.job_body("job.scheduled", stack.buildkite.job(uuid)))
    if drop_cluster:
        del payload["job"]["cluster_id"]
    body = json.dumps(payload).encode()
    header = sign(WEBHOOK_SECRET, int(time.time()), body)
    headers = {"X-Buildkite-Event": "job.scheduled", "X-Buildkite-Signature": header}
    return stack.post("/webhooks/buildkite", content=body, headers=headers).status_code


def confirmed(stack: Stack, outcome: str) -> float:
    for line in stack.get("/metrics").text.splitlines():
        if line.startswith(f'buildkite_controller_jobs_confirmed_total{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_only_our_clusters_jobs_get_pods(tmp_path: Path) -> None:
    with (
        FakeBuildkite() as bk,
        running_stack(tmp_path, flags={"cluster-uuid": bk.org.cluster_uuid}, buildkite=bk) as stack,
    ):
        ours = bk.add_job(agents={"queue": "kubernetes"})
        theirs = bk.add_job(agents={"queue": "kubernetes"}, cluster_id=OTHER_CLUSTER)
        unclear = bk.add_job(agents={"queue": "kubernetes"}, cluster_id=OTHER_CLUSTER)

        assert post_scheduled(stack, theirs) == 200  # dropped by the webhook's pre-filter
        assert post_scheduled(stack, ours) == 202
        assert post_scheduled(stack, unclear, drop_cluster=True) == 202  # the payload cannot tell
        wait_until(lambda: confirmed(stack, "not_our_cluster") >= 1, what="the confirm dropping it")
        summary = stack.post("/reconcile").json()
        wait_until(lambda: stack.pod_for(ours), what="our job's pod")

        # The sweep listed our cluster only: the other cluster's two jobs were never seen.
        assert summary["seen"] == 1
        assert [p["metadata"]["name"] for p in stack.pods()] == [f"buildkite-{ours}"]


def test_without_cluster_uuid_both_clusters_jobs_get_pods(tmp_path: Path) -> None:
    # Today's behaviour, and why the README calls a shared queue name unsafe without cluster-uuid.
    with running_stack(tmp_path) as stack:
        ours = stack.buildkite.add_job(agents={"queue": "kubernetes"})
        theirs = stack.buildkite.add_job(agents={"queue": "kubernetes"}, cluster_id=OTHER_CLUSTER)
        stack.post("/reconcile")
        wait_until(lambda: stack.pod_for(ours) and stack.pod_for(theirs), what="both pods")
