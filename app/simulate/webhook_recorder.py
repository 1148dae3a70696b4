"""A loopback endpoint that records the webhooks it receives: the sender's counterpart in tests.

It answers every POST with a chosen status (202 by default) and keeps the raw body and headers, so a
test can check what a `WebhookSender` put on the wire without a controller in the loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.simulate.buildkite_thread import LoopbackServer


@dataclass(frozen=True)
class ReceivedWebhook:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> str | None:
        return self.headers.get("x-buildkite-event")


class WebhookRecorder:
    """`with WebhookRecorder() as rec:` serves `rec.url`; `rec.received` lists arrivals in order."""

    def __init__(self, *, status_code: int = 202) -> None:
        self.status_code = status_code
        self._received: list[ReceivedWebhook] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/webhooks/buildkite", self._receive, methods=["POST"])])
        self._server = LoopbackServer(app, name="webhook-recorder")
        self.url = ""

    async def _receive(self, request: Request) -> Response:
        webhook = ReceivedWebhook(await request.body(), dict(request.headers))
        with self._lock:
            self._received.append(webhook)
        return Response(status_code=self.status_code)

    @property
    def received(self) -> list[ReceivedWebhook]:
        with self._lock:
            return list(self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def start(self) -> str:
        self.url = self._server.start() + "/webhooks/buildkite"
        return self.url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> WebhookRecorder:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
