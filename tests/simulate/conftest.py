"""Fixtures for the fakes' own tests: `fake_kube`, `kube_api_client`, `core_v1`, `kubelet`."""

from app.simulate.pytest_plugin import core_v1, fake_kube, kube_api_client, kubelet

__all__ = ["core_v1", "fake_kube", "kube_api_client", "kubelet"]
