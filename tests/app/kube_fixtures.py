"""A ``KubeAPI`` (the production gateway) aimed at a started ``FakeKubeAPI``, for async tests."""

from __future__ import annotations

from kubernetes.aio import client as kclient

from app.kube import KubeAPI, TokenBucket
from app.simulate.kube_client import kube_client_config


def gateway(url: str, *, namespace: str = "buildkite", qps: float = 1000, burst: int = 1000) -> KubeAPI:
    return KubeAPI(
        kclient.ApiClient(kube_client_config(url)), namespace=namespace, limiter=TokenBucket(qps, burst)
    )
