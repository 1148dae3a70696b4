"""Relay: a follower hands the job UUIDs it received to the leader, who alone confirms and creates.

Every replica takes webhooks (the Service spreads them), but only the leader admits, so the in-flight
limit and priority order are cluster-wide and no two replicas ever race to create one job. A follower's
intake batches its UUIDs to ``Relay.forward``, which posts them to the leader's ``POST /internal/jobs``:

    {"jobs": ["<uuid>", …], "cancelled": ["<uuid>", …]}    signed like a Buildkite webhook: HMAC-SHA256
                                 over "timestamp.body", keyed by the webhook secret every replica shares,
                                 5-minute window. ``cancelled`` carries job.finished cancellations, so
                                 the leader deletes a cancelled job's pod at once, whoever got the webhook.

The leader answers 202 (taken into its intake), 409 when it is not the leader (the follower asks the
Lease again and retries), 401/400/413 for bad requests. The leader's URL is read from its Lease.
What a follower could not deliver stays in its intake and is retried; if the follower dies first, the
leader's sweep finds the jobs, as it finds any job whose webhook was lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import httpx
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.buildkite.signature import sign, verify
from app.errors import WebhookRejected
from app.intake import Retry
from app.jobs import JobBook, Stage, is_uuid, normalise
from app.metrics import Metrics
from app.state import running_controller
from app.webhook import read_body

log = logging.getLogger(__name__)

RELAY_PATH = "/internal/jobs"
# One intake batch is at most 100 UUIDs; this leaves room and bounds the body.
MAX_JOBS = 1000
MAX_BODY_BYTES = 64 * 1024
# The leader answers at once (it only queues); a slow answer means it is in trouble.
FORWARD_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = 1.0
# While no leader is known (an election under way) undelivered jobs are offered again this often.
NO_LEADER_POLL_SECONDS = 0.25


class Relay:
    """The follower's side: post a batch to the leader; on any failure ask intake to retry it."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        leader_url: Callable[[], str | None],
        key: str | None,
        book: JobBook,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._leader_url = leader_url
        self._key = key
        self._book = book
        self._metrics = metrics
        self._clock = clock

    async def forward(self, uuids: list[str]) -> Retry | None:
        retry = await self._post({"jobs": uuids}, uuids)
        if retry is not None:
            return retry
        for uuid in uuids:
            record = self._book.get(uuid)
            if record is not None and record.stage is Stage.SEEN:
                self._book.end(uuid, Stage.HANDED_OVER, "relay", "to the leader")
        return None

    async def forward_cancel(self, uuid: str) -> bool:
        """Tell the leader a job was cancelled; best effort (its 5 s state poll is the safety net)."""
        return await self._post({"cancelled": [uuid]}, [uuid]) is None

    async def _post(self, payload: dict[str, list[str]], uuids: list[str]) -> Retry | None:
        url = self._leader_url()
        if not url:
            return Retry(uuids, after=NO_LEADER_POLL_SECONDS, reason="no leader known yet", escalate=False)
        body = json.dumps(payload).encode()
        headers = {"content-type": "application/json"}
        if self._key:
            headers["x-buildkite-signature"] = sign(body, secret=self._key, timestamp=int(self._clock()))
        try:
            response = await self._http.post(
                url.rstrip("/") + RELAY_PATH, content=body, headers=headers, timeout=FORWARD_TIMEOUT_SECONDS
            )
        except httpx.HTTPError as exc:
            self._metrics.relay_batches.labels("unreachable").inc()
            return Retry(uuids, after=RETRY_SECONDS, reason=f"leader {url} unreachable: {type(exc).__name__}")
        if response.status_code != 202:
            self._metrics.relay_batches.labels(str(response.status_code)).inc()
            return Retry(uuids, after=RETRY_SECONDS, reason=f"leader {url} answered {response.status_code}")
        self._metrics.relay_batches.labels("delivered").inc()
        return None


class RelayReceiver:
    """The leader's side of ``POST /internal/jobs``."""

    def __init__(
        self,
        *,
        key: str | None,
        allow_unsigned: bool,
        submit: Callable[[str], bool],
        cancel: Callable[[str], None],
        is_leader: Callable[[], bool],
        max_skew_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._allow_unsigned = allow_unsigned
        self._submit = submit
        self._cancel = cancel
        self._is_leader = is_leader
        self._skew = max_skew_seconds
        self._clock = clock

    async def handle(self, request: Request) -> JSONResponse:
        try:
            body = await read_body(request, limit=MAX_BODY_BYTES)
            verify(
                request.headers,
                body,
                secret=self._key,
                token=None,
                now=self._clock(),
                max_skew_seconds=self._skew,
                allow_unsigned=self._allow_unsigned and not self._key,
            )
            uuids, cancelled = parse_jobs(body)
        except WebhookRejected as exc:
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        if not self._is_leader():
            return JSONResponse({"error": "not the leader"}, status_code=409)
        for uuid in cancelled:
            self._cancel(uuid)
        accepted = sum(1 for uuid in uuids if self._submit(uuid))
        return JSONResponse({"accepted": accepted, "duplicates": len(uuids) - accepted}, status_code=202)


def parse_jobs(body: bytes) -> tuple[list[str], list[str]]:
    """``(jobs, cancelled)`` from a relay body; ``WebhookRejected`` (400/413) for anything else."""
    try:
        data = orjson.loads(body)
    except (ValueError, RecursionError) as exc:  # a deeply nested body is a RecursionError, not a 500
        raise WebhookRejected(400, "body is not JSON") from exc
    if not isinstance(data, dict) or not set(data) <= {"jobs", "cancelled"}:
        raise WebhookRejected(400, 'body must be {"jobs": [<uuid>, ...], "cancelled": [<uuid>, ...]}')
    lists = [data.get("jobs", []), data.get("cancelled", [])]
    for items in lists:
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise WebhookRejected(400, '"jobs" and "cancelled" must be lists of UUIDs')
    if sum(len(items) for items in lists) > MAX_JOBS:
        raise WebhookRejected(413, f"more than {MAX_JOBS} jobs")
    jobs, cancelled = ([normalise(item) for item in items] for items in lists)
    if not all(is_uuid(uuid) for uuid in (*jobs, *cancelled)):
        raise WebhookRejected(400, "every job must be a UUID")
    return jobs, cancelled


def router() -> APIRouter:
    routes = APIRouter()

    @routes.post(RELAY_PATH)
    async def relay(request: Request) -> JSONResponse:
        return await running_controller(request).relay_receiver.handle(request)

    return routes
