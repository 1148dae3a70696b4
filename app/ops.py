"""Ops endpoints: ``/healthz`` (alive), ``/readyz`` (ready), ``/metrics``, ``POST /reconcile``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.sweep import RECONCILE_WAIT_SECONDS


def router() -> APIRouter:
    routes = APIRouter()

    @routes.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        checks = request.app.state.controller.is_ready()
        return JSONResponse(
            {"ready": all(checks.values()), "checks": checks},
            status_code=200 if all(checks.values()) else 503,
        )

    @routes.get("/metrics")
    async def metrics(request: Request) -> Response:
        controller = request.app.state.controller
        controller.metrics.kube_requests.set(getattr(controller.kube, "requests", 0))
        return Response(generate_latest(controller.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @routes.post("/reconcile")
    async def reconcile(request: Request) -> JSONResponse:
        """Sweep now and answer with what it found (waiting briefly for the pods it asked for)."""
        summary = await request.app.state.controller.sweeper.sweep(
            trigger="api", wait_seconds=RECONCILE_WAIT_SECONDS
        )
        return JSONResponse(summary.as_dict(), status_code=502 if summary.error else 200)

    return routes
