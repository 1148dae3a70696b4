"""The leader Lease lives in the controller's namespace, apart from the jobs namespace the pods use.

deploy/ runs the controller in its own namespace and its agent pods in another; the Lease Role is granted
in the controller's. Input: ``KubeAPI`` against the fake apiserver, and ``app.config.load`` with the
downward-API variable the Deployment sets.
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.aio import client as kclient

from app.config import load
from app.errors import ConfigInvalid
from app.kube import KubeAPI, TokenBucket
from app.leader import LeaderElector
from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kube_client import kube_client_config

JOBS, CONTROLLER = "buildkite", "buildkite-controller"


def test_the_lease_is_taken_in_the_lease_namespace_and_pods_stay_in_the_jobs_namespace() -> None:
    async def scenario(url: str) -> None:
        kube = KubeAPI(
            kclient.ApiClient(kube_client_config(url)),
            namespace=JOBS,
            limiter=TokenBucket(1000, 1000),
            lease_namespace=CONTROLLER,
        )
        try:
            elector = LeaderElector(
                kube=kube, name="leader", identity="a", lease_duration_seconds=15, renew_interval_seconds=5
            )
            assert await elector.try_acquire_or_renew() is True
            await kube.create_pod(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c", "image": "alpine:3.20"}]},
                }
            )
        finally:
            await kube.close()

    with FakeKubeAPI() as fake:
        asyncio.run(scenario(fake.url))
        assert fake.get("leases", "leader", namespace=JOBS) is None
        lease = fake.get("leases", "leader", namespace=CONTROLLER)
        assert lease is not None and lease["spec"]["holderIdentity"] == "a"
        assert fake.get("pods", "p", namespace=JOBS) is not None


def test_without_a_lease_namespace_the_lease_stays_in_the_jobs_namespace() -> None:
    kube = KubeAPI(
        kclient.ApiClient(kube_client_config("http://127.0.0.1:1")), namespace=JOBS, limiter=TokenBucket(1, 1)
    )
    assert kube.lease_namespace == JOBS
    asyncio.run(kube.close())


def test_the_lease_namespace_comes_from_the_downward_api_and_a_flag_overrides_it() -> None:
    assert load(env={"POD_NAMESPACE": CONTROLLER}).settings.leader.lease_namespace == CONTROLLER
    assert load(env={}).settings.leader.lease_namespace == ""
    flagged = load(env={"POD_NAMESPACE": CONTROLLER}, flags={"leader-lease-namespace": "elsewhere"})
    assert flagged.settings.leader.lease_namespace == "elsewhere"


def test_a_lease_namespace_that_is_not_a_dns_label_is_refused_by_name() -> None:
    with pytest.raises(ConfigInvalid, match="leader-lease-namespace"):
        load(env={"POD_NAMESPACE": "Not_A/Namespace"})
