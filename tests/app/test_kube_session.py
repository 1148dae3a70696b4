"""``open_kube_api``'s HTTP session trusts the environment only when the environment has something to say.

aiohttp's ``trust_env`` reads netrc and looks proxies up in worker threads on every request; the
gateway turns it off when no proxy variable and no netrc file exist, and keeps it when either does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.kube import KubeAPI, TokenBucket, open_kube_api

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: buildkite}}]
current-context: x
"""


def session_trusts_env(tmp_path: Path) -> bool:
    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG)

    async def scenario() -> bool:
        gateway: KubeAPI = await open_kube_api(
            kubeconfig=str(config), namespace="buildkite", limiter=TokenBucket(0, 1)
        )
        try:
            # The session the client makes on its first request (built lazily, the same way).
            rest = gateway._client.rest_client
            rest.pool_manager = rest._create_pool_manager()
            return bool(rest.pool_manager.trust_env)
        finally:
            await gateway.close()

    return asyncio.run(scenario())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import os

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("NETRC", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_no_proxy_and_no_netrc_skips_the_per_request_lookup(clean_env: Path, tmp_path: Path) -> None:
    assert session_trusts_env(tmp_path) is False


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "NO_PROXY"])
def test_a_proxy_variable_keeps_the_environment_trusted(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "http://proxy.example:3128")
    assert session_trusts_env(tmp_path) is True


def test_a_netrc_file_keeps_the_environment_trusted(clean_env: Path, tmp_path: Path) -> None:
    (clean_env / ".netrc").write_text("machine 127.0.0.1 login a password b\n")
    assert session_trusts_env(tmp_path) is True
