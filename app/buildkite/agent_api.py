"""Fail a Buildkite job the way the GraphQL-era controller did: as a throw-away agent.

Caller: the lifecycle stage, for jobs whose pod can never run them (invalid plugin config, image
pull failure, pod lost before the agent acquired the job). GraphQL has no "fail job" mutation
(reference/buildkite-api.md §2.3), so we speak the agent REST API (§5.2):

    POST register (agent token) → access token     the agent is ignored by dispatch
    PUT  jobs/{uuid}/acquire                       422: not ours → GET jobs/{uuid} says HELD_BY_ANOTHER
                                                   (an agent has it) or ENDED (finished, cancelled, …)
    PUT  jobs/{uuid}/start
    POST jobs/{uuid}/chunks                        the message, gzip-compressed, is the job's log
    PUT  jobs/{uuid}/finish                        exit_status "-1", signal_reason "stack_error"
    POST disconnect                                once the job is finished or not ours

A report that stops half-way (acquired, maybe started and logged, then ``finish`` failed after its
retries) keeps its agent: the next ``fail_job`` for that job resumes with the same access token where
the last one stopped. A new agent could not: its acquire would be refused (the job is ours, running),
and the job would stay ``running`` under an agent nobody drives. At most ``MAX_UNFINISHED`` such
agents are kept, each for ``UNFINISHED_TTL_SECONDS``.

``signal_reason: stack_error`` is what agent-stack-k8s users get for jobs the stack failed, so their
retry rules (``signal_reason: stack_error``, ``exit_status: -1``) keep working. 429 and 5xx are
retried with back-off; 423 on acquire (job locked) is retried honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import platform
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.buildkite.agent_log import failure_log, split_chunks
from app.buildkite.queries import canonical_uuids
from app.buildkite.retry import (
    DEFAULT_RETRY,
    Retry,
    RetryLoop,
    RetryPolicy,
    Sleep,
    classify,
    retry_after_seconds,
    short_body,
    transport_retry,
)
from app.errors import BuildkiteAuthError, BuildkiteError

log = logging.getLogger(__name__)

# The agent protocol version we speak; Buildkite checks agent versions for compatibility.
AGENT_VERSION = "3.136.2"


# A kept half-finished report is dropped after this long (Buildkite marks a silent agent lost well
# before) or when more than this many are kept; dropping one is logged.
UNFINISHED_TTL_SECONDS = 3600.0
MAX_UNFINISHED = 1000

# Job states after which nothing runs the job (reference/buildkite-api.md §5.4; passed/failed are REST's).
ENDED_STATES = frozenset(
    {
        "finished",
        "passed",
        "failed",
        "canceled",
        "expired",
        "skipped",
        "timed_out",
        "broken",
        "waiting_failed",
        "blocked_failed",
        "unblocked_failed",
    }
)


class FailOutcome(enum.StrEnum):
    """What failing a job came to, and whether the job's pod may be deleted.

    Only FAILED and ENDED let the caller delete the job's pod: after HELD_BY_ANOTHER an agent — maybe
    the pod's own, which acquired the job meanwhile — holds the job, and deleting its pod would kill
    the build; after RETRY the pod's agent may still acquire it.
    """

    FAILED = "failed"  # we finished the job in Buildkite: exit status -1, our message as its log
    HELD_BY_ANOTHER = "held_by_another"  # acquire refused: an agent has the job (or its state is unknown)
    ENDED = "ended"  # acquire refused: the job already finished, was cancelled, expired, …
    RETRY = "retry"  # nothing settled (Buildkite unreachable or an error); ask again later

    @property
    def pod_may_be_deleted(self) -> bool:
        return self in (FailOutcome.FAILED, FailOutcome.ENDED)

    @property
    def settled(self) -> bool:
        """Asking again would not change the answer (the job is failed, or not ours to fail)."""
        return self is not FailOutcome.RETRY


class _Registration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: str = Field(min_length=1)
    endpoint: str | None = None
    request_headers: dict[str, str] | None = None


class _AcquireResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    chunks_max_size_bytes: int | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class _Acquired:
    chunk_limit: int | None  # the server's largest log chunk, when it said
    started: bool  # a retried acquire was resolved by starting the job already


@dataclass
class _Unfinished:
    session: _AgentSession
    kept_at: float


class AgentAPI:
    """The agent REST API, used only to fail jobs; one short-lived agent per job."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        endpoint: str,
        agent_token: str,
        tags: Sequence[str] = (),
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        hostname: str | None = None,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._agent_token = agent_token
        self._tags = list(tags)
        self._loop = RetryLoop(retry, sleep=sleep, rng=rng)
        self._clock = clock
        self._hostname = hostname or socket.gethostname()
        self._unfinished: dict[str, _Unfinished] = {}  # job → its agent, for reports that stopped half-way

    def __repr__(self) -> str:
        return f"AgentAPI(endpoint={self._endpoint!r})"  # never the token

    async def fail_job(self, uuid: str, message: str) -> FailOutcome:
        """Finish job ``uuid`` as failed with ``message`` as its log, unless it is not ours to take.

        Returns FAILED, HELD_BY_ANOTHER or ENDED; raises ``BuildkiteError`` when Buildkite cannot be
        reached or refuses. A report that stopped after the acquire resumes on the next call with the
        same agent; ``message`` is not uploaded again if the first upload went through.
        """
        job = canonical_uuids([uuid])[0]
        self._trim()
        kept = self._unfinished.pop(job, None)
        session = kept.session if kept is not None else await self._register(job)
        done = False
        try:
            outcome = await session.fail(job, message)
            done = True
            return outcome
        finally:
            if done or not session.may_hold_job:
                await session.disconnect()
            else:
                # Keep the agent (and its token): only it can finish the job it may hold.
                self._unfinished[job] = _Unfinished(session, kept.kept_at if kept else self._clock())
                self._trim()

    def unfinished(self) -> int:
        """How many half-finished reports are kept for a retry."""
        return len(self._unfinished)

    def _trim(self) -> None:
        now = self._clock()
        for job, kept in list(self._unfinished.items()):
            if now - kept.kept_at > UNFINISHED_TTL_SECONDS or len(self._unfinished) > MAX_UNFINISHED:
                del self._unfinished[job]
                log.warning("dropped the unfinished failure report of Buildkite job %s and its agent", job)

    async def _register(self, job: str) -> _AgentSession:
        body = {
            "name": f"buildkite-controller-fail-{job[:8]}",
            "hostname": self._hostname,
            "os": platform.system().lower(),
            "arch": platform.machine(),
            "version": AGENT_VERSION,
            "script_eval_enabled": False,
            "ignore_in_dispatches": True,  # never hand this agent any other job
            "priority": 0,
            "meta_data": self._tags,
            "features": ["acquire-job"],
        }
        base = _Call(self._http, self._loop, self._endpoint, {"Authorization": f"Token {self._agent_token}"})
        response = await base.send("POST", "register", json=body)
        if response.status_code not in (200, 201):
            raise _unexpected(response, what="agent register")
        try:
            registration = _Registration.model_validate_json(response.content)
        except ValidationError:
            raise BuildkiteError(f"agent register: malformed response: {short_body(response, 80)}") from None
        echoed = {
            k: v
            for k, v in (registration.request_headers or {}).items()
            if k.lower().startswith("buildkite-")
        }
        headers = {**echoed, "Authorization": f"Token {registration.access_token}"}
        call = _Call(self._http, self._loop, registration.endpoint or self._endpoint, headers)
        return _AgentSession(call, clock=self._clock)


class _Call:
    """Send one agent API request with retries for 429/5xx (and any extra statuses asked for)."""

    def __init__(
        self, http: httpx.AsyncClient, loop: RetryLoop, endpoint: str, headers: Mapping[str, str]
    ) -> None:
        self._http = http
        self._loop = loop
        self._base = endpoint.rstrip("/") + "/"
        self._headers = dict(headers)
        self.had_unanswered_attempt = False  # an earlier try of the last call may have reached the server

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        retry_statuses: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> httpx.Response:
        what = f"agent API {method} {path}"
        self.had_unanswered_attempt = False

        async def attempt(number: int) -> httpx.Response:
            sent = {**self._headers, **(headers or {}), "X-Buildkite-Backoff-Sequence": str(number)}
            try:
                response = await self._http.request(method, self._base + path, headers=sent, **kwargs)
            except httpx.TransportError as exc:
                self.had_unanswered_attempt = True
                raise transport_retry(exc, what=what) from exc
            retry = classify(response, what=what) or _extra_retry(response, retry_statuses, what=what)
            if retry is not None:
                self.had_unanswered_attempt |= response.status_code >= 500
                raise retry
            return response

        return await self._loop.run(attempt, what=what)


def _extra_retry(response: httpx.Response, statuses: frozenset[int], *, what: str) -> Retry | None:
    if response.status_code not in statuses:
        return None
    error = BuildkiteError(f"{what}: still HTTP {response.status_code} after retries")
    return Retry(error, retry_after_seconds(response.headers))


class _AgentSession:
    """A registered throw-away agent: acquire, start, log, finish one job, then disconnect.

    It remembers how far it got, so a ``fail`` that raised can be called again and carry on.
    """

    def __init__(self, call: _Call, *, clock: Callable[[], float]) -> None:
        self._call = call
        self._clock = clock
        self._acquired: _Acquired | None = None
        self._acquire_sent = False  # an acquire went out: it may have landed even if we saw no reply
        self._started = False
        self._logged = False

    @property
    def may_hold_job(self) -> bool:
        return self._acquired is not None or self._acquire_sent

    async def fail(self, job: str, message: str) -> FailOutcome:
        if self._acquired is None:
            acquired = await self._acquire(job)
            if acquired is None:
                self._acquire_sent = False  # settled: the job is not ours
                return await self._not_ours(job)
            self._acquired, self._started = acquired, acquired.started
        if not self._started:
            started = await self._call.send("PUT", f"jobs/{job}/start", json={"started_at": self._now()})
            # A 422 after a lost reply may mean our first start landed: ask before giving up. The job is
            # ours (we acquired it), so "running" means we started it.
            if started.status_code != 200 and await self._state_of(job) != "running":
                raise _unexpected(started, what=f"start job {job}")
            self._started = True
        if not self._logged:
            await self._upload_log(job, failure_log(message), self._acquired.chunk_limit)
            self._logged = True
        outcome = await self._finish(job)
        log.info("failed Buildkite job %s: %s", job, message[:200])
        return outcome

    async def _not_ours(self, job: str) -> FailOutcome:
        state = await self._state_of(job)
        if state in ENDED_STATES:
            log.info("Buildkite job %s was not failed: it already ended (%s)", job, state)
            return FailOutcome.ENDED
        # Unknown counts as held: deleting a pod whose agent runs the job is the worse mistake.
        log.info("Buildkite job %s was not failed: an agent holds it (state %s)", job, state or "unknown")
        return FailOutcome.HELD_BY_ANOTHER

    async def disconnect(self) -> None:
        # Best effort: an agent that never disconnects is marked lost by Buildkite; nothing is stuck.
        try:
            await self._call.send("POST", "disconnect")
        except BuildkiteError as exc:
            log.warning("agent disconnect failed: %s", exc)

    async def _acquire(self, job: str) -> _Acquired | None:
        landed_before = self._acquire_sent  # an acquire of an earlier call may have landed
        try:
            response = await self._call.send(
                "PUT",
                f"jobs/{job}/acquire",
                headers={"X-Buildkite-Lock-Acquire-Job": "1"},
                retry_statuses=frozenset({423}),
            )
        finally:
            self._acquire_sent = landed_before or self._call.had_unanswered_attempt
        if response.status_code == 422 and self._acquire_sent:
            # Our earlier try may have acquired it; if so, start succeeds and the job is ours.
            return await self._probe_start(job)
        if response.status_code == 422:
            log.info("Buildkite job %s is not acquirable (already taken, cancelled or finished)", job)
            return None
        if response.status_code != 200:
            raise _unexpected(response, what=f"acquire job {job}")
        try:
            chunk_limit = _AcquireResponse.model_validate_json(response.content).chunks_max_size_bytes
        except ValidationError:
            chunk_limit = None  # the job JSON is the agent's business; our log fits the default
        return _Acquired(chunk_limit=chunk_limit, started=False)

    async def _probe_start(self, job: str) -> _Acquired | None:
        started = await self._call.send("PUT", f"jobs/{job}/start", json={"started_at": self._now()})
        return _Acquired(chunk_limit=None, started=True) if started.status_code == 200 else None

    async def _upload_log(self, job: str, text: bytes, chunk_limit: int | None) -> None:
        for sequence, (offset, data, compressed) in enumerate(split_chunks(text, chunk_limit), start=1):
            response = await self._call.send(
                "POST",
                f"jobs/{job}/chunks",
                params={"sequence": sequence, "offset": offset, "size": len(data)},
                content=compressed,
                headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"},
            )
            if response.status_code not in (200, 201, 204):
                raise _unexpected(response, what=f"upload log of job {job}")

    async def _finish(self, job: str) -> FailOutcome:
        body = {
            "exit_status": "-1",
            "signal_reason": "stack_error",
            "finished_at": self._now(),
            "chunks_failed_count": 0,
        }
        response = await self._call.send("PUT", f"jobs/{job}/finish", json=body)
        if response.status_code == 422 and await self._state_of(job) == "running":
            # Buildkite refused the body itself (perhaps our signal_reason): finishing without it
            # beats a job left running. Had an earlier, lost try landed, the job would be finished.
            body.pop("signal_reason")
            response = await self._call.send("PUT", f"jobs/{job}/finish", json=body)
        if response.status_code in (200, 204):
            return FailOutcome.FAILED
        state = await self._state_of(job)
        if state == "finished":
            return FailOutcome.FAILED  # only the holder finishes a job: an earlier, lost try of ours landed
        if state in ENDED_STATES:
            return FailOutcome.ENDED  # cancelled under us, say; nothing runs it any more
        raise _unexpected(response, what=f"finish job {job}")

    async def _state_of(self, job: str) -> str | None:
        """The job's state as the agent API reports it, or None when it will not say."""
        response = await self._call.send("GET", f"jobs/{job}")
        try:
            state = response.json().get("state") if response.status_code == 200 else None
        except (ValueError, AttributeError):
            return None
        return state if isinstance(state, str) else None

    def _now(self) -> str:
        return (
            datetime.fromtimestamp(self._clock(), UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )


def _unexpected(response: httpx.Response, *, what: str) -> BuildkiteError:
    status = response.status_code
    detail = f"{what}: HTTP {status}: {short_body(response)}"
    return BuildkiteAuthError(detail) if status in (401, 403) else BuildkiteError(detail)
