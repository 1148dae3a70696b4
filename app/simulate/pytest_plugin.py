"""Pytest fixtures for tests that need a Kubernetes API: a started `FakeKubeAPI`, official clients
aimed at it, and a `SimulatedKubelet` driving its pods.

Use from a conftest with `from app.simulate.pytest_plugin import *`. Every fixture is function-scoped
and binds port 0, so tests stay independent and parallel-safe under pytest-xdist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import kubernetes.client
import pytest

from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kube_client import kube_client_config_sync

if TYPE_CHECKING:
    from app.simulate.kubelet import SimulatedKubelet

__all__ = ["core_v1", "fake_kube", "kube_api_client", "kubelet", "make_pod"]


@pytest.fixture
def fake_kube() -> Iterator[FakeKubeAPI]:
    """A fake kube-apiserver serving on a fresh loopback port for the duration of one test."""
    with FakeKubeAPI(bookmark_interval=0.2) as kube:
        yield kube


@pytest.fixture
def kube_api_client(fake_kube: FakeKubeAPI) -> Iterator[kubernetes.client.ApiClient]:
    """The synchronous official client, configured for `fake_kube`."""
    with kubernetes.client.ApiClient(kube_client_config_sync(fake_kube.url)) as client:
        yield client


@pytest.fixture
def core_v1(kube_api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube_api_client)


@pytest.fixture
def kubelet(fake_kube: FakeKubeAPI) -> Iterator[SimulatedKubelet]:
    """A simulated node `node-1` (labels `kubernetes.io/os=linux`), stepped explicitly with `.step()`."""
    from app.simulate.kubelet import SimulatedKubelet

    with SimulatedKubelet(fake_kube.url, node_name="node-1", clock=fake_kube.clock) as node:
        yield node


def make_pod(name: str, *, image: str = "alpine:3.20", **spec: object) -> dict[str, object]:
    """A minimal valid Pod manifest; keyword arguments are merged into `spec`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": image}], **spec},
    }
