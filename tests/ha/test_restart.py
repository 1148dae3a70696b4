"""Restart recovery (lifecycle issue): a controller killed mid-burst and started again as a new process.

While it is down, the world moves on: some pods finish (and stay past their retention), one job is
cancelled while its pod is still Pending, and webhooks keep arriving to nobody. The restarted process
must rebuild everything from the cluster and Buildkite: create the missing pods (boot sweep), create
no second pod for any job, and collect the orphans.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.ha.harness import Burst, Cluster, running_cluster, wait_until

# Real processes on two shared cores: far beyond the suite-wide 120 s on a busy machine.
pytestmark = pytest.mark.timeout(900)

JOBS = int(os.environ.get("HA_JOBS", "0")) or 300
FINISHED_WHILE_DOWN = 5
# Far past the default retention of succeeded pods (30 s).
FINISHED_SECONDS_AGO = 3600


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finish_pod(cluster: Cluster, name: str) -> None:
    """What a kubelet would have written for an agent that ran its job and exited long ago."""
    path = f"/api/v1/namespaces/{cluster.sim.info['namespace']}/pods/{name}"
    pod: dict[str, Any] = cluster.sim.kube("GET", path).json()
    ended = stamp(FINISHED_SECONDS_AGO)
    terminated = {"exitCode": 0, "reason": "Completed", "startedAt": ended, "finishedAt": ended}
    pod["status"] = {
        "phase": "Succeeded",
        "startTime": ended,
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
            for container in pod["spec"]["containers"]
        ],
    }
    response = cluster.sim.kube("PUT", path + "/status", json=pod)
    assert response.status_code == 200, response.text


def set_job_state(cluster: Cluster, uuid: str, state: str) -> None:
    response = cluster.sim.buildkite("POST", f"/_test/jobs/{uuid}/state", json={"state": state})
    assert response.status_code == 200, response.text


def cancel_job(cluster: Cluster, uuid: str) -> None:
    response = cluster.sim.buildkite("POST", f"/_test/jobs/{uuid}/cancel")
    assert response.status_code == 200, response.text


def test_a_controller_killed_mid_burst_and_restarted_loses_nothing_and_collects_orphans(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path, 1) as cluster:
        [replica] = cluster.replicas
        ids = cluster.sim.add_jobs(JOBS)
        burst = Burst([replica.url], cluster.sim.webhook_bodies(ids), copies=2, seed=11).start()
        burst.wait_progress(0.5)
        replica.kill()
        burst.join()
        assert replica.exit_codes == [-signal.SIGKILL]

        existing = sorted(cluster.sim.pods(), key=lambda pod: pod["name"])
        assert len(existing) > FINISHED_WHILE_DOWN, "the kill came before any pod was created"
        finished = existing[:FINISHED_WHILE_DOWN]
        for pod in finished:
            set_job_state(cluster, pod["job_uuid"], "finished")
            finish_pod(cluster, pod["name"])
        cancelled = existing[FINISHED_WHILE_DOWN]["job_uuid"]
        cancel_job(cluster, cancelled)
        gone = {pod["job_uuid"] for pod in finished} | {cancelled}
        creates_before_restart = cluster.sim.request_count("create", "pods")

        replica.restart()

        wanted = set(ids) - gone
        counts = cluster.wait_for_pods(sorted(wanted), timeout=60)
        wait_until(
            lambda: not gone & set(cluster.pods_by_job()),
            timeout=30,
            what="orphans and cancelled pod deleted",
        )
        counts = cluster.pods_by_job()
        assert set(counts) == wanted
        assert max(counts.values()) == 1
        # The restarted process created only what was missing (no create of a pod it already had).
        missing_at_restart = len(wanted) - (len(existing) - len(gone))
        assert cluster.sim.request_count("create", "pods") - creates_before_restart == missing_at_restart
        assert cluster.sim.finish_counts() == {}
        states = {job["id"]: job["state"] for job in cluster.sim.jobs()}
        assert {uuid for uuid, state in states.items() if state == "scheduled"} == wanted
