"""The stacks API of the fake Buildkite (`/v3/token`, `/v3/stacks/...`), §7.1 rows 2-10.

agent-stack-k8s discovers, reserves and fails jobs through these endpoints with a cluster agent token
(reference/buildkite-api.md §3). Our controller uses GraphQL instead, but serving them lets the same fake
stand in for Buildkite when the reference controller's behaviour is compared. Errors are
`{"message": ...}`.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import uuid as uuid_module
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.simulate.buildkite_agent_api import AgentRegistry, json_body, message, token_of
from app.simulate.buildkite_clock import Clock, iso8601
from app.simulate.buildkite_jobs import FakeJob, FakeOrganization
from app.simulate.buildkite_store import JobConflict, JobNotFound, JobStore

STACK_KEY = re.compile(r"[A-Za-z0-9_-]{1,80}")
STACK_TYPES = frozenset({"kubernetes", "elastic", "custom"})
DEFAULT_QUEUE_KEYS = frozenset({"_default", "__default__"})  # docs vs stacksapi; accept both
MAX_BATCH = 1000
DEFAULT_RESERVATION_SECONDS = 900
MAX_RESERVATION_SECONDS = 3600
MAX_DETAIL_BYTES = 4096
MAX_NOTIFICATION_CHARS = 256
MAX_NOTIFICATIONS_PER_JOB = 100


class StackError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _uuid_list(body: dict[str, Any]) -> list[str]:
    uuids = body.get("job_uuids")
    if not isinstance(uuids, list) or not all(isinstance(u, str) for u in uuids):
        raise StackError(422, "`job_uuids` must be a list of strings")
    if len(uuids) > MAX_BATCH:
        raise StackError(422, f"at most {MAX_BATCH} job_uuids per request (got {len(uuids)})")
    return uuids


def _queue_matches(job: FakeJob, queue_key: str) -> bool:
    return job.queue is None if queue_key in DEFAULT_QUEUE_KEYS else job.queue == queue_key


def _cursor(job: FakeJob) -> str:
    return base64.urlsafe_b64encode(f"{job.scheduled_at or 0.0!r}:{job.seq}".encode()).decode()


def _after(cursor: str) -> tuple[float, int]:
    try:
        scheduled_at, _, seq = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        return float(scheduled_at), int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise StackError(400, f"invalid cursor {cursor!r}") from exc


class StacksAPI:
    """Route handlers; sync, run in Starlette's thread pool."""

    def __init__(self, store: JobStore, registry: AgentRegistry, clock: Clock, org: FakeOrganization) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.org = org
        self.stacks: dict[str, dict[str, Any]] = {}
        self.paused_queues: set[str] = set()
        self._lock = threading.Lock()

    def routes(self) -> list[Route]:
        prefix = "/v3/stacks/{key}"
        table = [
            ("/v3/token", self.token, "GET"),
            ("/v3/stacks/register", self.register, "POST"),
            (f"{prefix}/deregister", self.deregister, "POST"),
            (f"{prefix}/scheduled-jobs", self.scheduled_jobs, "GET"),
            (f"{prefix}/scheduled-jobs/batch-reserve", self.batch_reserve, "PUT"),
            (f"{prefix}/jobs/get-states", self.get_states, "POST"),
            (f"{prefix}/jobs/{{uuid}}/finish", self.finish, "POST"),
            (f"{prefix}/jobs/{{uuid}}", self.show_job, "GET"),
            (f"{prefix}/notifications", self.notifications, "POST"),
        ]
        return [Route(path, self._guard(handler), methods=[method]) for path, handler, method in table]

    def _guard(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            if token_of(request) not in self.registry.agent_tokens:
                return message("Invalid or missing agent token", 401)
            key = request.path_params.get("key")
            if key is not None and key not in self.stacks:
                return message(f"Stack {key!r} not found", 404)
            try:
                return handler(request)
            except StackError as exc:
                return message(exc.text, exc.status)
            except ValueError as exc:
                return message(str(exc), 400)
            except JobNotFound as exc:
                return message(str(exc), 404)
            except JobConflict as exc:
                return message(exc.message, exc.status)

        return endpoint

    def token(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "uuid": str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, "fake-agent-token")),
                "description": "fake cluster token",
                "token_type": "cluster",
                "organization_slug": self.org.slug,
                "organization_uuid": self.org.uuid,
                "cluster_uuid": self.org.cluster_uuid,
                "cluster_name": "fake",
                "organization_queue_uuid": None,
                "organization_queue_key": None,
            }
        )

    def register(self, request: Request) -> Response:
        body = json_body(request)
        key, kind, queue_key, metadata = (body.get(k) for k in ("key", "type", "queue_key", "metadata"))
        if not isinstance(key, str) or not STACK_KEY.fullmatch(key):
            raise StackError(422, "`key` must be 1-80 characters of [A-Za-z0-9_-]")
        if kind not in STACK_TYPES:
            raise StackError(422, f"`type` must be one of {sorted(STACK_TYPES)}")
        if not isinstance(queue_key, str) or not queue_key:
            raise StackError(422, "`queue_key` is required")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise StackError(422, "`metadata` must be an object of strings")
        with self._lock:
            created = key not in self.stacks
            stack = self.stacks.setdefault(key, {"id": str(uuid_module.uuid4())})
            stack |= {"key": key, "type": kind, "cluster_queue_key": queue_key, "metadata": metadata}
        reply = stack | {"organization_uuid": self.org.uuid, "state": "connected"}
        return JSONResponse(
            reply | {"last_connected_on": iso8601(self.clock.now())}, status_code=201 if created else 200
        )

    def deregister(self, request: Request) -> Response:
        with self._lock:
            self.stacks.pop(request.path_params["key"], None)
        return Response(status_code=204)

    def scheduled_jobs(self, request: Request) -> Response:
        queue_key = request.query_params.get("queue_key")
        if not queue_key:
            raise StackError(400, "`queue_key` is required")
        limit_text = request.query_params.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_BATCH:
            raise StackError(400, f"`limit` must be an integer from 1 to {MAX_BATCH}")
        # A stack lists its token's cluster only: a queue key means a queue of that cluster.
        jobs = [
            j
            for j in self.store.all()
            if j.state == "scheduled"
            and j.cluster_id == self.org.cluster_uuid
            and _queue_matches(j, queue_key)
        ]
        jobs.sort(key=lambda j: (j.scheduled_at or 0.0, j.seq))
        after = request.query_params.get("after")
        if after:
            mark = _after(after)
            jobs = [j for j in jobs if (j.scheduled_at or 0.0, j.seq) > mark]
        page, more = jobs[: int(limit_text)], len(jobs) > int(limit_text)
        paused = queue_key in self.paused_queues
        return JSONResponse(
            {
                "jobs": [self._listed(job) for job in page],
                "page_info": {"has_next_page": more, "end_cursor": _cursor(page[-1]) if page else None},
                # Docs say `dispatch_paused`, stacksapi decodes `paused`: send both (reference §3.2 L).
                "cluster_queue": {"id": queue_key, "dispatch_paused": paused, "paused": paused},
            }
        )

    def _listed(self, job: FakeJob) -> dict[str, Any]:
        return {
            "id": job.uuid,
            "priority": job.priority,
            "agent_query_rules": job.agent_query_rules,
            "scheduled_at": iso8601(job.scheduled_at),
            "runnable_at": iso8601(job.scheduled_at),
            "pipeline": {"slug": job.pipeline_slug, "uuid": job.pipeline_uuid},
            "build": {"uuid": job.build_uuid, "number": job.build_number, "branch": job.branch},
            "step": {"key": job.step_key},
        }

    def batch_reserve(self, request: Request) -> Response:
        body = json_body(request)
        expiry = body.get("reservation_expiry_seconds", DEFAULT_RESERVATION_SECONDS)
        if isinstance(expiry, bool) or not isinstance(expiry, int) or expiry < 1:
            raise StackError(422, "`reservation_expiry_seconds` must be a positive integer")
        key, until = request.path_params["key"], self.clock.now() + min(expiry, MAX_RESERVATION_SECONDS)
        reserved: list[str] = []
        not_reserved: list[str] = []
        for job_uuid in _uuid_list(body):
            ok = self._reserve(job_uuid, key, until)
            (reserved if ok else not_reserved).append(job_uuid)
        return JSONResponse({"reserved": reserved, "not_reserved": not_reserved})

    def _reserve(self, job_uuid: str, key: str, until: float) -> bool:
        won = False

        def change(job: FakeJob) -> str | None:
            nonlocal won
            if job.state == "scheduled" or (job.state == "reserved" and job.reserved_by == key):
                job.reserved_by, job.reserved_until, won = key, until, True
                return "reserved"
            return None

        try:
            self.store.transition(job_uuid, change)
        except JobNotFound:
            return False
        return won

    def show_job(self, request: Request) -> Response:
        job = self.store.get(request.path_params["uuid"])
        return JSONResponse({"id": job.uuid, "env": job.env, "command": job.command})

    def get_states(self, request: Request) -> Response:
        wanted = set(_uuid_list(json_body(request)))
        return JSONResponse({"states": {j.uuid: j.state for j in self.store.all() if j.uuid in wanted}})

    def finish(self, request: Request) -> Response:
        body, key = json_body(request), request.path_params["key"]
        detail = body.get("detail")
        if not isinstance(detail, str) or len(detail.encode()) > MAX_DETAIL_BYTES:
            raise StackError(422, f"`detail` is required and at most {MAX_DETAIL_BYTES} bytes")
        exit_status = body.get("exit_status", -1)
        reason = body.get("signal_reason") or "stack_error"

        def change(job: FakeJob) -> str:
            if not (job.state == "scheduled" or (job.state == "reserved" and job.reserved_by == key)):
                raise JobConflict(422, f"Job is {job.state} and can't be finished by stack {key}")
            job.exit_status, job.signal_reason = str(exit_status), str(reason)
            return "finished"

        job_uuid = request.path_params["uuid"]
        self.store.transition(job_uuid, change)
        self.store.add_event(job_uuid, "STACK_ERRORED", detail=detail)
        return JSONResponse({})

    def notifications(self, request: Request) -> Response:
        items = json_body(request).get("notifications")
        if not isinstance(items, list) or len(items) > MAX_BATCH:
            raise StackError(422, f"`notifications` must be a list of at most {MAX_BATCH}")
        errors: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            problem = self._notify(item)
            if problem is not None:
                errors.setdefault(problem, []).append(index)
        return JSONResponse({"errors": [{"error": e, "indexes": i} for e, i in errors.items()]})

    def _notify(self, item: Any) -> str | None:
        if not isinstance(item, dict) or not isinstance(item.get("job_uuid"), str):
            return "job_uuid is required"
        detail = item.get("detail")
        if not isinstance(detail, str) or not 1 <= len(detail) <= MAX_NOTIFICATION_CHARS:
            return f"detail must be 1-{MAX_NOTIFICATION_CHARS} characters"
        job = self.store.find(item["job_uuid"])
        if job is None:
            return "job not found"
        if sum(e.type == "STACK_NOTIFICATION" for e in job.events) >= MAX_NOTIFICATIONS_PER_JOB:
            return f"at most {MAX_NOTIFICATIONS_PER_JOB} notifications per job"
        self.store.add_event(job.uuid, "STACK_NOTIFICATION", detail=detail)
        return None
