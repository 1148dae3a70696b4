"""Several controller processes against one simulated cluster and Buildkite: no job lost, none doubled.

Every test runs real processes (see `harness`): the `simulate` command and N `serve` replicas sharing
one Lease. Each `job.scheduled` webhook goes to a random replica three times, so replicas race to
create the same pods; AlreadyExists is allowed, a second pod for a job is not. The sizes are what
fits the CI budget on two shared cores (`JOBS_*`); `HA_JOBS=2000` runs each at full size.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from tests.ha.harness import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    Burst,
    Cluster,
    Replica,
    running_cluster,
    wait_until,
)

# Real processes on two shared cores: far beyond the suite-wide 120 s on a busy machine.
pytestmark = pytest.mark.timeout(900)

# The issue asks for 2,000 jobs: HA_JOBS=2000 runs every test at that size (about a minute each). On two
# shared CI cores, beside the other tests, a 2,000-job burst against the fake apiserver (JSON-schema
# validation of every create, ~10 ms per agent pod under load) made CI flaky (a webhook timing out, the
# timing-bound flow tests starved), so CI runs these sizes.
FULL_SIZE = int(os.environ.get("HA_JOBS", "0"))
JOBS_THREE_REPLICAS = FULL_SIZE or 600
JOBS_TWO_REPLICAS = FULL_SIZE or 400
JOBS_FAILOVER = FULL_SIZE or 400
JOBS_ROLLING = FULL_SIZE or 300
# Pods for every job must exist this long after the last webhook (the sweeps are explicit here).
SETTLE_SECONDS = 90.0


def urls(cluster: Cluster) -> list[str]:
    return [replica.url for replica in cluster.replicas]


def reconcile_until_settled(cluster: Cluster, ids: Sequence[str]) -> Counter[str]:
    """Ask the leader to sweep (the webhooks of killed replicas are lost) and wait for every pod."""
    response = cluster.reconcile(cluster.leader())
    assert response.status_code == 200, response.text
    return cluster.wait_for_pods(ids, timeout=SETTLE_SECONDS)


def assert_one_pod_per_job_and_nothing_failed(cluster: Cluster, ids: Sequence[str]) -> Counter[str]:
    counts = cluster.wait_for_pods(ids, timeout=SETTLE_SECONDS)
    assert set(counts) == set(ids), "pods for jobs nobody scheduled"
    doubled = {uuid: n for uuid, n in counts.items() if n > 1}
    assert doubled == {}
    states = Counter(job["state"] for job in cluster.sim.jobs())
    assert states == Counter({"scheduled": len(ids)}), "a job was failed or lost in Buildkite"
    assert cluster.sim.finish_counts() == {}
    assert cluster.sim.request_count("create", "pods") >= len(ids)
    return counts


def test_three_replicas_with_triple_webhooks_and_concurrent_reconciles_create_one_pod_per_job(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path, 3) as cluster:
        ids = cluster.sim.add_jobs(JOBS_THREE_REPLICAS)
        burst = Burst(urls(cluster), cluster.sim.webhook_bodies(ids), seed=3).start()
        leader = cluster.leader()
        burst.wait_progress(0.3)
        sweeps = [threading.Thread(target=cluster.reconcile, args=(leader,)) for _ in range(3)]
        for sweep in sweeps:
            sweep.start()
        burst.join()
        for sweep in sweeps:
            sweep.join(60)
        assert set(burst.statuses) <= {"200", "202"}, burst.statuses
        assert_one_pod_per_job_and_nothing_failed(cluster, ids)
        print(
            f"\n3 replicas: {len(ids)} jobs, {len(burst.plan)} webhooks in {burst.seconds:.1f} s, "
            f"{cluster.sim.request_count('create', 'pods') - len(ids)} creates answered AlreadyExists"
        )


def test_two_replicas_with_triple_webhooks_create_one_pod_per_job(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 2) as cluster:
        ids = cluster.sim.add_jobs(JOBS_TWO_REPLICAS)
        burst = Burst(urls(cluster), cluster.sim.webhook_bodies(ids), seed=2).start()
        burst.join()
        # Every delivery answered 2xx; 202 or 200 depends on whether a takeover sweep found the job
        # before its first webhook arrived, so only "every job has its one pod" is asserted below.
        assert set(burst.statuses) <= {"200", "202"}, burst.statuses
        assert_one_pod_per_job_and_nothing_failed(cluster, ids)


def measure_failover(cluster: Cluster, killed: Replica) -> tuple[float, str, float]:
    """SIGKILL `killed` (the leader); time until another replica holds the Lease.

    Also returns the slowest Lease read seen meanwhile: the new leader needs a read and a write
    after the expiry, and on a busy machine the fake apiserver answers slowly.
    """
    others = {replica.name for replica in cluster.replicas} - {killed.name}
    slowest = 0.0

    def holder() -> str | None:
        nonlocal slowest
        asked = time.monotonic()
        name = cluster.leader_name()
        slowest = max(slowest, time.monotonic() - asked)
        return name if name in others else None

    killed_at = time.monotonic()
    killed.kill()
    new_leader = wait_until(holder, timeout=LEASE_SECONDS * 10, what="a new leader")
    return time.monotonic() - killed_at, new_leader, slowest


def test_the_leader_killed_mid_burst_is_replaced_within_the_lease_and_no_job_is_lost(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path, 3) as cluster:
        ids = cluster.sim.add_jobs(JOBS_FAILOVER)
        burst = Burst(urls(cluster), cluster.sim.webhook_bodies(ids), seed=5).start()
        leader = cluster.leader()
        burst.wait_progress(0.3)
        failover_seconds, new_leader, slowest_read = measure_failover(cluster, leader)
        burst.join()
        assert leader.exit_codes == [-signal.SIGKILL]
        # A follower takes over once the record has not changed for a lease duration, checked every
        # renew interval, with one read and one write of the Lease (each as slow as ours, at worst).
        assert failover_seconds <= LEASE_SECONDS + RENEW_SECONDS + 2 * slowest_read + 0.5
        counts = reconcile_until_settled(cluster, ids)
        assert max(counts.values()) == 1
        assert_one_pod_per_job_and_nothing_failed(cluster, ids)
        assert all(n <= 1 for n in cluster.sim.finish_counts().values())
        print(
            f"\nfailover: {leader.name} killed, {new_leader} leading after {failover_seconds:.2f} s "
            f"(lease {LEASE_SECONDS} s, renew {RENEW_SECONDS} s, slowest Lease read {slowest_read:.2f} s); "
            f"{burst.statuses['error']} webhooks hit the dead replica; duplicate pods: 0"
        )


def test_a_rolling_restart_during_a_burst_loses_nothing(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 3) as cluster:
        ids = cluster.sim.add_jobs(JOBS_ROLLING)
        burst = Burst(urls(cluster), cluster.sim.webhook_bodies(ids), seed=7, concurrency=8).start()
        for replica in cluster.replicas:
            started = time.monotonic()
            code = replica.terminate()
            # uvicorn re-raises SIGTERM after its graceful shutdown: "killed by SIGTERM" is a clean exit.
            assert code in (0, -signal.SIGTERM), replica.log_tail()
            assert time.monotonic() - started < 30, "exit within the pod's grace period"
            # Ready means the boot sweep is done: it lists every scheduled job while the others are busy.
            replica.restart(ready_timeout=max(30.0, JOBS_ROLLING / 20))
        burst.join()
        reconcile_until_settled(cluster, ids)
        assert_one_pod_per_job_and_nothing_failed(cluster, ids)
        assert all("crashed" not in replica.log_path.read_text() for replica in cluster.replicas)


def test_a_replica_stopping_gracefully_hands_the_lease_over_at_once(tmp_path: Path) -> None:
    with running_cluster(tmp_path, 2) as cluster:
        leader = cluster.leader()
        stopped_at = time.monotonic()
        leader.terminate()
        follower = next(replica for replica in cluster.replicas if replica is not leader)
        wait_until(lambda: cluster.leader_name() == follower.name, timeout=LEASE_SECONDS * 2, what="handover")
        # Released, not expired: the follower needs at most one renew interval, not a lease duration.
        assert time.monotonic() - stopped_at < LEASE_SECONDS + RENEW_SECONDS
        assert httpx.get(follower.url + "/readyz", timeout=5).status_code == 200
