"""Ops endpoints (`/healthz`, `/readyz`, `/metrics`, `POST /reconcile`), their port and their token.

Who may reach them (deploy/README.md, "Ops endpoints"):

- **A port of their own.** With ``server.ops_port`` set (deploy/ sets 9090), ``serve_split`` runs two
  uvicorn servers over the one app: the main port answers only ``PUBLIC_PATHS`` (Buildkite's webhook and
  the followers' relay, which the Ingress and the other replicas need), the ops port everything else
  (these routes, and any page added later) but never ``PUBLIC_PATHS``. The Ingress routes only the
  webhook, and deploy/'s NetworkPolicy admits the ops port only from the monitoring namespace.
- **A bearer token for writes.** ``POST /reconcile`` spends the org's shared GraphQL budget, so it needs
  ``Authorization: Bearer <server.ops_token>`` (compared in constant time; 401 otherwise). Without a
  configured token only loopback clients may call it — ``kubectl port-forward`` and local runs — never a
  pod on the network. Reads (metrics, health, status) need no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.relay import RELAY_PATH
from app.state import running_controller
from app.sweep import RECONCILE_WAIT_SECONDS
from app.webhook import PATH as WEBHOOK_PATH

log = logging.getLogger(__name__)

# Served on the main port only: Buildkite's webhook (app.webhook) and the followers' relay to the leader
# (app.relay). Everything else the app serves belongs to the ops port once there is one.
PUBLIC_PATHS = frozenset({WEBHOOK_PATH, RELAY_PATH})
# An Authorization header longer than this is refused before it is looked at.
MAX_AUTHORIZATION_BYTES = 1024
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="buildkite-controller-ops"'}


def require_ops_token(request: Request) -> None:
    """FastAPI dependency of every ops write endpoint; raises 401/403 with the reason, never logs secrets."""
    configured = running_controller(request).settings.server.ops_token
    client = request.client.host if request.client else "unknown"
    if configured is None:
        if _is_loopback(client):
            return
        log.warning(
            "ops: %s %s from %s refused: no ops token configured", request.method, request.url.path, client
        )
        raise HTTPException(
            403, "no ops token is configured (--ops-token): only loopback clients may call this endpoint"
        )
    presented = _bearer(request.headers.getlist("authorization"))
    expected = configured.get_secret_value().encode()
    # compare_digest on bytes: str arguments must be ASCII, and a hostile header need not be.
    if presented is None or not hmac.compare_digest(presented, expected):
        log.warning(
            "ops: %s %s from %s refused: missing or wrong ops token", request.method, request.url.path, client
        )
        raise HTTPException(
            401, "missing or wrong ops token (Authorization: Bearer <token>)", headers=_CHALLENGE
        )


def _bearer(values: list[str]) -> bytes | None:
    """The token of exactly one ``Authorization: Bearer <token>`` header, as the client sent its bytes."""
    if len(values) != 1:
        return None  # none, or several that could disagree
    raw = values[0].encode("latin-1")  # how Starlette decoded the header's bytes
    if len(raw) > MAX_AUTHORIZATION_BYTES:
        return None
    scheme, _, token = raw.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def router() -> APIRouter:
    routes = APIRouter()

    @routes.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        controller = running_controller(request)
        checks = controller.is_ready()
        return JSONResponse(
            {"ready": all(checks.values()), "checks": checks, "detail": controller.readiness_detail()},
            status_code=200 if all(checks.values()) else 503,
        )

    @routes.get("/metrics")
    async def metrics(request: Request) -> Response:
        controller = running_controller(request)
        controller.metrics.kube_requests.set(getattr(controller.kube, "requests", 0))
        return Response(generate_latest(controller.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @routes.post("/reconcile", dependencies=[Depends(require_ops_token)])
    async def reconcile(request: Request) -> JSONResponse:
        """Sweep now and answer with what it found (waiting briefly for the pods it asked for)."""
        summary = await running_controller(request).sweeper.sweep(
            trigger="api", wait_seconds=RECONCILE_WAIT_SECONDS
        )
        return JSONResponse(summary.as_dict(), status_code=502 if summary.error else 200)

    return routes


# --- one app, two ports --------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PathGate:
    """ASGI wrapper: requests whose path ``admits`` refuses get a 404 before the app sees them."""

    def __init__(self, app: ASGIApp, admits: Callable[[str], bool]) -> None:
        self._app = app
        self._admits = admits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._admits(scope.get("path") or "/"):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self._app(scope, receive, send)


def public_port_app(app: ASGIApp) -> PathGate:
    """The main port: exactly ``PUBLIC_PATHS``."""
    return PathGate(app, lambda path: path in PUBLIC_PATHS)


def ops_port_app(app: ASGIApp) -> PathGate:
    """The ops port: anything but ``PUBLIC_PATHS`` (nor their trailing-slash spellings)."""
    return PathGate(app, lambda path: (path.rstrip("/") or "/") not in PUBLIC_PATHS)


class _QuietServer(uvicorn.Server):
    """The ops server leaves signals to the main server, which owns the lifespan and the drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_split(app: ASGIApp, *, host: str, port: int, ops_port: int, **options: Any) -> None:
    """Serve ``app`` on ``port`` (public paths, lifespan) and ``ops_port`` (the rest) until a signal."""
    main = uvicorn.Server(uvicorn.Config(public_port_app(app), host=host, port=port, **options))
    ops = _QuietServer(
        uvicorn.Config(
            ops_port_app(app), host=host, port=ops_port, lifespan="off", proxy_headers=False, **options
        )
    )
    ops_task = asyncio.create_task(ops.serve())
    try:
        await main.serve()
    finally:
        ops.should_exit = True
        await ops_task
