"""The agent REST API of the fake Buildkite (`/v3/...`), as one `--acquire-job` agent uses it.

Serves reference/buildkite-api.md §5.2 and §7.1 rows 11-16: register with the agent (cluster) token to
get an access token, then acquire → start → chunks (gzip) → finish, plus ping, heartbeat, connect,
disconnect and the job-state poll. A controller that fails a job it cannot run follows the same path
with exit status "-1". Every error body is `{"message": ...}`.
"""

from __future__ import annotations

import gzip
import json
import secrets
import threading
import uuid as uuid_module
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.simulate.buildkite_clock import Clock, iso8601
from app.simulate.buildkite_jobs import FakeJob
from app.simulate.buildkite_store import JobConflict, JobNotFound, JobStore

# The agent polls GET jobs/:uuid this often (seconds); short so cancel tests stay quick (§7.1 row 11).
JOB_STATUS_INTERVAL = 1
CHUNKS_MAX_SIZE_BYTES = 1024 * 1024
LOG_MAX_SIZE_BYTES = 100 * 1024 * 1024
# Acquire of a waiting job answers 423 with this Retry-After (seconds).
LOCKED_RETRY_AFTER = 1


@dataclass
class RegisteredAgent:
    id: str
    name: str
    access_token: str
    connected: bool = False


class AgentRegistry:
    """Agents registered with an agent token, found again by their access token."""

    def __init__(self, agent_tokens: frozenset[str]) -> None:
        self.agent_tokens = agent_tokens
        self._by_token: dict[str, RegisteredAgent] = {}
        self._lock = threading.Lock()

    def register(self, name: str) -> RegisteredAgent:
        agent = RegisteredAgent(str(uuid_module.uuid4()), name, secrets.token_hex(20))
        with self._lock:
            self._by_token[agent.access_token] = agent
        return agent

    def by_access_token(self, token: str) -> RegisteredAgent | None:
        with self._lock:
            return self._by_token.get(token)


def message(text: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": text}, status_code=status, headers=headers)


def token_of(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "token" else ""


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; {} for an empty body; ValueError for anything else."""
    raw: bytes = request.state.call.body
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("Request body must be a JSON object")
    return body


def job_json(job: FakeJob, *, endpoint: str) -> dict[str, Any]:
    """The acquire response: what the agent needs to run the job (§5.2 step 4)."""
    return {
        "id": job.uuid,
        "endpoint": endpoint,
        "state": job.state,
        "env": dict(job.env),
        "step": {"key": job.step_key, "command": job.command},
        "matrix_permutation": None,
        "token": job.job_token,
        "priority": job.priority,
        "chunks_max_size_bytes": CHUNKS_MAX_SIZE_BYTES,
        "chunks_interval_seconds": 1,
        "log_max_size_bytes": LOG_MAX_SIZE_BYTES,
    }


class AgentAPI:
    """Route handlers; sync functions so Starlette runs them in its thread pool (real concurrency)."""

    def __init__(
        self, store: JobStore, registry: AgentRegistry, clock: Clock, *, cluster_id: str | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        # The cluster of the agent tokens, so of every agent that registers (None: an unclustered token).
        self.cluster_id = cluster_id

    def routes(self) -> list[Route]:
        return [
            Route("/v3/register", self.register, methods=["POST"]),
            Route("/v3/connect", self.authed(self.connect), methods=["POST"]),
            Route("/v3/disconnect", self.authed(self.disconnect), methods=["POST"]),
            Route("/v3/heartbeat", self.authed(self.heartbeat), methods=["POST"]),
            Route("/v3/ping", self.authed(self.ping), methods=["GET"]),
            Route("/v3/jobs/{uuid}/acquire", self.authed(self.acquire), methods=["PUT"]),
            Route("/v3/jobs/{uuid}/start", self.authed(self.start), methods=["PUT"]),
            Route("/v3/jobs/{uuid}/chunks", self.authed(self.chunks), methods=["POST"]),
            Route("/v3/jobs/{uuid}/header_times", self.authed(self.header_times), methods=["POST"]),
            Route("/v3/jobs/{uuid}/finish", self.authed(self.finish), methods=["PUT"]),
            Route("/v3/jobs/{uuid}", self.authed(self.job_state), methods=["GET"]),
        ]

    def authed(
        self, handler: Callable[[Request, RegisteredAgent], Response]
    ) -> Callable[[Request], Response]:
        """Wrap a handler: resolve the access token to an agent, and map store errors to statuses."""

        def endpoint(request: Request) -> Response:
            agent = self.registry.by_access_token(token_of(request))
            if agent is None:
                return message("Invalid or missing access token", 401)
            try:
                return handler(request, agent)
            except ValueError as exc:
                return message(str(exc), 400)
            except JobNotFound as exc:
                return message(str(exc), 404)
            except JobConflict as exc:
                headers = {"Retry-After": str(LOCKED_RETRY_AFTER)} if exc.status == 423 else None
                return message(exc.message, exc.status, headers)

        return endpoint

    def register(self, request: Request) -> Response:
        if token_of(request) not in self.registry.agent_tokens:
            return message("Invalid or missing agent registration token", 401)
        try:
            body = json_body(request)
        except ValueError as exc:
            return message(str(exc), 400)
        name = body.get("name")
        agent = self.registry.register(name if isinstance(name, str) and name else "fake-agent")
        return JSONResponse(
            {
                "id": agent.id,
                "name": agent.name,
                "access_token": agent.access_token,
                "endpoint": "",  # empty: keep using the URL the agent registered with
                "request_headers": {},
                "ping_interval": 1,
                "job_status_interval": JOB_STATUS_INTERVAL,
                "heartbeat_interval": 60,
                "meta_data": body.get("meta_data") if isinstance(body.get("meta_data"), list) else [],
            }
        )

    def connect(self, _request: Request, agent: RegisteredAgent) -> Response:
        agent.connected = True
        return JSONResponse({"id": agent.id, "connection_state": "connected"})

    def disconnect(self, _request: Request, agent: RegisteredAgent) -> Response:
        agent.connected = False
        return JSONResponse({"id": agent.id, "connection_state": "disconnected"})

    def heartbeat(self, request: Request, _agent: RegisteredAgent) -> Response:
        sent_at = json_body(request).get("sent_at")
        return JSONResponse({"sent_at": sent_at, "received_at": iso8601(self.clock.now())})

    def ping(self, _request: Request, _agent: RegisteredAgent) -> Response:
        # Idle: an --acquire-job agent exits after its job on anything but `pause` (§5.2 step 10).
        return JSONResponse({})

    def acquire(self, request: Request, agent: RegisteredAgent) -> Response:
        job = self.store.acquire(request.path_params["uuid"], agent_id=agent.id, cluster_id=self.cluster_id)
        return JSONResponse(job_json(job, endpoint=str(request.base_url).rstrip("/") + "/v3"))

    def start(self, request: Request, agent: RegisteredAgent) -> Response:
        job = self.store.start(request.path_params["uuid"], agent_id=agent.id)
        return JSONResponse({"id": job.uuid, "state": job.state})

    def chunks(self, request: Request, agent: RegisteredAgent) -> Response:
        raw: bytes = request.state.call.body
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as exc:
                return message(f"Chunk is not valid gzip: {exc}", 400)
        self.store.append_log(request.path_params["uuid"], agent_id=agent.id, data=raw)
        return Response(status_code=201)

    def header_times(self, request: Request, _agent: RegisteredAgent) -> Response:
        self.store.get(request.path_params["uuid"])  # 404 for an unknown job
        return Response(status_code=200)

    def job_state(self, request: Request, _agent: RegisteredAgent) -> Response:
        job = self.store.get(request.path_params["uuid"])
        return JSONResponse({"state": job.state})

    def finish(self, request: Request, agent: RegisteredAgent) -> Response:
        body = json_body(request)
        exit_status = body.get("exit_status")
        if isinstance(exit_status, bool) or not isinstance(exit_status, str | int):
            return message("`exit_status` is required and must be a string", 422)
        signal_reason = body.get("signal_reason")
        job = self.store.finish(
            request.path_params["uuid"],
            agent_id=agent.id,
            exit_status=str(exit_status),
            signal=body.get("signal") if isinstance(body.get("signal"), str) else None,
            signal_reason=signal_reason if isinstance(signal_reason, str) and signal_reason else None,
        )
        return JSONResponse({"id": job.uuid, "state": job.state})
