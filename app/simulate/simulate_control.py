"""Control routes the `simulate` command adds to the fakes, for tests and benchmarks in another process.

The fake Buildkite's own `/_test/...` API (see `buildkite_control_api`) works one job at a time; a
load test needs thousands of jobs and their webhook bodies in one round trip, and a per-job count of
`finish` calls to prove no job was failed twice. The fake apiserver needs no control API for its
objects (the real Kubernetes API reads them), but a load test wants its request counters and a
compact pod summary instead of megabytes of pod JSON. On the fake Buildkite:

    POST /_test/jobs/bulk        {"count": N, "job": {add_job fields}}   → 201 {"ids": [...]}
    POST /_test/webhook-bodies   {"event": "job.scheduled", "ids": [...]} → {"bodies": ["{...}", ...]}
    GET  /_test/finish-counts    → {"<job uuid>": <finish calls>, ...} (jobs with at least one)

On the fake apiserver:

    GET  /_test/requests?verb=create&resource=pods   → {"count": n}
    GET  /_test/pods?namespace=buildkite             → {"pods": [{name, job_uuid, phase, deleting}]}
    GET  /_test/created?resource=pods                → {"created": [name, ...]} accepted creates, in order
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.simulate.buildkite_control_api import AddJobRequest, body_of, guarded
from app.simulate.webhook_payloads import job_event_body

if TYPE_CHECKING:
    from app.simulate.buildkite_server import FakeBuildkite
    from app.simulate.kube_api import FakeKubeAPI

JOB_UUID_LABEL = "buildkite.com/job-uuid"
# One request may create this many jobs: enough for a load test, small enough to answer in seconds.
MAX_BULK_JOBS = 20_000
_FINISH_PATH = re.compile(r"/jobs/([0-9a-fA-F-]{36})/finish$")


class BulkJobsRequest(BaseModel):
    """`POST /_test/jobs/bulk`: how many jobs, and the step they all come from."""

    model_config = ConfigDict(extra="forbid", strict=True)

    count: int = Field(ge=1, le=MAX_BULK_JOBS)
    job: AddJobRequest = AddJobRequest()


class WebhookBodiesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    event: str = Field(pattern=r"^job\.(scheduled|started|finished|activated)$")
    ids: list[str] = Field(max_length=MAX_BULK_JOBS)


def buildkite_routes(fake: FakeBuildkite) -> list[Route]:
    """The bulk routes for the fake Buildkite (they see the same store as its own control API)."""

    def bulk(request: Request) -> Response:
        asked = BulkJobsRequest.model_validate(body_of(request))
        fields = asked.job.model_dump(exclude_unset=True)
        if "uuid" in fields:
            raise ValueError("job.uuid cannot be given for several jobs")
        ids = [fake.add_job(**fields) for _ in range(asked.count)]
        return JSONResponse({"ids": ids}, status_code=201)

    def bodies(request: Request) -> Response:
        asked = WebhookBodiesRequest.model_validate(body_of(request))
        texts = [
            json.dumps(job_event_body(asked.event, fake.job(uuid), fake.org), separators=(",", ":"))
            for uuid in asked.ids
        ]
        return JSONResponse({"bodies": texts})

    def finish_counts(_request: Request) -> Response:
        counts: Counter[str] = Counter()
        for call in fake.calls:
            match = _FINISH_PATH.search(call.path)
            if match and call.method in {"PUT", "POST"}:
                counts[match.group(1)] += 1
        return JSONResponse(dict(counts))

    return [
        Route("/_test/jobs/bulk", guarded(bulk), methods=["POST"]),
        Route("/_test/webhook-bodies", guarded(bodies), methods=["POST"]),
        Route("/_test/finish-counts", guarded(finish_counts), methods=["GET"]),
    ]


def pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = pod.get("metadata") or {}
    return {
        "name": metadata.get("name"),
        "job_uuid": (metadata.get("labels") or {}).get(JOB_UUID_LABEL),
        "phase": (pod.get("status") or {}).get("phase"),
        "deleting": metadata.get("deletionTimestamp") is not None,
    }


def kube_routes(kube: FakeKubeAPI) -> list[Route]:
    """Counters and a pod summary for the fake apiserver; async, so they run on its event loop."""

    async def requests(request: Request) -> Response:
        verb = request.query_params.get("verb") or None
        resource = request.query_params.get("resource") or None
        return JSONResponse({"count": kube.request_count(verb, resource)})

    async def pods(request: Request) -> Response:
        namespace = request.query_params.get("namespace") or None
        objects, _ = kube.store.list("pods", namespace)
        return JSONResponse({"pods": [pod_summary(pod) for pod in objects]})

    async def created(request: Request) -> Response:
        resource = request.query_params.get("resource") or "pods"
        return JSONResponse(
            {"created": [name for kind, _, name in list(kube.store.created) if kind == resource]}
        )

    return [
        Route("/_test/requests", requests, methods=["GET"]),
        Route("/_test/pods", pods, methods=["GET"]),
        Route("/_test/created", created, methods=["GET"]),
    ]


def install(fake: FakeBuildkite, kube: FakeKubeAPI) -> None:
    """Put the routes in front of each fake's own (the apiserver's catch-all route must come last)."""
    fake.app.router.routes[:0] = buildkite_routes(fake)
    kube.http.app.router.routes[:0] = kube_routes(kube)
