"""Several replicas with pods that really run and finish: the hard case for duplicates and limits.

The simulated kubelet runs every pod to success and the simulated agents acquire and finish their jobs
in the fake Buildkite, as buildkite-agent does; succeeded pods are deleted after 1 s. So a job whose
pod is gone is *not* protected by AlreadyExists any more: only the controller's own memory (the job
book's tombstones, the leader-only admission, fresh confirmations) stands between a late webhook or
sweep and a second pod. Creates are counted in the fake apiserver's log over the whole run.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from tests.ha.harness import Burst, Cluster, Replica, running_cluster, wait_until

# Real processes on two shared cores: far beyond the suite-wide 120 s on a busy machine.
pytestmark = pytest.mark.timeout(900)

FULL_SIZE = int(os.environ.get("HA_JOBS", "0"))
JOBS_DUPLICATES = FULL_SIZE or 200
JOBS_LIMIT = (FULL_SIZE and 500) or 200
MAX_IN_FLIGHT = 25
POD_PREFIX = "buildkite-"
# Every job's pod ran, its agent finished the job, within this long after the last webhook.
FINISH_SECONDS = max(240.0, JOBS_DUPLICATES * 0.3)
# Each /reconcile lists every scheduled job through the fake's GraphQL (graphql-core, in the same process
# as the fake apiserver and kubelet): at full size, every 2 s on all three replicas would saturate that
# process and the test would measure the fake, not the controller.
RECONCILE_EVERY_SECONDS = 10.0 if FULL_SIZE else 2.0
# These tests load the fake apiserver with running pods; a 3 s Lease with a 2 s renew deadline makes the
# leader step down whenever one election round is slower than that. Failover timing is measured in
# test_ha.py; here leadership should be steady unless a replica is killed.
STEADY_LEASE = {"lease_duration": "8s", "leader_renew_deadline": "6s", "leader_renew_interval": "1s"}


def urls(cluster: Cluster) -> list[str]:
    return [replica.url for replica in cluster.replicas]


class Reconciler:
    """POST /reconcile to every replica, over and over, in threads, until stopped."""

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self._stop = threading.Event()
        self.answers: Counter[str] = Counter()
        self._threads = [threading.Thread(target=self._loop, args=(r,), daemon=True) for r in replicas]

    def __enter__(self) -> Reconciler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(70)

    def _loop(self, replica: Replica) -> None:
        while not self._stop.is_set():
            try:
                status = httpx.post(replica.url + "/reconcile", timeout=60).status_code
                self.answers[str(status)] += 1
            except httpx.HTTPError:
                self.answers["error"] += 1  # the replica is being killed or restarted
            self._stop.wait(RECONCILE_EVERY_SECONDS)


def wait_all_finished(cluster: Cluster, ids: Sequence[str], *, also_reconcile: bool = True) -> None:
    """Every job finished by its agent; meanwhile the leader is asked to sweep every 10 s, as its own
    timer would (the webhooks a killed replica had not relayed yet are found that way)."""
    wanted = set(ids)
    last_sweep = time.monotonic()

    def finished() -> bool:
        nonlocal last_sweep
        states = {job["id"]: job["state"] for job in cluster.sim.jobs() if job["id"] in wanted}
        missing = [uuid for uuid in wanted if states.get(uuid) != "finished"]
        if missing and also_reconcile and time.monotonic() - last_sweep > 10:
            last_sweep = time.monotonic()
            leader = cluster.leader_name()
            for replica in cluster.replicas:
                if replica.name == leader:
                    httpx.post(replica.url + "/reconcile", timeout=60)
        return not missing

    try:
        wait_until(
            finished, timeout=FINISH_SECONDS, what=f"{len(ids)} jobs finished by their agents", every=1.0
        )
    except AssertionError as exc:
        states = {job["id"]: job["state"] for job in cluster.sim.jobs() if job["id"] in wanted}
        missing = sorted(uuid for uuid in wanted if states.get(uuid) != "finished")
        created = Counter(cluster.sim.created("pods"))
        pods = {pod["job_uuid"]: pod["phase"] for pod in cluster.sim.pods()}
        detail = Counter((states.get(u), created[POD_PREFIX + u], pods.get(u)) for u in missing)
        raise AssertionError(
            f"{exc}: {len(missing)} not finished, (state, creates, pod phase): {detail}; e.g. {missing[:3]}"
            f"; what each replica knows of the first: {trails(cluster, missing[0])}"
        ) from None


def trails(cluster: Cluster, uuid: str) -> dict[str, object]:
    """Each replica's record of a job (its stage and trail, from GET /jobs/{uuid})."""
    known: dict[str, object] = {}
    for replica in cluster.replicas:
        try:
            response = httpx.get(
                f"{replica.url}/jobs/{uuid}", headers={"Accept": "application/json"}, timeout=5
            )
            known[replica.name] = response.json()
        except httpx.HTTPError as exc:
            known[replica.name] = repr(exc)
    return known


def creates_per_job(cluster: Cluster, ids: Sequence[str]) -> Counter[str]:
    names = Counter(cluster.sim.created("pods"))
    return Counter({uuid: names[POD_PREFIX + uuid] for uuid in ids})


def test_running_pods_three_replicas_a_kill_and_restart_one_create_per_job(tmp_path: Path) -> None:
    with running_cluster(
        tmp_path,
        3,
        kubelet=True,
        succeeded_pod_retention="1s",
        # The default limit: the simulated kubelet advances every live pod each tick, so thousands of
        # Pending pods at once would measure the fake, not the controller.
        max_in_flight=str(MAX_IN_FLIGHT),
        ready_timeout=90,
        **STEADY_LEASE,
    ) as cluster:
        ids = cluster.sim.add_jobs(JOBS_DUPLICATES)
        bodies = cluster.sim.webhook_bodies(ids)
        with Reconciler(cluster.replicas) as reconciler:
            burst = Burst(urls(cluster), bodies, seed=11).start()
            burst.wait_progress(0.3)
            victim = cluster.leader()
            victim.kill()
            burst.wait_progress(0.6)
            victim.restart(ready_timeout=120)
            burst.join(180)
            # Late duplicates of every webhook, after most pods have run and been deleted.
            late = Burst(urls(cluster), bodies, copies=1, seed=12).start()
            late.join(180)
            wait_all_finished(cluster, ids)
        creates = creates_per_job(cluster, ids)
        duplicated = {uuid: n for uuid, n in creates.items() if n > 1}
        assert duplicated == {}, f"{len(duplicated)} jobs got a second pod"
        assert all(n == 1 for n in creates.values())
        assert sum(Counter(cluster.sim.created("pods")).values()) == len(ids), "pods for unknown jobs"
        assert all(n <= 1 for n in cluster.sim.finish_counts().values()), "a job finished twice"
        assert reconciler.answers["200"] > 0
        print(
            f"\nrunning pods: {len(ids)} jobs, {len(burst.plan) + len(late.plan)} webhooks, "
            f"{sum(reconciler.answers.values())} reconciles, leader {victim.name} killed and restarted; "
            f"creates accepted per job: max {max(creates.values())}, duplicates 0"
        )


def test_max_in_flight_is_one_limit_across_replicas_and_priority_holds(tmp_path: Path) -> None:
    with running_cluster(
        tmp_path,
        3,
        kubelet=True,
        succeeded_pod_retention="1s",
        max_in_flight=str(MAX_IN_FLIGHT),
        ready_timeout=90,
        **STEADY_LEASE,
    ) as cluster:
        ids: list[str] = []
        priority: dict[str, int] = {}
        # Pods run 1-3 s (5-15 kubelet ticks of 0.2 s); half the jobs matter more.
        for ticks, prio in itertools.product((5, 10, 15), (1, 10)):
            plugin = {
                "kubernetes": {
                    "metadata": {"annotations": {"kubelet.simulate/container.container-0": f"ticks={ticks}"}}
                }
            }
            batch = cluster.sim.add_jobs(JOBS_LIMIT // 6, plugins=[plugin], priority=prio)
            ids += batch
            priority.update(dict.fromkeys(batch, prio))
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                pods = cluster.sim.pods()
                samples.append(
                    sum(1 for p in pods if p["phase"] not in ("Succeeded", "Failed") and not p["deleting"])
                )
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            burst = Burst(urls(cluster), cluster.sim.webhook_bodies(ids), seed=21).start()
            burst.join(120)
            queued_from = len(cluster.sim.created("pods"))  # creations after this had the whole queue
            wait_all_finished(cluster, ids, also_reconcile=False)
        finally:
            stop.set()
            sampler.join(5)
        assert max(samples) <= MAX_IN_FLIGHT, f"live agent pods peaked at {max(samples)}"
        assert max(samples) >= MAX_IN_FLIGHT - 5, "the limit was the bottleneck, so it must be reached"
        creates = creates_per_job(cluster, ids)
        assert all(n == 1 for n in creates.values())
        order = [name.removeprefix(POD_PREFIX) for name in cluster.sim.created("pods")][queued_from:]
        inversions = pairs = 0
        for i, later in enumerate(order):
            for earlier in order[:i]:
                if priority[earlier] != priority[later]:
                    pairs += 1
                    inversions += priority[earlier] < priority[later]
        assert pairs == 0 or inversions / pairs < 0.05, f"{inversions} of {pairs} pairs out of priority order"
        print(
            f"\nmax-in-flight {MAX_IN_FLIGHT} over 3 replicas, {len(ids)} jobs: live pods peaked at "
            f"{max(samples)} in {len(samples)} samples; priority inversions {inversions}/{pairs}"
        )
