"""The production gateway ``app.kube.KubeAPI`` over the official async client, against the fake apiserver.

Each test starts its own ``FakeKubeAPI`` (port 0) and runs one async scenario with ``asyncio.run``; the
gateway is closed in ``finally`` so aiohttp never warns about an unclosed session.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes.aio import client as kclient

from app.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    KubeUnavailable,
    NotFound,
    WatchExpired,
)
from app.kube import KubeAPI, TokenBucket, _translate
from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kube_client import kube_client_config
from app.simulate.pytest_plugin import make_pod
from tests.app.kube_fixtures import gateway

NS = "buildkite"
SELECTOR = "buildkite.com/job-uuid"

Scenario = Callable[[KubeAPI, FakeKubeAPI], Awaitable[None]]


def run(scenario: Scenario) -> None:
    with FakeKubeAPI() as kube:

        async def main() -> None:
            gw = gateway(kube.url, namespace=NS)
            try:
                await asyncio.wait_for(scenario(gw, kube), timeout=20)
            finally:
                await gw.close()

        asyncio.run(main())


def ours(name: str, uuid: str = "job-1") -> dict[str, Any]:
    pod = make_pod(name)
    pod["metadata"]["labels"] = {SELECTOR: uuid}
    return pod


async def next_events(stream: AsyncIterator[tuple[str, Any]], count: int) -> list[tuple[str, Any]]:
    events = []
    async for kind, obj in stream:
        if kind != "BOOKMARK":
            events.append((kind, obj))
        if len(events) == count:
            break
    return events


async def until(predicate: Callable[[], object], what: str) -> None:
    """Poll ``predicate`` (without blocking the loop) until it is truthy; fail after 5 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


# --- create / delete / annotate -------------------------------------------------------------------------


def test_create_returns_the_stored_pod_and_a_second_create_is_already_exists() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        created = await gw.create_pod(ours("buildkite-a"))
        assert created["metadata"]["uid"]
        assert created["metadata"]["namespace"] == NS
        assert kube.get("pods", "buildkite-a", NS) is not None
        with pytest.raises(AlreadyExists) as caught:
            await gw.create_pod(ours("buildkite-a"))
        assert caught.value.status == 409 and not caught.value.is_retryable
        assert "already exists" in caught.value.message

    run(scenario)


def test_delete_with_the_right_uid_removes_the_pod() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        uid = (await gw.create_pod(ours("p")))["metadata"]["uid"]
        assert await gw.delete_pod("p", uid=uid, grace_seconds=0) is True
        assert kube.get("pods", "p", NS) is None

    run(scenario)


def test_delete_with_a_wrong_uid_is_false_and_keeps_the_newer_pod() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        await gw.create_pod(ours("p"))
        assert await gw.delete_pod("p", uid="uid-of-an-older-pod") is False
        assert kube.get("pods", "p", NS) is not None

    run(scenario)


def test_delete_of_a_pod_already_gone_is_false() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        assert await gw.delete_pod("never-existed") is False
        assert await gw.delete_pod("never-existed", uid="abc") is False

    run(scenario)


def test_annotate_merges_into_existing_annotations_and_none_removes_one() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        pod = ours("p")
        pod["metadata"]["annotations"] = {"keep": "1", "drop": "2"}
        await gw.create_pod(pod)
        await gw.annotate_pod("p", {"added": "yes", "drop": None})
        stored = kube.get("pods", "p", NS)
        assert stored is not None
        assert stored["metadata"]["annotations"] == {"keep": "1", "added": "yes"}
        assert stored["metadata"]["labels"] == {SELECTOR: "job-1"}  # untouched by a merge patch
        assert kube.request_count("patch", "pods") == 1

    run(scenario)


def test_annotate_a_missing_pod_is_not_found() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        with pytest.raises(NotFound):
            await gw.annotate_pod("missing", {"a": "b"})

    run(scenario)


def test_pod_template_is_returned_or_none_when_missing() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        template = {"metadata": {"name": "tpl"}, "template": {"spec": make_pod("x")["spec"]}}
        kube.create("podtemplates", template, NS)
        got = await gw.get_pod_template("tpl")
        assert got is not None and got["template"]["spec"]["containers"][0]["name"] == "main"
        assert await gw.get_pod_template("absent") is None

    run(scenario)


# --- list -----------------------------------------------------------------------------------------------


def test_list_pages_through_more_than_500_pods_and_filters_by_label() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        for i in range(1001):
            kube.create("pods", ours(f"p-{i:04d}", uuid=f"u{i}"), NS)
        kube.create("pods", make_pod("not-ours"), NS)
        kube.create("pods", ours("other-namespace"), "elsewhere")
        items, version = await gw.list_pods(SELECTOR)
        names = [item["metadata"]["name"] for item in items]
        assert len(names) == 1001 == len(set(names))
        assert "not-ours" not in names and "other-namespace" not in names
        assert int(version) == kube.resource_version
        assert kube.request_count("list", "pods") == 3  # 500 + 500 + 1

    run(scenario)


def test_an_empty_list_still_gives_a_version_to_watch_from() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        items, version = await gw.list_pods(SELECTOR)
        assert items == [] and version.isdigit()

    run(scenario)


# --- watch ----------------------------------------------------------------------------------------------


def test_watch_from_a_version_sees_added_modified_and_deleted_in_order() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.create("pods", ours("before"), NS)
        _, version = await gw.list_pods(SELECTOR)
        kube.create("pods", ours("p"), NS)
        kube.modify("pods", "p", lambda o: o["status"].update(phase="Running"), NS)
        kube.remove("pods", "p", NS)
        kube.create("pods", make_pod("not-ours"), NS)
        events = await next_events(gw.watch_pods(SELECTOR, version), 3)
        assert [(kind, obj["metadata"]["name"]) for kind, obj in events] == [
            ("ADDED", "p"),
            ("MODIFIED", "p"),
            ("DELETED", "p"),
        ]
        assert events[1][1]["status"]["phase"] == "Running"

    run(scenario)


def test_watch_passes_live_events_after_it_opened() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        _, version = await gw.list_pods(SELECTOR)
        task = asyncio.create_task(next_events(gw.watch_pods(SELECTOR, version), 1))
        await until(lambda: kube.request_count("watch", "pods"), "the watch request")
        kube.create("pods", ours("live"), NS)
        [(kind, obj)] = await task
        assert (kind, obj["metadata"]["name"]) == ("ADDED", "live")

    run(scenario)


def test_watch_from_an_expired_version_raises_watch_expired() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.create("pods", ours("first"), NS)  # version "0" would mean "from now", never expired
        _, version = await gw.list_pods(SELECTOR)
        kube.create("pods", ours("p"), NS)
        kube.expire_history()
        kube.create("pods", ours("q"), NS)
        with pytest.raises(WatchExpired) as caught:
            await next_events(gw.watch_pods(SELECTOR, version), 1)
        assert caught.value.status == 410

    run(scenario)


def test_a_410_status_on_the_watch_request_is_watch_expired() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        _, version = await gw.list_pods(SELECTOR)
        kube.inject("watch", "pods", status=410)
        with pytest.raises(WatchExpired):
            await next_events(gw.watch_pods(SELECTOR, version), 1)

    run(scenario)


def test_a_dropped_watch_stream_ends_the_iterator_without_an_error() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        _, version = await gw.list_pods(SELECTOR)
        task = asyncio.create_task(next_events(gw.watch_pods(SELECTOR, version), 1))
        # drop_watches closes only streams already open, so retry until it has closed ours.
        await until(lambda: kube.drop_watches("pods"), "an open watch stream to drop")
        assert await task == []

    run(scenario)


@pytest.mark.parametrize("status", [500, 503, 403], ids=["500", "503", "403"])
def test_a_refused_watch_request_is_translated(status: int) -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("watch", "pods", status=status)
        with pytest.raises(KubeError) as caught:
            await next_events(gw.watch_pods(SELECTOR, "1"), 1)
        assert caught.value.status == status

    run(scenario)


# --- every error class ----------------------------------------------------------------------------------


def test_conflict_409_is_not_already_exists() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("create", "pods", status=409)
        with pytest.raises(Conflict) as caught:
            await gw.create_pod(ours("p"))
        assert not isinstance(caught.value, AlreadyExists)
        assert caught.value.reason == "Conflict" and caught.value.is_retryable

    run(scenario)


def test_422_invalid_carries_the_field_causes() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        bad = ours("p")
        bad["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"
        with pytest.raises(Invalid) as caught:
            await gw.create_pod(bad)
        assert caught.value.status == 422 and not caught.value.is_retryable
        assert any(cause.startswith("spec.containers[0].name: ") for cause in caught.value.causes)

    run(scenario)


def test_injected_422_causes_are_field_colon_message() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("create", "pods", status=422)
        with pytest.raises(Invalid) as caught:
            await gw.create_pod(ours("p"))
        assert caught.value.causes == ("metadata: Invalid value: injected fault",)

    run(scenario)


@pytest.mark.parametrize(("quota", "is_quota"), [(True, True), (False, False)], ids=["quota", "policy"])
def test_403_tells_quota_from_policy(quota: bool, is_quota: bool) -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("create", "pods", status=403, quota=quota)
        with pytest.raises(Forbidden) as caught:
            await gw.create_pod(ours("p"))
        assert caught.value.is_quota is is_quota
        assert caught.value.is_retryable is is_quota

    run(scenario)


def test_429_is_unavailable_with_the_retry_after_seconds() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("list", "pods", status=429, retry_after=7)
        with pytest.raises(KubeUnavailable) as caught:
            await gw.list_pods(SELECTOR)
        assert (caught.value.status, caught.value.retry_after) == (429, 7.0)
        assert caught.value.is_retryable

    run(scenario)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(500, None, None), (503, None, None), (503, 3, 3.0)],
    ids=["500", "503", "503-retry-after"],
)
def test_5xx_is_unavailable(status: int, retry_after: int | None, expected: float | None) -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("delete", "pods", status=status, retry_after=retry_after)
        with pytest.raises(KubeUnavailable) as caught:
            await gw.delete_pod("p")
        assert (caught.value.status, caught.value.retry_after) == (status, expected)

    run(scenario)


def test_the_fault_is_consumed_and_the_next_call_succeeds() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("create", "pods", status=500, count=1)
        with pytest.raises(KubeUnavailable):
            await gw.create_pod(ours("p"))
        assert (await gw.create_pod(ours("p")))["metadata"]["name"] == "p"

    run(scenario)


@pytest.mark.parametrize(
    ("status", "payload", "kind"),
    [
        pytest.param(400, {"reason": "BadRequest"}, Invalid, id="400-bad-request"),
        pytest.param(410, {}, WatchExpired, id="410-outside-a-watch"),
        pytest.param(418, {"message": "teapot"}, KubeError, id="unmapped-code"),
        pytest.param(404, {"reason": None, "message": 7}, NotFound, id="odd-types"),
        pytest.param(422, {"details": {"causes": ["x", {"field": "f"}]}}, Invalid, id="odd-causes"),
    ],
)
def test_translate_maps_unusual_statuses(status: int, payload: dict[str, Any], kind: type) -> None:
    error = _translate(status, payload)
    assert type(error) is kind
    assert error.status == status


def test_a_non_numeric_retry_after_is_ignored() -> None:
    error = _translate(429, {}, retry_after="soon")
    assert isinstance(error, KubeUnavailable) and error.retry_after is None


def test_malformed_causes_are_skipped_not_fatal() -> None:
    error = _translate(422, {"details": {"causes": ["x", {"field": "f"}]}})
    assert isinstance(error, Invalid) and error.causes == ("f: ",)


# --- connection problems --------------------------------------------------------------------------------


def refused_url() -> str:
    """A loopback URL nobody listens on: bind port 0, note it, close it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_connection_refused_is_kube_unavailable() -> None:
    async def scenario() -> None:
        gw = gateway(refused_url())
        try:
            with pytest.raises(KubeUnavailable) as caught:
                await gw.list_pods(SELECTOR)
            assert caught.value.is_retryable and caught.value.status == 0
        finally:
            await gw.close()

    asyncio.run(scenario())


def test_connection_refused_on_watch_is_kube_unavailable() -> None:
    async def scenario() -> None:
        gw = gateway(refused_url())
        try:
            with pytest.raises(KubeUnavailable):
                await next_events(gw.watch_pods(SELECTOR, "1"), 1)
        finally:
            await gw.close()

    asyncio.run(scenario())


# --- rate limit -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_waits_one_token_time() -> None:
    async def scenario() -> None:
        clock = Clock()
        bucket = TokenBucket(qps=100, burst=3, clock=clock)
        for _ in range(3):
            await bucket.acquire()
        assert bucket.waited_seconds == 0
        await bucket.acquire()
        assert bucket.waited_seconds == pytest.approx(0.01)

    asyncio.run(scenario())


def test_token_bucket_refills_at_qps_but_never_beyond_burst() -> None:
    async def scenario() -> None:
        clock = Clock()
        # Powers of two keep the float arithmetic exact.
        bucket = TokenBucket(qps=8, burst=2, clock=clock)
        await bucket.acquire()
        await bucket.acquire()
        clock.now += 0.125  # one token back
        await bucket.acquire()
        assert bucket.waited_seconds == 0
        clock.now += 3600  # an idle hour banks only `burst` tokens
        await bucket.acquire()
        await bucket.acquire()
        assert bucket.waited_seconds == 0
        clock.now += 0.0625  # half a token: wait for the other half (1/16 s)
        await bucket.acquire()
        assert bucket.waited_seconds == pytest.approx(0.0625)

    asyncio.run(scenario())


def test_qps_zero_means_no_client_side_limit() -> None:
    async def scenario() -> None:
        bucket = TokenBucket(qps=0, burst=1, clock=Clock())
        for _ in range(10_000):
            await bucket.acquire()
        assert bucket.waited_seconds == 0

    asyncio.run(scenario())


def test_a_pause_holds_every_call_and_is_capped() -> None:
    clock = Clock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    async def scenario() -> None:
        bucket = TokenBucket(qps=0, burst=1, clock=clock, sleep=sleep)
        bucket.pause(2.0)
        bucket.pause(1.0)  # a shorter pause never shortens the one in force
        await bucket.acquire()
        await bucket.acquire()  # the pause is over
        bucket.pause(10_000)  # a hostile Retry-After
        await bucket.acquire()

    asyncio.run(scenario())
    assert sleeps == [pytest.approx(2.0), pytest.approx(30.0)]


def test_a_429_pauses_every_later_call_for_its_retry_after() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        bucket = TokenBucket(qps=0, burst=1)
        client = kclient.ApiClient(kube_client_config(kube.url))
        limited = KubeAPI(client, namespace=NS, limiter=bucket)
        try:
            kube.inject("list", "pods", status=429, retry_after=1)
            with pytest.raises(KubeUnavailable):
                await limited.list_pods(SELECTOR)
            started = time.monotonic()
            await limited.get_pod_template("none")  # another call, not the refused one
            assert time.monotonic() - started >= 0.9
        finally:
            await limited.close()

    run(scenario)


def test_every_gateway_call_takes_a_token() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        bucket = TokenBucket(qps=1000, burst=2, clock=Clock())
        client = kclient.ApiClient(kube_client_config(kube.url))
        limited = KubeAPI(client, namespace=NS, limiter=bucket)
        try:
            await limited.list_pods(SELECTOR)
            await limited.get_pod_template("none")
            assert bucket.waited_seconds == 0
            await limited.delete_pod("none")
            assert bucket.waited_seconds == pytest.approx(0.001)
            assert limited.requests == 3
        finally:
            await limited.close()

    run(scenario)
