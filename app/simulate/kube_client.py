"""Build official `kubernetes` client configurations aimed at the fake apiserver.

The fake speaks plain HTTP on loopback with no authentication, so the configuration only needs the
host; a dummy bearer token is set so code that insists on auth headers behaves as in a cluster.
"""

from __future__ import annotations

import kubernetes.aio.client
import kubernetes.client


def kube_client_config(url: str) -> kubernetes.aio.client.Configuration:
    """Configuration for `kubernetes.aio` (asyncio, aiohttp) against `url`."""
    config = kubernetes.aio.client.Configuration(host=url)
    config.api_key = {"BearerToken": "Bearer fake-token"}
    return config


def kube_client_config_sync(url: str) -> kubernetes.client.Configuration:
    """Configuration for the synchronous `kubernetes.client` (urllib3) against `url`."""
    config = kubernetes.client.Configuration(host=url)
    config.api_key = {"BearerToken": "Bearer fake-token"}
    return config
