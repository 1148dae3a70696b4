"""Client for Buildkite's GraphQL API: confirm jobs, list scheduled jobs, check job states.

Callers: the confirm stage (``confirm_jobs`` for a batch of webhook/sweep UUIDs), the sweep
(``scheduled_jobs``) and the lifecycle watcher (``job_states``, before deleting a pending pod).
Queries are built and parsed by the pure ``queries`` module; this module only does transport.

Transport rules (reference/buildkite-api.md §2): POST ``{operationName, query, variables}`` with
``Authorization: Bearer <token>``. 401/403 → ``BuildkiteAuthError`` (permanent). 429 → wait for
``Retry-After`` (or ``RateLimit-Reset``) and retry. 5xx, timeouts and connection errors → back off
with jitter and retry, at most ``RetryPolicy.attempts`` tries. HTTP 200 with ``errors`` →
``GraphQLErrors``, retried only when the message says the server timed out; a schema or complexity
error is permanent. ``budget`` follows the ``RateLimit-*`` headers so metrics can show it.
The client is handed an ``httpx.AsyncClient`` and never builds one; the token is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson

from app.buildkite.queries import (
    MAX_BATCH,
    Document,
    JobRecord,
    build_confirm_jobs,
    build_job_states,
    build_scheduled_jobs,
    canonical_uuids,
    parse_confirm_jobs,
    parse_job_states,
    parse_scheduled_jobs,
)
from app.buildkite.retry import (
    DEFAULT_RETRY,
    RateBudget,
    Retry,
    RetryLoop,
    RetryPolicy,
    Sleep,
    budget_from_headers,
    classify,
    retry_after_seconds,
    short_body,
    transport_retry,
)
from app.errors import BuildkiteAuthError, BuildkiteError, GraphQLErrors

__all__ = ["GraphQLClient", "JobRecord"]

log = logging.getLogger(__name__)

# Errors a retry can cure: the server ran out of time or was briefly unavailable.
_TRANSIENT = re.compile(r"time(d)? ?out|temporarily unavailable|internal (server )?error", re.IGNORECASE)


class GraphQLClient:
    """Buildkite GraphQL over a caller-owned ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        url: str,
        token: str,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._url = url
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._loop = RetryLoop(retry, sleep=sleep, rng=rng)
        self._sleep = sleep
        self._clock = clock
        self.budget: RateBudget | None = None
        # A 429 means the organization's budget is spent: every call waits, not just the one refused.
        self._paused_until = 0.0
        self.last_success_at: float | None = None  # clock time of the last answered query (readiness)

    def __repr__(self) -> str:
        return f"GraphQLClient(url={self._url!r})"  # never the token

    async def confirm_jobs(
        self, uuids: Sequence[str], *, with_cluster: bool = False
    ) -> dict[str, JobRecord | None]:
        """Current data of up to 100 jobs in ONE request, keyed by lower-case UUID.

        None marks a job Buildkite does not know, or one that is not a command job. ``with_cluster``
        also fetches each job's cluster (for ``queries.cluster_mismatch``).
        """
        wanted = canonical_uuids(uuids)
        if not wanted:
            return {}
        data = await self.execute(build_confirm_jobs(wanted, with_cluster=with_cluster), partial_ok=True)
        return parse_confirm_jobs(data, wanted)

    async def job_states(self, uuids: Sequence[str]) -> dict[str, str]:
        """Lower-case state of each known command job, one request per 100 UUIDs."""
        wanted = canonical_uuids(uuids)
        states: dict[str, str] = {}
        for start in range(0, len(wanted), MAX_BATCH):
            chunk = wanted[start : start + MAX_BATCH]
            data = await self.execute(build_job_states(chunk), partial_ok=True)
            states.update(parse_job_states(data, chunk))
        return states

    async def scheduled_jobs(
        self,
        *,
        org: str,
        agent_query_rules: list[str],
        page_size: int = 100,
        max_pages: int = 50,
        cluster_uuid: str | None = None,
    ) -> list[JobRecord]:
        """Scheduled command jobs matching all ``agent_query_rules`` (in ``cluster_uuid``'s cluster, when
        given), oldest first, env included."""
        if not 1 <= page_size <= 500:
            raise ValueError(f"page_size must be 1..500, got {page_size}")
        jobs: dict[str, JobRecord] = {}
        cursor: str | None = None
        for _ in range(max_pages):
            document = build_scheduled_jobs(
                org=org,
                agent_query_rules=agent_query_rules,
                page_size=page_size,
                cursor=cursor,
                cluster_uuid=cluster_uuid,
            )
            page = parse_scheduled_jobs(await self.execute(document))
            # Pages are not a snapshot: a job can show up twice while jobs come and go.
            jobs.update((job.uuid, job) for job in page.jobs if job.uuid not in jobs)
            cursor = page.next_cursor
            if cursor is None:
                return list(jobs.values())
        log.warning("scheduled jobs: stopped after %d pages; newer jobs wait for the next sweep", max_pages)
        return list(jobs.values())

    async def execute(self, document: Document, *, partial_ok: bool = False) -> dict[str, Any]:
        """Send one document and return its ``data``.

        ``partial_ok``: errors that each name an aliased field (e.g. one unknown job) leave that
        field null and are logged, instead of failing the whole batch.
        """

        async def attempt(number: int) -> dict[str, Any]:
            if number == 0:  # a retry already waited out the 429 that paused us
                await self._wait_out_pause()
            return await self._attempt(document, partial_ok=partial_ok)

        return await self._loop.run(attempt, what=f"GraphQL {document.operation_name}")

    async def _wait_out_pause(self) -> None:
        pause = self._paused_until - self._clock()
        if pause > 0:
            await self._sleep(pause)

    async def _attempt(self, document: Document, *, partial_ok: bool) -> dict[str, Any]:
        what = f"GraphQL {document.operation_name}"
        started = time.perf_counter()
        try:
            # A confirm of 100 jobs is ~11 KB: 2 µs in orjson, 44 µs in stdlib json.
            content = orjson.dumps(document.body())
            response = await self._http.post(self._url, content=content, headers=self._headers)
        except httpx.TransportError as exc:
            raise transport_retry(exc, what=what) from exc
        self.budget = budget_from_headers(response.headers, now=self._clock()) or self.budget
        log.debug(
            "%s: HTTP %d in %.1f ms, budget %s",
            what,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            self.budget,
        )
        if response.status_code == 429:
            wait = retry_after_seconds(response.headers, or_reset=True) or 0.0
            self._paused_until = max(self._paused_until, self._clock() + wait)
        _raise_for_status(response, what=what)
        data = _data_of(_envelope(response, what=what), what=what, partial_ok=partial_ok)
        self.last_success_at = self._clock()
        return data


def _raise_for_status(response: httpx.Response, *, what: str) -> None:
    retry = classify(response, what=what)
    if retry is not None:
        raise retry
    status = response.status_code
    if status in (401, 403):
        raise BuildkiteAuthError(
            f"{what}: HTTP {status}: the API token was refused; "
            f"it needs GraphQL access ({short_body(response)})"
        )
    if status != 200:
        raise BuildkiteError(f"{what}: HTTP {status}: {short_body(response)}")


def _envelope(response: httpx.Response, *, what: str) -> dict[str, Any]:
    try:
        envelope = orjson.loads(response.content)
    except (ValueError, RecursionError):
        raise BuildkiteError(f"{what}: response is not JSON: {short_body(response, 80)}") from None
    if not isinstance(envelope, dict):
        raise BuildkiteError(f"{what}: response is JSON but not an object")
    return envelope


def _data_of(envelope: dict[str, Any], *, what: str, partial_ok: bool) -> dict[str, Any]:
    data = envelope.get("data")
    errors = envelope.get("errors") or []
    if not isinstance(errors, list):
        raise BuildkiteError(f"{what}: response 'errors' is not a list")
    if errors:
        messages = [_message(error) for error in errors]
        if partial_ok and isinstance(data, dict) and _all_on_aliases(errors, data):
            log.warning(
                "%s: %d job(s) came back with errors: %s", what, len(errors), "; ".join(messages)[:300]
            )
            return data
        error = GraphQLErrors(messages, transient=any(_TRANSIENT.search(message) for message in messages))
        raise Retry(error) if error.transient else error
    if not isinstance(data, dict):
        raise BuildkiteError(f"{what}: response has neither data nor errors")
    return data


def _message(error: object) -> str:
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else str(error)[:200]


def _all_on_aliases(errors: list[Any], data: dict[str, Any]) -> bool:
    """True when every error points at a top-level field of ``data`` that came back null."""
    for error in errors:
        path = error.get("path") if isinstance(error, dict) else None
        if not isinstance(path, list) or not path or not isinstance(path[0], str):
            return False
        if path[0] not in data or data[path[0]] is not None:
            return False
    return True
