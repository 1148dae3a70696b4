"""ASGI middleware of the fake Buildkite: record every request, then serve any armed fault.

It sits in front of all routes, so faults and recording behave the same on every surface. The body is
read once here and kept on the `RecordedCall` (`request.state.call`), which lets the route handlers be
plain synchronous functions that Starlette runs in its thread pool: the store's lock then decides
races between truly concurrent requests.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.simulate.buildkite_clock import Clock
from app.simulate.buildkite_faults import CallLog, Fault, FaultBook, PointsBudget, RecordedCall, surface_of

logger = logging.getLogger(__name__)


def graphql_rate_limit_message(limit: int, retry_after: int) -> str:
    """Buildkite's wording for the organisation limit (reference §2.1); clients parse the N seconds."""
    return (
        f"Your organization has exceeded the limit of {limit} complexity points. "
        f"Please try again in {retry_after} seconds."
    )


def fault_response(fault: Fault, surface: str, *, budget: PointsBudget) -> Response:
    """The HTTP answer an armed fault stands for, shaped like the real surface's error bodies."""
    if fault.errors is not None:
        return JSONResponse({"data": None, "errors": fault.errors})
    status = fault.status or 500
    retry_after = int(fault.retry_after) if fault.retry_after is not None else None
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 429:
        wait = retry_after if retry_after is not None else 1
        headers |= {
            "RateLimit-Remaining": "0",
            "RateLimit-Limit": str(budget.limit),
            "RateLimit-Reset": str(wait),
        }
        message = graphql_rate_limit_message(budget.limit, wait)
    else:
        message = f"Injected fault: HTTP {status}"
    body: dict[str, Any] = (
        {"errors": [{"message": message}]} if surface == "graphql" else {"message": message}
    )
    return JSONResponse(body, status_code=status, headers=headers)


class RecordAndFaultMiddleware:
    """Wraps the fake's Starlette app; see the module docstring."""

    def __init__(
        self, app: ASGIApp, *, calls: CallLog, faults: FaultBook, budget: PointsBudget, clock: Clock
    ) -> None:
        self.app = app
        self.calls = calls
        self.faults = faults
        self.budget = budget
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        call = RecordedCall(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
            time=self.clock.now(),
        )
        self.calls.add(call)
        scope.setdefault("state", {})["call"] = call

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
            await send(message)

        replay = _replaying(body, receive)
        surface = surface_of(call.path)
        fault = self.faults.take(surface, call.path) if surface is not None else None
        if fault is not None and fault.latency_seconds > 0:
            await anyio.sleep(fault.latency_seconds)
        if fault is not None and (fault.status is not None or fault.errors is not None):
            assert surface is not None
            await fault_response(fault, surface, budget=self.budget)(scope, replay, record_status)
            return
        try:
            await self.app(scope, replay, record_status)
        except Exception as exc:
            # A bug in the fake must read as one in the test's output, in the surface's error shape.
            logger.exception("fake Buildkite failed on %s %s", call.method, call.path)
            if call.status is not None:
                raise
            text = f"Fake Buildkite error: {type(exc).__name__}: {exc}"[:256]
            error: dict[str, Any] = (
                {"errors": [{"message": text}]} if surface == "graphql" else {"message": text}
            )
            await JSONResponse(error, status_code=500)(scope, replay, record_status)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the buffered body over once, then defers to the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
