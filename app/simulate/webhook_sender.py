"""Sends Buildkite-shaped webhooks to a receiver, with the delivery faults real webhooks show.

Signing follows Buildkite exactly (reference/buildkite-api.md §1.3): `X-Buildkite-Signature:
timestamp=T,signature=hex(HMAC_SHA256(secret, f"{T}." + raw_body))`, T being the dispatch time; or the
plain `X-Buildkite-Token` mode. `DeliveryModes` adds loss (seeded RNG), duplication, reordering, delay,
stale timestamps and bad signatures, because Buildkite promises none of ordering, exactly-once or
timeliness (§1.5). Bodies come from `webhook_payloads`; the HTTP client is the caller's (sync or async).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from app.simulate.buildkite_clock import Clock, SystemClock
from app.simulate.buildkite_jobs import FakeJob, FakeOrganization
from app.simulate.webhook_payloads import job_event_body, ping_body


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The `X-Buildkite-Signature` header value for `body` sent at `timestamp` (Unix seconds)."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"timestamp={timestamp},signature={digest}"


@dataclass(frozen=True)
class DeliveryModes:
    """How deliveries misbehave. The defaults deliver every event once, in order, at once."""

    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    reorder_window: int = 1  # hold this many events, then deliver them newest first
    delay_seconds: float = 0.0
    stale_seconds: int = 0  # sign with a timestamp this far in the past (replay tests)
    bad_signature: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop_probability", "duplicate_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1] (got {getattr(self, name)})")
        if self.reorder_window < 1:
            raise ValueError(f"reorder_window must be at least 1 (got {self.reorder_window})")
        if self.delay_seconds < 0 or self.stale_seconds < 0:
            raise ValueError("delay_seconds and stale_seconds cannot be negative")


@dataclass
class Delivery:
    """One attempt: what was (or would have been) sent and how the receiver answered."""

    event: str
    body: bytes
    headers: dict[str, str]
    status: int | None = None
    dropped: bool = False
    error: str | None = None


class WebhookSender:
    """Posts webhook events to `url` through the given httpx client (sync `send`, async `asend`)."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx.Client | httpx.AsyncClient,
        secret: str | None = None,
        token: str | None = None,
        modes: DeliveryModes | None = None,
        clock: Clock | None = None,
        org: FakeOrganization | None = None,
    ) -> None:
        if secret is not None and token is not None:
            raise ValueError("Buildkite sends either a signature (secret) or a token, not both")
        self.url = url
        self.http = http
        self.secret = secret
        self.token = token
        self.modes = modes or DeliveryModes()
        self.clock = clock or SystemClock()
        self.org = org or FakeOrganization()
        self.deliveries: list[Delivery] = []
        self._held: list[tuple[str, bytes]] = []
        self._rng = random.Random(self.modes.seed)
        self._lock = threading.Lock()

    @property
    def is_async(self) -> bool:
        return isinstance(self.http, httpx.AsyncClient)

    # -- bodies -----------------------------------------------------------------------------------

    def encode(self, payload: dict[str, Any]) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

    def job_body(self, event: str, job: FakeJob) -> bytes:
        return self.encode(job_event_body(event, job, self.org))

    def ping_body(self) -> bytes:
        return self.encode(ping_body(self.org, url=self.url))

    # -- the fault pipeline (pure bookkeeping; no I/O) -------------------------------------------

    def _plan(self, event: str, body: bytes) -> list[tuple[str, bytes]]:
        """Which (event, body) pairs to dispatch now, after loss, duplication and reordering."""
        with self._lock:
            if self._rng.random() < self.modes.drop_probability:
                self.deliveries.append(Delivery(event, body, {}, dropped=True))
                return []
            copies = 2 if self._rng.random() < self.modes.duplicate_probability else 1
            self._held.extend([(event, body)] * copies)
            if len(self._held) < self.modes.reorder_window:
                return []
            return self._release()

    def _release(self) -> list[tuple[str, bytes]]:
        released = list(reversed(self._held)) if self.modes.reorder_window > 1 else list(self._held)
        self._held.clear()
        return released

    def headers(self, event: str, body: bytes) -> dict[str, str]:
        """Headers for a dispatch happening now (the signed timestamp is the dispatch time)."""
        headers = {"Content-Type": "application/json", "X-Buildkite-Event": event}
        if self.secret is not None:
            timestamp = int(self.clock.now()) - self.modes.stale_seconds
            key = self.secret + "-wrong" if self.modes.bad_signature else self.secret
            headers["X-Buildkite-Signature"] = sign(key, timestamp, body)
        elif self.token is not None:
            headers["X-Buildkite-Token"] = self.token + "-wrong" if self.modes.bad_signature else self.token
        return headers

    # -- sync delivery ----------------------------------------------------------------------------

    def send(self, event: str, body: bytes) -> list[Delivery]:
        """Deliver one event through the modes; returns the attempts made now (maybe none)."""
        return [self._post(e, b) for e, b in self._plan(event, body)]

    def send_job_event(self, event: str, job: FakeJob) -> list[Delivery]:
        return self.send(event, self.job_body(event, job))

    def ping(self) -> list[Delivery]:
        return self.send("ping", self.ping_body())

    def flush(self) -> list[Delivery]:
        """Deliver whatever the reorder window still holds."""
        with self._lock:
            released = self._release()
        return [self._post(e, b) for e, b in released]

    def _post(self, event: str, body: bytes) -> Delivery:
        if not isinstance(self.http, httpx.Client):
            raise TypeError("send() needs an httpx.Client; use asend() with an httpx.AsyncClient")
        if self.modes.delay_seconds:
            time.sleep(self.modes.delay_seconds)  # the simulated network delay itself
        delivery = Delivery(event, body, self.headers(event, body))
        try:
            response = self.http.post(self.url, content=body, headers=delivery.headers)
            delivery.status = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"  # Buildkite gives up too (best effort)
        return self._record(delivery)

    def _record(self, delivery: Delivery) -> Delivery:
        with self._lock:
            self.deliveries.append(delivery)
        return delivery

    # -- async delivery ---------------------------------------------------------------------------

    async def asend(self, event: str, body: bytes) -> list[Delivery]:
        return [await self._apost(e, b) for e, b in self._plan(event, body)]

    async def asend_job_event(self, event: str, job: FakeJob) -> list[Delivery]:
        return await self.asend(event, self.job_body(event, job))

    async def aping(self) -> list[Delivery]:
        return await self.asend("ping", self.ping_body())

    async def aflush(self) -> list[Delivery]:
        with self._lock:
            released = self._release()
        return [await self._apost(e, b) for e, b in released]

    async def _apost(self, event: str, body: bytes) -> Delivery:
        if not isinstance(self.http, httpx.AsyncClient):
            raise TypeError("asend() needs an httpx.AsyncClient; use send() with an httpx.Client")
        if self.modes.delay_seconds:
            await anyio.sleep(self.modes.delay_seconds)
        delivery = Delivery(event, body, self.headers(event, body))
        try:
            response = await self.http.post(self.url, content=body, headers=delivery.headers)
            delivery.status = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        return self._record(delivery)
