"""WebhookSender: Buildkite's signature, body shape and delivery faults, over real loopback HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import anyio
import httpx
import pytest

from app.simulate.buildkite_clock import ManualClock
from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.webhook_recorder import WebhookRecorder
from app.simulate.webhook_sender import DeliveryModes, WebhookSender, sign

pytest_plugins = ["app.simulate.buildkite_fixtures"]

SECRET = "fake-webhook-secret"  # the secret the `webhook_sender` fixture signs with
# go-buildkite's webhook_test.go vector: token and timestamp (its exact ping body is not in our notes).
GO_BUILDKITE_TOKEN = "29b1ff5779c76bd48ba6705eb99ff970"
GO_BUILDKITE_TIMESTAMP = 1642080837


def split_signature(header: str) -> tuple[int, str]:
    parts = dict(part.strip().split("=", 1) for part in header.split(","))
    return int(parts["timestamp"]), parts["signature"]


def verify(secret: str, header: str, body: bytes) -> bool:
    timestamp, signature = split_signature(header)
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def test_sign_is_hmac_sha256_of_timestamp_dot_body_like_go_buildkites_vector() -> None:
    body = b'{"event":"ping","service":{"id":"c9f8372d","provider":"webhook"}}'
    header = sign(GO_BUILDKITE_TOKEN, GO_BUILDKITE_TIMESTAMP, body)

    independent = hmac.new(
        GO_BUILDKITE_TOKEN.encode(), b"1642080837." + body, digestmod=hashlib.sha256
    ).hexdigest()
    assert header == f"timestamp=1642080837,signature={independent}"


def test_sign_does_not_sign_the_body_alone() -> None:
    body = b'{"event":"ping"}'
    body_only = hmac.new(GO_BUILDKITE_TOKEN.encode(), body, hashlib.sha256).hexdigest()

    _, signature = split_signature(sign(GO_BUILDKITE_TOKEN, GO_BUILDKITE_TIMESTAMP, body))

    assert signature != body_only
    assert len(signature) == 64 and signature == signature.lower()


def test_sign_accepts_bytes_secret_and_changes_with_every_input() -> None:
    base = sign(b"k", 1, b"x")
    assert base == sign("k", 1, b"x")
    assert len({base, sign("k2", 1, b"x"), sign("k", 2, b"x"), sign("k", 1, b"y")}) == 4


def test_sender_posts_a_verifiable_signature_with_the_dispatch_time(
    webhook_sender: WebhookSender, webhook_recorder: WebhookRecorder
) -> None:
    before = int(time.time())
    [delivery] = webhook_sender.ping()

    [received] = webhook_recorder.received
    assert delivery.status == 202
    assert received.event == "ping"
    assert received.headers["content-type"] == "application/json"
    assert verify(SECRET, received.headers["x-buildkite-signature"], received.body)
    timestamp, _ = split_signature(received.headers["x-buildkite-signature"])
    assert before <= timestamp <= int(time.time())
    assert json.loads(received.body)["event"] == "ping"


def test_token_mode_sends_the_token_in_clear_and_no_signature(webhook_recorder: WebhookRecorder) -> None:
    with httpx.Client() as http:
        sender = WebhookSender(webhook_recorder.url, http=http, token="tok")
        sender.ping()

    [received] = webhook_recorder.received
    assert received.headers["x-buildkite-token"] == "tok"
    assert "x-buildkite-signature" not in received.headers


def test_secret_and_token_together_are_refused() -> None:
    with httpx.Client() as http, pytest.raises(ValueError, match="not both"):
        WebhookSender("http://127.0.0.1:9/", http=http, secret="a", token="b")


@pytest.mark.parametrize(
    "modes",
    [
        {"drop_probability": 1.5},
        {"duplicate_probability": -0.1},
        {"reorder_window": 0},
        {"delay_seconds": -1},
        {"stale_seconds": -5},
    ],
    ids=["drop-above-one", "negative-duplicate", "zero-window", "negative-delay", "negative-stale"],
)
def test_impossible_delivery_modes_are_refused(modes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DeliveryModes(**modes)  # type: ignore[arg-type]


def test_job_event_body_is_a_rest_job_with_rest_state_and_no_plugins(
    webhook_recorder: WebhookRecorder, fake_buildkite: FakeBuildkite
) -> None:
    bk = fake_buildkite
    with httpx.Client() as http:
        bk.sender = WebhookSender(webhook_recorder.url, http=http, secret=SECRET, org=bk.org)
        uuid = bk.add_job(plugins=[{"kubernetes": {"podSpec": {}}}], priority=7, step_key="build")

    [received] = webhook_recorder.received
    body = json.loads(received.body)
    assert received.event == "job.scheduled"
    assert set(body) == {"event", "job", "build", "pipeline", "sender"}
    job = body["job"]
    assert job["id"] == uuid and job["type"] == "script" and job["state"] == "scheduled"
    assert job["agent_query_rules"] == ["queue=kubernetes"]
    assert job["priority"] == {"number": 7} and job["step_key"] == "build"
    assert "plugins" not in received.body.decode().lower()
    assert job["web_url"].startswith("https://buildkite.com/acme/pipeline/builds/1")
    assert "jobs" not in body["build"]


def test_fake_emits_scheduled_started_and_finished_webhooks_on_transitions(
    webhook_recorder: WebhookRecorder, fake_buildkite: FakeBuildkite
) -> None:
    bk = fake_buildkite
    with httpx.Client() as http:
        bk.sender = WebhookSender(webhook_recorder.url, http=http, secret=SECRET)
        first, second = bk.add_job(), bk.add_job()
        bk.cancel(first)
        bk.set_state(second, "running")
        bk.set_state(second, "finished")

    seen = [
        (r.event, json.loads(r.body)["job"]["id"], json.loads(r.body)["job"]["state"])
        for r in webhook_recorder.received
    ]
    assert seen == [
        ("job.scheduled", first, "scheduled"),
        ("job.scheduled", second, "scheduled"),
        ("job.finished", first, "canceled"),
        ("job.started", second, "running"),
        ("job.finished", second, "failed"),
    ]


def test_drop_probability_one_loses_every_webhook_and_says_so(webhook_recorder: WebhookRecorder) -> None:
    with httpx.Client() as http:
        sender = WebhookSender(webhook_recorder.url, http=http, modes=DeliveryModes(drop_probability=1.0))
        assert sender.ping() == []

    assert webhook_recorder.received == []
    assert [d.dropped for d in sender.deliveries] == [True]


def test_seeded_loss_is_partial_and_repeatable(webhook_recorder: WebhookRecorder) -> None:
    def delivered(seed: int) -> list[int]:
        with httpx.Client() as http:
            sender = WebhookSender(
                webhook_recorder.url, http=http, modes=DeliveryModes(drop_probability=0.5, seed=seed)
            )
            return [i for i in range(20) if sender.send("ping", str(i).encode())]

    assert delivered(3) == delivered(3)
    assert 0 < len(delivered(3)) < 20


def test_duplication_delivers_the_same_body_twice(webhook_recorder: WebhookRecorder) -> None:
    with httpx.Client() as http:
        sender = WebhookSender(
            webhook_recorder.url, http=http, modes=DeliveryModes(duplicate_probability=1.0)
        )
        sender.send("job.scheduled", b'{"n":1}')

    assert [r.body for r in webhook_recorder.received] == [b'{"n":1}', b'{"n":1}']


def test_reorder_window_holds_events_then_delivers_them_newest_first(
    webhook_recorder: WebhookRecorder,
) -> None:
    with httpx.Client() as http:
        sender = WebhookSender(webhook_recorder.url, http=http, modes=DeliveryModes(reorder_window=3))
        assert sender.send("e", b"1") == [] and sender.send("e", b"2") == []
        sender.send("e", b"3")
        sender.send("e", b"4")
        sender.flush()

    assert [r.body for r in webhook_recorder.received] == [b"3", b"2", b"1", b"4"]


def test_delay_holds_each_delivery_back(webhook_recorder: WebhookRecorder) -> None:
    with httpx.Client() as http:
        sender = WebhookSender(webhook_recorder.url, http=http, modes=DeliveryModes(delay_seconds=0.2))
        started = time.monotonic()
        sender.ping()

    assert time.monotonic() - started >= 0.2
    assert len(webhook_recorder.received) == 1


def test_stale_mode_signs_correctly_with_an_old_timestamp(webhook_recorder: WebhookRecorder) -> None:
    clock = ManualClock(start=2_000_000_000)
    with httpx.Client() as http:
        modes = DeliveryModes(stale_seconds=600)
        WebhookSender(webhook_recorder.url, http=http, secret=SECRET, modes=modes, clock=clock).ping()

    [received] = webhook_recorder.received
    header = received.headers["x-buildkite-signature"]
    assert split_signature(header)[0] == 2_000_000_000 - 600
    assert verify(SECRET, header, received.body)


def test_bad_signature_mode_fails_verification(webhook_recorder: WebhookRecorder) -> None:
    with httpx.Client() as http:
        modes = DeliveryModes(bad_signature=True)
        WebhookSender(webhook_recorder.url, http=http, secret=SECRET, modes=modes).ping()

    [received] = webhook_recorder.received
    assert not verify(SECRET, received.headers["x-buildkite-signature"], received.body)


def test_an_unreachable_receiver_is_recorded_not_raised() -> None:
    with WebhookRecorder() as gone:
        url = gone.url
    with httpx.Client(timeout=1.0) as http:
        [delivery] = WebhookSender(url, http=http, secret=SECRET).ping()

    assert delivery.status is None and delivery.error is not None


def test_async_sender_delivers_and_fake_queues_its_webhooks_until_flushed(
    webhook_recorder: WebhookRecorder, fake_buildkite: FakeBuildkite
) -> None:
    async def scenario() -> list[str | None]:
        async with httpx.AsyncClient() as http:
            sender = WebhookSender(webhook_recorder.url, http=http, secret=SECRET)
            with pytest.raises(TypeError, match="asend"):
                sender.ping()
            fake_buildkite.sender = sender
            uuid = fake_buildkite.add_job()
            fake_buildkite.cancel(uuid)
            assert webhook_recorder.received == []
            await fake_buildkite.flush_webhooks()
            await sender.aping()
        return [r.event for r in webhook_recorder.received]

    assert anyio.run(scenario) == ["job.scheduled", "job.finished", "ping"]
