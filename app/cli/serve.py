"""``buildkite-controller serve``: load the settings, configure logging, run the app under uvicorn."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

import uvicorn

from app import logs
from app.config import load
from app.main import create_app

log = logging.getLogger(__name__)


def run(*, flags: Mapping[str, object], config_file: str | None) -> int:
    loaded = load(flags=flags, config_file=config_file)
    settings = loaded.settings
    logs.configure(level=settings.log.level, fmt=settings.log.format)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    if settings.buildkite.token is None or not settings.buildkite.org:
        print(
            "buildkite-controller: --token (BUILDKITE_TOKEN) and --org (BUILDKITE_ORG) are required",
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
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
        # Webhook requests take milliseconds; 5 s for open requests plus the 10 s create drain
        # (app.main.SHUTDOWN_DRAIN_SECONDS) keep the whole shutdown inside the pod's 30 s grace period.
        timeout_graceful_shutdown=5,
    )
    return 0
