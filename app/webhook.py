"""Webhook: ``POST /webhooks/buildkite`` — verify, parse, pre-filter, hand the job UUID to intake; 202.

Only verification and parsing happen on the request path, so Buildkite gets its answer in
milliseconds; confirmation and pod creation happen off it. Bad input is always a 4xx with a reason
(Buildkite shows it in its webhook log), never a 5xx.

It is the one hot path, so ``WebhookIntake`` is a plain ASGI app that ``app.main.ControllerApp`` calls
before FastAPI's middleware, routing and dependency layers, which cost a third of a webhook's CPU (py-spy
under ``bench/bench_ingest.py``). It handles its own errors; no exception leaves it for bad input.

    401  bad or missing signature/token, stale timestamp
    400  malformed body          413  body over the size limit
    202  job.scheduled accepted  200  ignored (ping, other events, not our queue or cluster, duplicates)
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.buildkite.signature import verify
from app.buildkite.webhook import WebhookEvent, is_other_cluster, parse_event
from app.errors import WebhookRejected
from app.intake import Intake
from app.logs import job_log
from app.metrics import Metrics
from app.settings import WebhookSettings
from app.tags import ControllerTags

log = logging.getLogger(__name__)

CANCELLED_STATES = frozenset({"canceled", "canceling", "cancelled"})
PATH = "/webhooks/buildkite"
_READ_HEADERS = frozenset(
    {b"x-buildkite-event", b"x-buildkite-signature", b"x-buildkite-token", b"content-length"}
)


class WebhookIntake:
    """The route's logic, separate from FastAPI so it reads top to bottom."""

    def __init__(
        self,
        *,
        settings: WebhookSettings,
        tags: ControllerTags,
        intake: Intake,
        on_cancel: Callable[[str], None],
        metrics: Metrics,
        is_accepting: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        cluster_uuid: str | None = None,
    ) -> None:
        self._settings = settings
        self._cluster_uuid = cluster_uuid
        self._tags = tags
        self._intake = intake
        self._on_cancel = on_cancel
        self._metrics = metrics
        self._is_accepting = is_accepting
        self._clock = clock
        self._counters: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /webhooks/buildkite`` as ASGI; any other method is 405."""
        if scope["method"] != "POST":
            await _METHOD_NOT_ALLOWED(scope, receive, send)
            return
        response = await self.handle(scope, receive)
        await response(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive) -> JSONResponse:
        # Only the headers read here (ASGI gives names lower-cased), repeats kept so that ``verify``
        # still refuses a repeated signature: it scans them twice, and proxies add a dozen others.
        headers = Headers(raw=[pair for pair in scope["headers"] if pair[0] in _READ_HEADERS])
        event_name = headers.get("x-buildkite-event") or "unknown"
        try:
            body = await receive_body(
                receive, limit=self._settings.max_body_bytes, declared=headers.get("content-length")
            )
            verify(
                headers,
                body,
                secret=_reveal(self._settings.secret),
                token=_reveal(self._settings.token),
                now=self._clock(),
                max_skew_seconds=self._settings.max_skew_seconds,
                allow_unsigned=self._settings.allow_unsigned,
            )
            event = parse_event(
                headers.get("x-buildkite-event"), body, max_bytes=self._settings.max_body_bytes
            )
        except WebhookRejected as exc:
            self._count(event_name, f"rejected_{exc.status}")
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        status, outcome = self._dispatch(event)
        self._count(event.event, outcome)
        return _answer(status, outcome)

    def _count(self, event: str, outcome: str) -> None:
        key = (_metric_event(event), outcome)
        counter = self._counters.get(key)
        if counter is None:  # labels() takes a lock and builds a key per call: resolve each pair once
            counter = self._counters[key] = self._metrics.webhooks.labels(*key)
        counter.inc()

    def _dispatch(self, event: WebhookEvent) -> tuple[int, str]:
        job = event.job
        if event.event == "job.finished" and job is not None and (job.state or "") in CANCELLED_STATES:
            job_log(log, job.id, stage="webhook").info("job cancelled")
            self._on_cancel(job.id)
            return 200, "cancelled"
        if event.event != "job.scheduled" or job is None:
            return 200, "ignored"
        if job.type not in (None, "script"):
            return 200, "ignored"
        if not self._tags.matches_rules(job.agent_query_rules):
            return 200, "not_our_queue"
        if is_other_cluster(job, self._cluster_uuid):
            return 200, "not_our_cluster"
        if not self._is_accepting():
            # Draining for shutdown: the leader's sweep picks the job up; 503 tells Buildkite's log why.
            return 503, "shutting_down"
        if not self._intake.submit(job.id):
            return 200, "duplicate"
        job_log(log, job.id, stage="webhook").info("accepted")
        return 202, "accepted"


async def read_body(request: Request, *, limit: int) -> bytes:
    """The raw body, refusing early (413) once it passes ``limit`` instead of buffering it all."""
    return await receive_body(request.receive, limit=limit, declared=request.headers.get("content-length"))


async def receive_body(receive: Receive, *, limit: int, declared: str | None) -> bytes:
    """``read_body`` straight from ASGI messages (``Content-Length`` as ``declared``): no ``Request``
    and no async generator on the webhook's path. A client that goes away raises ``ClientDisconnect``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise WebhookRejected(413, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise WebhookRejected(413, f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@functools.cache
def _answer(status: int, outcome: str) -> JSONResponse:
    """The few answers that carry no request data, each built once (a Response holds no request state)."""
    return JSONResponse({"result": outcome}, status_code=status)


_METHOD_NOT_ALLOWED = JSONResponse(
    {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "POST"}
)


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _metric_event(name: str) -> str:
    """Bound the label's values: a hostile sender must not mint a time series per request."""
    return name if name in _KNOWN_EVENTS else "other"


_KNOWN_EVENTS = frozenset(
    {
        "ping",
        "job.scheduled",
        "job.started",
        "job.finished",
        "job.activated",
        "build.scheduled",
        "build.running",
        "build.finished",
    }
)
