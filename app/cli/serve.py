"""``buildkite-controller serve``: load the settings, configure logging, run the app under uvicorn."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import Any

import uvicorn

from app import logs
from app.config import load
from app.main import create_app
from app.ops import serve_split

log = logging.getLogger(__name__)


def run(*, flags: Mapping[str, object], config_file: str | None) -> int:
    loaded = load(flags=flags, config_file=config_file)
    settings = loaded.settings
    logs.configure(level=settings.log.effective_level, fmt=settings.log.format)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    if settings.buildkite.token is None or not settings.buildkite.org:
        print(
            "buildkite-controller: --token (BUILDKITE_TOKEN) and --org (BUILDKITE_ORG) are required",
            file=sys.stderr,
        )
        return 2
    if settings.buildkite.agent_token is None:
        print(
            "buildkite-controller: --agent-token (BUILDKITE_AGENT_TOKEN) is required: it is how a job whose "
            "pod cannot run (invalid plugin config, an image that cannot be pulled, a pod stuck pending) is "
            "failed in Buildkite with the reason; without it such a job would stay scheduled and get a new "
            "pod again and again",
            file=sys.stderr,
        )
        return 2
    if (
        settings.webhook.secret is None
        and settings.webhook.token is None
        and not settings.webhook.allow_unsigned
    ):
        print(
            "buildkite-controller: set --webhook-secret or --webhook-token (or --allow-unsigned-webhooks)",
            file=sys.stderr,
        )
        return 2
    if settings.server.ops_port == settings.server.port:
        print("buildkite-controller: --ops-port must differ from --port (or be 0)", file=sys.stderr)
        return 2
    server = settings.server
    # Webhook requests take milliseconds; 5 s for open requests plus the 10 s create drain
    # (app.main.SHUTDOWN_DRAIN_SECONDS) keep the whole shutdown inside the pod's 30 s grace period.
    options: dict[str, Any] = {"log_config": None, "access_log": False, "timeout_graceful_shutdown": 5}
    if server.ops_port:  # the ops endpoints on a port of their own (app.ops)
        asyncio.run(
            serve_split(
                create_app(settings), host=server.host, port=server.port, ops_port=server.ops_port, **options
            )
        )
    else:
        uvicorn.run(create_app(settings), host=server.host, port=server.port, **options)
    return 0
