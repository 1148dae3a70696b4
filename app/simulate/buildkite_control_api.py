"""The fake Buildkite's test-control API under `/_test/...`, mirroring `FakeBuildkite`'s methods.

For tests or a `simulate` command running in another process. Endpoints (JSON in and out; errors are
`{"message": ...}`):

    POST   /_test/jobs                  add_job(**body)              → 201 {"id": uuid}
    GET    /_test/jobs                  every job (state, exit status, …)
    GET    /_test/jobs/{uuid}           one job, with its log as text and its events
    POST   /_test/jobs/{uuid}/cancel    cancel()                     → {"state": ...}
    POST   /_test/jobs/{uuid}/state     set_state(body["state"])
    POST   /_test/faults                inject(**body)               → 201
    DELETE /_test/faults                clear_faults()               → 204
    POST   /_test/points                set_points(limit=, used=)
    POST   /_test/clock/advance         advance_clock(body["seconds"]) (needs a ManualClock)
    GET    /_test/calls                 the recorded calls (bodies as text)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.simulate.buildkite_clock import iso8601
from app.simulate.buildkite_jobs import FakeJob
from app.simulate.buildkite_store import JobConflict, JobNotFound

if TYPE_CHECKING:
    from app.simulate.buildkite_server import FakeBuildkite

Handler = Callable[[Request], Response]


class AddJobRequest(BaseModel):
    """The body of `POST /_test/jobs`: `FakeBuildkite.add_job`'s keyword arguments, checked."""

    model_config = ConfigDict(extra="forbid", strict=True)

    command: str = "echo hello"
    agents: dict[str, str] | None = None
    rules: list[str] | None = None
    plugins: list[dict[str, Any] | str] | None = None
    image: str | None = None
    env: dict[str, str] | None = None
    priority: int = 0
    state: str = "scheduled"
    step_key: str | None = None
    label: str | None = None
    pipeline_slug: str = "pipeline"
    build_number: int = 1
    branch: str = "main"
    clustered: bool = True
    cluster_id: str | None = None
    uuid: str | None = None


def job_summary(job: FakeJob) -> dict[str, Any]:
    return {
        "id": job.uuid,
        "state": job.state,
        "agent_query_rules": job.agent_query_rules,
        "priority": job.priority,
        "command": job.command,
        "env": job.env,
        "scheduled_at": iso8601(job.scheduled_at),
        "exit_status": job.exit_status,
        "signal_reason": job.signal_reason,
        "reserved_by": job.reserved_by,
    }


def guarded(handler: Handler) -> Handler:
    """Turn bad input and store refusals into 4xx answers with a message."""

    def endpoint(request: Request) -> Response:
        try:
            return handler(request)
        except JobNotFound as exc:
            return JSONResponse({"message": str(exc)}, status_code=404)
        except JobConflict as exc:
            return JSONResponse({"message": exc.message}, status_code=exc.status)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return JSONResponse({"message": f"Bad request: {problems}"}, status_code=422)
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"message": f"Bad request: {exc}"}, status_code=422)

    return endpoint


def body_of(request: Request) -> dict[str, Any]:
    raw: bytes = request.state.call.body
    body = json.loads(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def control_routes(fake: FakeBuildkite) -> list[Route]:
    def add_job(request: Request) -> Response:
        fields = AddJobRequest.model_validate(body_of(request)).model_dump(exclude_unset=True)
        return JSONResponse({"id": fake.add_job(**fields)}, status_code=201)

    def list_jobs(_request: Request) -> Response:
        return JSONResponse([job_summary(job) for job in fake.jobs()])

    def show_job(request: Request) -> Response:
        job = fake.job(request.path_params["uuid"])
        events = [{"type": e.type, "detail": e.detail} for e in job.events]
        log = bytes(job.log).decode("utf-8", "replace")
        return JSONResponse(job_summary(job) | {"log": log, "events": events})

    def cancel(request: Request) -> Response:
        return JSONResponse({"state": fake.cancel(request.path_params["uuid"])})

    def set_state(request: Request) -> Response:
        fake.set_state(request.path_params["uuid"], str(body_of(request)["state"]))
        return JSONResponse({"state": fake.job(request.path_params["uuid"]).state})

    def inject(request: Request) -> Response:
        fault = fake.inject(**body_of(request))
        return JSONResponse({"surface": fault.surface, "count": fault.count}, status_code=201)

    def clear_faults(_request: Request) -> Response:
        fake.clear_faults()
        return Response(status_code=204)

    def points(request: Request) -> Response:
        fake.set_points(**body_of(request))
        return JSONResponse({"remaining": fake.budget.remaining(), "limit": fake.budget.limit})

    def advance(request: Request) -> Response:
        return JSONResponse({"now": fake.advance_clock(float(body_of(request)["seconds"]))})

    def calls(_request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "method": c.method,
                    "path": c.path,
                    "query": c.query,
                    "status": c.status,
                    "body": c.body.decode("utf-8", "replace"),
                }
                for c in fake.calls
            ]
        )

    table: list[tuple[str, Handler, str]] = [
        ("/_test/jobs", add_job, "POST"),
        ("/_test/jobs", list_jobs, "GET"),
        ("/_test/jobs/{uuid}", show_job, "GET"),
        ("/_test/jobs/{uuid}/cancel", cancel, "POST"),
        ("/_test/jobs/{uuid}/state", set_state, "POST"),
        ("/_test/faults", inject, "POST"),
        ("/_test/faults", clear_faults, "DELETE"),
        ("/_test/points", points, "POST"),
        ("/_test/clock/advance", advance, "POST"),
        ("/_test/calls", calls, "GET"),
    ]
    return [Route(path, guarded(handler), methods=[method]) for path, handler, method in table]
