"""Relay: a follower posts its job UUIDs to the leader's ``POST /internal/jobs``, signed with the shared
webhook secret; the leader takes a good batch into its intake and refuses everything else with a 4xx.

The real ``Relay`` posts through ``httpx.ASGITransport`` to a tiny app with the real route and a real
``RelayReceiver``, so what one side signs the other side verifies. Failures of the network or of the
leader are ``httpx.MockTransport`` handlers. Both sides read injected clocks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.buildkite.signature import sign
from app.intake import Retry
from app.jobs import JobBook, Stage
from app.metrics import Metrics
from app.relay import (
    MAX_BODY_BYTES,
    MAX_JOBS,
    NO_LEADER_POLL_SECONDS,
    RELAY_PATH,
    Relay,
    RelayReceiver,
    router,
)

KEY = "relay-shared-secret"
NOW = 1_750_000_000.0
SKEW = 300
LEADER = "http://leader.test:8080"


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


A, B, C = uuid(1), uuid(2), uuid(3)


class Leader:
    """The leader's side: the real route and receiver over recorders of submit and cancel."""

    def __init__(self, *, key: str | None = KEY, allow_unsigned: bool = False, now: float = NOW) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.is_leader = True
        self.receiver = RelayReceiver(
            key=key,
            allow_unsigned=allow_unsigned,
            submit=self._submit,
            cancel=self.cancelled.append,
            is_leader=lambda: self.is_leader,
            max_skew_seconds=SKEW,
            clock=lambda: now,
        )
        self.app = FastAPI()
        self.app.include_router(router())
        self.app.state.controller = SimpleNamespace(relay_receiver=self.receiver)

    def _submit(self, key: str) -> bool:
        new = key not in self.submitted
        self.submitted.append(key)
        return new

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=LEADER)


class Follower:
    """The follower's side: a book with the jobs it received, and the real ``Relay``."""

    def __init__(
        self, http: httpx.AsyncClient, *, leader_url: str | None = LEADER, key: str | None = KEY
    ) -> None:
        self.book = JobBook(replica="follower")
        self.metrics = Metrics()
        self.relay = Relay(
            http=http,
            leader_url=lambda: leader_url,
            key=key,
            book=self.book,
            metrics=self.metrics,
            clock=lambda: NOW,
        )

    def received(self, *keys: str) -> None:
        for key in keys:
            assert self.book.sighted(key, source="webhook")

    def stage(self, key: str) -> Stage | None:
        record = self.book.get(key)
        return None if record is None else record.stage

    def batches(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "buildkite_controller_relay_batches_total", {"result": result}
        )
        return value or 0.0


def run(body: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), timeout=20))


# --- the follower's forward, end to end -------------------------------------------------------------------


def test_forward_signs_the_batch_so_the_leaders_verify_accepts_it_and_hands_the_jobs_over() -> None:
    leader = Leader()

    async def body() -> None:
        async with leader.client() as http:
            follower = Follower(http)
            follower.received(A, B)
            assert await follower.relay.forward([A, B]) is None
            assert leader.submitted == [A, B]
            assert follower.stage(A) is follower.stage(B) is Stage.HANDED_OVER
            assert follower.book.sizes()["active"] == 0
            assert follower.batches("delivered") == 1

    run(body)


def test_forward_hands_over_only_jobs_still_waiting_here() -> None:
    leader = Leader()

    async def body() -> None:
        async with leader.client() as http:
            follower = Follower(http)
            follower.received(A, B)
            follower.book.pod_seen(B, phase="Pending", deleted=False)  # the leader's pod is already seen
            assert await follower.relay.forward([A, B]) is None
            assert follower.stage(A) is Stage.HANDED_OVER and follower.stage(B) is Stage.CREATED

    run(body)


def test_forward_cancel_reaches_the_leaders_cancel() -> None:
    leader = Leader()

    async def body() -> None:
        async with leader.client() as http:
            assert await Follower(http).relay.forward_cancel(A.upper()) is True
        assert leader.cancelled == [A] and leader.submitted == []

    run(body)


def test_a_follower_with_another_key_is_refused_and_told_to_retry() -> None:
    leader = Leader()

    async def body() -> None:
        async with leader.client() as http:
            follower = Follower(http, key="not-the-shared-secret")
            follower.received(A)
            retry = await follower.relay.forward([A])
            assert isinstance(retry, Retry) and retry.uuids == [A] and "401" in retry.reason
            assert follower.stage(A) is Stage.SEEN and leader.submitted == []
            assert follower.batches("401") == 1

    run(body)


# --- the follower's forward when the leader cannot take the batch -------------------------------------------


class Network:
    """A ``MockTransport`` handler: answers ``status`` or raises ``error``; records each request."""

    def __init__(self, *, status: int = 202, error: Exception | None = None) -> None:
        self.status = status
        self.error = error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, json={})


def forward_over(network: Network, *, leader_url: str | None = LEADER) -> tuple[Retry | None, Follower]:
    async def body() -> tuple[Retry | None, Follower]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(network)) as http:
            follower = Follower(http, leader_url=leader_url)
            follower.received(A, B)
            return await follower.relay.forward([A, B]), follower

    result: tuple[Retry | None, Follower] = run(body)
    return result


def test_forward_retries_when_no_leader_is_known_and_sends_nothing() -> None:
    network = Network()
    retry, follower = forward_over(network, leader_url=None)
    # An election under way is no failure to back off from: offered again shortly, without escalating.
    assert isinstance(retry, Retry) and retry.uuids == [A, B] and retry.after == NO_LEADER_POLL_SECONDS
    assert not retry.escalate
    assert "no leader" in retry.reason and network.requests == []
    assert follower.stage(A) is follower.stage(B) is Stage.SEEN


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(httpx.ConnectError("connection refused"), id="refused"),
        pytest.param(httpx.ReadTimeout("timed out"), id="timeout"),
        pytest.param(httpx.RemoteProtocolError("server disconnected"), id="disconnected"),
    ],
)
def test_forward_retries_when_the_leader_is_unreachable(error: httpx.HTTPError) -> None:
    network = Network(error=error)
    retry, follower = forward_over(network)
    assert isinstance(retry, Retry) and retry.uuids == [A, B] and "unreachable" in retry.reason
    assert len(network.requests) == 1 and follower.batches("unreachable") == 1
    assert follower.stage(A) is follower.stage(B) is Stage.SEEN


@pytest.mark.parametrize("status", [200, 400, 401, 409, 413, 500, 503])
def test_forward_retries_on_any_answer_but_202(status: int) -> None:
    network = Network(status=status)
    retry, follower = forward_over(network)
    assert isinstance(retry, Retry) and retry.uuids == [A, B] and str(status) in retry.reason
    assert follower.stage(A) is follower.stage(B) is Stage.SEEN
    assert follower.batches(str(status)) == 1


def test_forward_posts_a_signed_json_batch_to_the_leaders_relay_path() -> None:
    network = Network()
    retry, follower = forward_over(network)
    assert retry is None and follower.stage(A) is Stage.HANDED_OVER
    [request] = network.requests
    assert str(request.url) == LEADER + RELAY_PATH
    assert json.loads(request.content) == {"jobs": [A, B]}
    assert request.headers["x-buildkite-signature"] == sign(request.content, secret=KEY, timestamp=int(NOW))


# --- the leader's receiver against hostile or broken requests ----------------------------------------------


def signed(body: bytes, *, key: str = KEY, at: float = NOW) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-buildkite-signature": sign(body, secret=key, timestamp=int(at)),
    }


def post(leader: Leader, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async def send() -> httpx.Response:
        async with leader.client() as http:
            return await http.post(RELAY_PATH, content=body, headers=headers)

    response: httpx.Response = run(send)
    return response


def jobs_body(*keys: str) -> bytes:
    return json.dumps({"jobs": list(keys)}).encode()


GOOD = jobs_body(A, B)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "X-Buildkite-Signature", id="missing-signature"),
        pytest.param(signed(GOOD, key="another-secret"), "does not match", id="wrong-key"),
        pytest.param(signed(jobs_body(A)), "does not match", id="signature-of-another-body"),
        pytest.param({"x-buildkite-signature": "timestamp=1,signature=zz"}, "64 hex", id="garbled"),
        pytest.param({"x-buildkite-token": KEY}, "signature mode", id="token-instead-of-signature"),
        pytest.param(signed(GOOD, at=NOW - SKEW - 1), "old", id="stale-timestamp"),
        pytest.param(signed(GOOD, at=NOW + SKEW + 1), "future", id="future-timestamp"),
    ],
)
def test_the_receiver_refuses_a_request_it_cannot_verify_with_401(
    headers: dict[str, str], reason: str
) -> None:
    leader = Leader()
    response = post(leader, GOOD, headers)
    assert response.status_code == 401
    assert reason in response.json()["error"]
    assert leader.submitted == [] and leader.cancelled == []


def test_the_receiver_refuses_unsigned_requests_when_no_key_is_configured() -> None:
    leader = Leader(key=None, allow_unsigned=False)
    assert post(leader, GOOD, {}).status_code == 401
    assert leader.submitted == []


def test_without_a_key_unsigned_requests_are_taken_only_when_explicitly_allowed() -> None:
    leader = Leader(key=None, allow_unsigned=True)
    assert post(leader, GOOD, {}).status_code == 202
    assert leader.submitted == [A, B]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b"[" * 20_000 + b"]" * 20_000, id="deeply-nested"),
        pytest.param(b'["' + A.encode() + b'"]', id="a-list"),
        pytest.param(b'"jobs"', id="a-string"),
        pytest.param(json.dumps({"jobs": A}).encode(), id="jobs-not-a-list"),
        pytest.param(json.dumps({"jobs": [1, 2]}).encode(), id="jobs-not-strings"),
        pytest.param(json.dumps({"jobs": None}).encode(), id="jobs-null"),
        pytest.param(json.dumps({"cancelled": {"a": A}}).encode(), id="cancelled-not-a-list"),
        pytest.param(json.dumps({"jobs": [A], "run": "rm -rf /"}).encode(), id="unknown-key"),
        pytest.param(jobs_body(A, "not-a-uuid"), id="a-non-uuid"),
        pytest.param(jobs_body("../../etc/passwd"), id="path"),
        pytest.param(json.dumps({"cancelled": ["'; drop table jobs; --"]}).encode(), id="non-uuid-cancel"),
    ],
)
def test_the_receiver_refuses_a_malformed_body_with_400_and_takes_nothing(body: bytes) -> None:
    leader = Leader()
    response = post(leader, body, signed(body))
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    assert leader.submitted == [] and leader.cancelled == []


def test_the_receiver_refuses_more_than_max_jobs_with_413() -> None:
    leader = Leader()
    body = jobs_body(*(uuid(n) for n in range(MAX_JOBS + 1)))
    assert len(body) < MAX_BODY_BYTES  # refused for the count, not the size
    response = post(leader, body, signed(body))
    assert response.status_code == 413 and str(MAX_JOBS) in response.json()["error"]
    assert leader.submitted == []


def test_the_receiver_counts_cancelled_toward_max_jobs() -> None:
    leader = Leader()
    half = MAX_JOBS // 2 + 1
    body = json.dumps(
        {"jobs": [uuid(n) for n in range(half)], "cancelled": [uuid(n) for n in range(half, 2 * half)]}
    ).encode()
    assert post(leader, body, signed(body)).status_code == 413
    assert leader.submitted == [] and leader.cancelled == []


def test_the_receiver_refuses_a_body_over_the_size_limit_with_413_before_parsing_it() -> None:
    leader = Leader()
    body = json.dumps({"jobs": [A], "padding": "x" * MAX_BODY_BYTES}).encode()
    response = post(leader, body, signed(body))
    assert response.status_code == 413 and "bytes" in response.json()["error"]


def test_a_follower_that_is_not_the_leader_answers_409_and_takes_nothing() -> None:
    leader = Leader()
    leader.is_leader = False
    body = json.dumps({"jobs": [A], "cancelled": [B]}).encode()
    response = post(leader, body, signed(body))
    assert response.status_code == 409
    assert leader.submitted == [] and leader.cancelled == []


def test_a_good_batch_is_taken_with_202_and_each_uuid_submitted_once() -> None:
    leader = Leader()
    body = json.dumps({"jobs": [A.upper(), B, A], "cancelled": [f" {C} "]}).encode()
    response = post(leader, body, signed(body))
    assert response.status_code == 202
    assert leader.submitted == [A, B, A]  # once per UUID sent; the intake says which were new
    assert response.json() == {"accepted": 2, "duplicates": 1}
    assert leader.cancelled == [C]


def test_an_empty_batch_is_taken_and_does_nothing() -> None:
    leader = Leader()
    body = b"{}"
    response = post(leader, body, signed(body))
    assert response.status_code == 202 and response.json() == {"accepted": 0, "duplicates": 0}
