"""Controller parts against the real apiserver, acting as the ServiceAccount deploy/'s RBAC binds:

- the pod watch meets a real 410 Gone after etcd compaction, re-lists, and misses nothing;
- two leader electors on a real Lease: the leader is stopped without a goodbye, the other takes over.

Only public entry points are used (``open_kube_api``, ``PodWatch``, ``LeaderElector``), so the
controller's internals can change freely underneath.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from app.errors import WatchExpired
from app.kube import KubeAPI, TokenBucket, open_kube_api
from app.leader import LeaderElector
from app.metrics import Metrics
from app.watch import CONTROLLER_ID_LABEL, JOB_UUID_LABEL, PodWatch
from tests.realkube.conformance import pod
from tests.realkube.controlplane import ControlPlane
from tests.realkube.deploy_rbac import ControllerRBAC

pytestmark = pytest.mark.realkube

CONTROLLER = "realkube"


async def gateway(rbac: ControllerRBAC, namespace: str | None = None) -> KubeAPI:
    return await open_kube_api(
        kubeconfig=str(rbac.credentials.kubeconfig),
        namespace=namespace or rbac.jobs_namespace,
        limiter=TokenBucket(100, 100),
        lease_namespace=rbac.lease_namespace,
    )


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def job_pod(name: str, uuid: str) -> dict[str, Any]:
    return pod(name, labels={JOB_UUID_LABEL: uuid, CONTROLLER_ID_LABEL: CONTROLLER})


# ---- the watch across a compaction -----------------------------------------------------------------


class HeldWatch:
    """A gateway whose first watch waits for ``release`` (the gap in which the test changes pods and
    compacts etcd), then goes to the real apiserver; what each real watch raised is recorded."""

    def __init__(self, inner: KubeAPI) -> None:
        self._inner = inner
        self.namespace = inner.namespace
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()
        self.raised: list[BaseException] = []
        self._held = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def watch_pods(self, label_selector: str, resource_version: str) -> AsyncIterator[tuple[str, Any]]:
        if not self._held:
            self._held = True
            self.waiting.set()
            await self.release.wait()
        try:
            async for event in self._inner.watch_pods(label_selector, resource_version):
                yield event
        except Exception as exc:
            self.raised.append(exc)
            raise


def test_the_watch_meets_a_real_410_after_compaction_relists_and_misses_nothing(
    control_plane: ControlPlane, controller_rbac: ControllerRBAC
) -> None:
    plane, ns = control_plane, controller_rbac.jobs_namespace
    pods = f"/api/v1/namespaces/{ns}/pods"

    async def scenario() -> None:
        inner = await gateway(controller_rbac)
        held = HeldWatch(inner)
        metrics = Metrics()
        watch = PodWatch(kube=held, controller_id=CONTROLLER, metrics=metrics)
        try:
            plane.request("POST", pods, json=job_pod("w-gone", "u-gone"))
            plane.request("POST", pods, json=job_pod("w-kept", "u-kept"))
            task = asyncio.create_task(watch.run())
            await asyncio.wait_for(held.waiting.wait(), 30)  # listed; about to watch from the list's version
            assert {"w-gone", "w-kept"} <= set(watch.pods)
            # While the watch is down: one pod goes, one finishes, one arrives; then etcd forgets it all.
            plane.request("DELETE", f"{pods}/w-gone")
            plane.request(
                "PATCH",
                f"{pods}/w-kept/status",
                json={"status": {"phase": "Succeeded"}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            plane.request("POST", pods, json=job_pod("w-new", "u-new"))
            plane.compact()
            held.release.set()
            await eventually(lambda: "w-new" in watch.pods, "the re-list to find the pod made in the gap")
            assert any(isinstance(exc, WatchExpired) for exc in held.raised), held.raised
            assert "w-gone" not in watch.pods and not watch.has("u-gone")
            assert watch.pods["w-kept"].phase == "Succeeded"
            value = metrics.registry.get_sample_value(
                "buildkite_controller_watch_restarts_total", {"cause": "expired"}
            )
            assert value == 1
            # And it watches again: a pod created now arrives through the resumed watch.
            plane.request("POST", pods, json=job_pod("w-after", "u-after"))
            await eventually(lambda: watch.has("u-after"), "the resumed watch to deliver a new pod")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await inner.close()

    asyncio.run(scenario())


# ---- leader election on a real Lease -------------------------------------------------------------------


def test_two_electors_on_a_real_lease_the_leader_stops_the_other_takes_over(
    control_plane: ControlPlane, controller_rbac: ControllerRBAC
) -> None:
    lease_path = (
        f"/apis/coordination.k8s.io/v1/namespaces/{controller_rbac.lease_namespace}/leases/"
        f"{controller_rbac.lease_name}"
    )

    async def scenario() -> None:
        gateways = [await gateway(controller_rbac) for _ in range(2)]
        electors = [
            LeaderElector(
                kube=gw,
                name=controller_rbac.lease_name,
                identity=f"replica-{n}",
                lease_duration_seconds=3,
                renew_interval_seconds=0.3,
            )
            for n, gw in enumerate(gateways)
        ]
        tasks = [asyncio.create_task(e.run()) for e in electors]
        both: list[bool] = []

        async def sample(until: Callable[[], Awaitable[bool] | bool], what: str) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not until():
                both.append(all(e.is_leader() for e in electors))
                assert loop.time() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.05)

        try:
            await sample(lambda: any(e.is_leader() for e in electors), "a leader")
            leader = next(n for n, e in enumerate(electors) if e.is_leader())
            other = electors[1 - leader]
            lease = control_plane.request("GET", lease_path)
            assert lease["spec"]["holderIdentity"] == f"replica-{leader}"
            transitions = int(lease["spec"].get("leaseTransitions") or 0)
            # Stopped without release(): as if the pod were killed. The other must wait out the Lease.
            tasks[leader].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[leader]
            await sample(other.is_leader, "the follower to take over")
            lease = control_plane.request("GET", lease_path)
            assert lease["spec"]["holderIdentity"] == other.identity
            assert int(lease["spec"]["leaseTransitions"]) == transitions + 1
            assert not any(both), "two leaders at once"
            assert other.status().last_error is None and other.status().forbidden is None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for gw in gateways:
                await gw.close()

    asyncio.run(scenario())


def test_the_controller_account_is_refused_what_deploy_does_not_grant(
    control_plane: ControlPlane, controller_rbac: ControllerRBAC
) -> None:
    """The RBAC is real: the account may create pods in the jobs namespace, but not read Secrets there,
    nor take a Lease of another name."""
    token = controller_rbac.credentials.token
    headers = {"Authorization": f"Bearer {token}"}
    ns, lease_ns = controller_rbac.jobs_namespace, controller_rbac.lease_namespace
    http = control_plane.http
    assert http.get(f"/api/v1/namespaces/{ns}/pods", headers=headers).status_code == 200
    secrets = http.get(f"/api/v1/namespaces/{ns}/secrets", headers=headers)
    assert secrets.status_code == 403 and controller_rbac.credentials.user in secrets.json()["message"]
    other = http.get(
        f"/apis/coordination.k8s.io/v1/namespaces/{lease_ns}/leases/someone-else", headers=headers
    )
    assert other.status_code == 403
