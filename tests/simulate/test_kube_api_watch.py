"""Watch semantics of the fake apiserver: initial state, replay, 410 Expired, bookmarks, dropped streams."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import kubernetes.aio.client
import kubernetes.aio.watch
import pytest
from kubernetes import watch
from kubernetes.client import ApiException

from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kube_client import kube_client_config
from app.simulate.pytest_plugin import make_pod


def _events(core_v1, count: int, **kwargs) -> list[tuple[str, str]]:
    """The first `count` events of a pod watch (the 5 s timeout only guards against a hang)."""
    watcher = watch.Watch()
    seen = []
    for event in watcher.stream(core_v1.list_namespaced_pod, "default", timeout_seconds=5, **kwargs):
        seen.append((event["type"], event["raw_object"]["metadata"].get("name", "")))
        if len(seen) == count:
            watcher.stop()
    return seen


def _raw_watch(url: str, count: int, **params: str) -> list[dict]:
    """Read `count` event lines of a raw watch over httpx (fewer if the server ends the stream)."""
    lines: list[dict] = []
    query = {"watch": "true", "timeoutSeconds": "5", **params}
    with httpx.stream("GET", f"{url}/api/v1/namespaces/default/pods", params=query, timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append(json.loads(line))
            if len(lines) == count:
                break
    return lines


def test_a_watch_without_resource_version_starts_with_the_current_objects(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    core_v1.create_namespaced_pod("default", make_pod("b"))
    assert _events(core_v1, 2) == [("ADDED", "a"), ("ADDED", "b")]


def test_a_watch_from_a_resource_version_replays_later_changes_in_order(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    listed = core_v1.list_namespaced_pod("default").metadata.resource_version
    core_v1.create_namespaced_pod("default", make_pod("b"))
    core_v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}})
    core_v1.delete_namespaced_pod("b", "default")
    # Deleting even an unbound pod first writes its deletion mark (MODIFIED), as the apiserver does.
    assert _events(core_v1, 4, resource_version=listed) == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("MODIFIED", "b"),
        ("DELETED", "b"),
    ]


def test_a_watch_sees_changes_made_while_it_is_open(core_v1, fake_kube):
    version = core_v1.list_namespaced_pod("default").metadata.resource_version
    seen: list[str] = []
    stream = watch.Watch().stream(
        core_v1.list_namespaced_pod, "default", resource_version=version, timeout_seconds=5
    )
    creator = threading.Thread(target=lambda: fake_kube.create("pods", make_pod("late")))
    creator.start()
    for event in stream:
        seen.append(event["object"].metadata.name)
        break
    creator.join()
    assert seen == ["late"]


def test_a_watch_from_a_compacted_version_raises_410_in_watch_stream(core_v1, fake_kube):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    version = core_v1.list_namespaced_pod("default").metadata.resource_version
    fake_kube.expire_history()
    with pytest.raises(ApiException) as caught:
        list(
            watch.Watch().stream(
                core_v1.list_namespaced_pod, "default", resource_version=version, timeout_seconds=1
            )
        )
    assert caught.value.status == 410
    assert "Expired: too old resource version" in caught.value.reason


def test_the_410_is_an_error_event_in_a_200_stream_like_the_apiserver(fake_kube):
    fake_kube.create("pods", make_pod("a"))
    fake_kube.expire_history()
    response = httpx.get(
        f"{fake_kube.url}/api/v1/namespaces/default/pods", params={"watch": "1", "resourceVersion": "1"}
    )
    assert response.status_code == 200
    event = json.loads(response.text.splitlines()[0])
    assert event["type"] == "ERROR"
    assert event["object"] == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: 1 ({fake_kube.store.compacted_version})",
        "reason": "Expired",
        "code": 410,
    }


def test_a_bounded_history_expires_old_versions_by_itself():
    with FakeKubeAPI(history_size=3) as kube:
        for i in range(5):
            kube.create("pods", make_pod(f"p{i}"))
        response = httpx.get(
            f"{kube.url}/api/v1/namespaces/default/pods", params={"watch": "true", "resourceVersion": "1"}
        )
        assert json.loads(response.text.splitlines()[0])["object"]["code"] == 410
        replay = _raw_watch(kube.url, 2, resourceVersion="3")
        assert [event["object"]["metadata"]["name"] for event in replay] == ["p3", "p4"]


def test_a_label_filtered_watch_sees_objects_leave_and_enter_the_selection(core_v1):
    core_v1.create_namespaced_pod("default", make_pod("a"))
    version = core_v1.list_namespaced_pod("default").metadata.resource_version
    core_v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"app": "other"}}})
    core_v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"app": "test"}}})
    events = _events(core_v1, 2, resource_version=version, label_selector="app=test")
    assert events == [("DELETED", "a"), ("ADDED", "a")]


def test_watch_bookmarks_carry_the_latest_seen_resource_version(fake_kube):
    created = fake_kube.create("pods", make_pod("a"))
    fake_kube.create("pods", make_pod("b"))
    version = created["metadata"]["resourceVersion"]
    added, bookmark = _raw_watch(fake_kube.url, 2, resourceVersion=version, allowWatchBookmarks="true")
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "b")
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(fake_kube.resource_version)},
        },
    }


def test_the_watch_ends_when_timeout_seconds_pass(fake_kube):
    response = httpx.get(
        f"{fake_kube.url}/api/v1/namespaces/default/pods",
        params={"watch": "true", "timeoutSeconds": "1"},
        timeout=5,
    )
    assert response.status_code == 200 and response.text == ""


def test_dropped_watch_streams_end_and_the_client_sees_end_of_stream(fake_kube):
    ended = threading.Event()

    def consume() -> None:
        with httpx.stream(
            "GET", f"{fake_kube.url}/api/v1/namespaces/default/pods", params={"watch": "true"}, timeout=10
        ) as response:
            for _ in response.iter_lines():
                pass
        ended.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    deadline_dropped = 0
    for _ in range(500):
        deadline_dropped = fake_kube.drop_watches()
        if deadline_dropped:
            break
        ended.wait(0.01)
    assert deadline_dropped == 1
    assert ended.wait(5)
    consumer.join()


def test_watch_with_a_malformed_resource_version_is_bad_request(core_v1):
    with pytest.raises(ApiException) as caught:
        list(
            watch.Watch().stream(
                core_v1.list_namespaced_pod, "default", resource_version="abc", timeout_seconds=1
            )
        )
    assert caught.value.status == 400


def test_the_asyncio_watch_streams_replay_and_raises_410(fake_kube):
    fake_kube.create("pods", make_pod("a"))

    async def scenario() -> tuple[list[str], int]:
        async with kubernetes.aio.client.ApiClient(kube_client_config(fake_kube.url)) as client:
            core = kubernetes.aio.client.CoreV1Api(client)
            seen = []
            async with kubernetes.aio.watch.Watch() as stream:
                async for event in stream.stream(core.list_namespaced_pod, "default", timeout_seconds=5):
                    seen.append(event["object"].metadata.name)
                    break
            fake_kube.expire_history()
            try:
                async with kubernetes.aio.watch.Watch() as stream:
                    async for _ in stream.stream(
                        core.list_namespaced_pod, "default", resource_version="1", timeout_seconds=1
                    ):
                        pass
            except kubernetes.aio.client.ApiException as error:
                return seen, error.status
            return seen, 0

    assert asyncio.run(scenario()) == (["a"], 410)


def test_the_official_watch_resumes_after_a_dropped_stream_without_duplicates(core_v1, fake_kube):
    version = core_v1.list_namespaced_pod("default").metadata.resource_version
    seen: list[str] = []
    arrived = threading.Condition()
    watcher = watch.Watch()

    def consume() -> None:
        # No timeout_seconds: the client re-watches from its last resourceVersion when a stream ends.
        for event in watcher.stream(core_v1.list_namespaced_pod, "default", resource_version=version):
            with arrived:
                seen.append(event["object"].metadata.name)
                arrived.notify_all()
            if len(seen) == 2:
                watcher.stop()

    consumer = threading.Thread(target=consume)
    consumer.start()
    fake_kube.create("pods", make_pod("before-drop"))
    with arrived:
        assert arrived.wait_for(lambda: seen, timeout=5)
    assert fake_kube.drop_watches("pods") == 1
    fake_kube.create("pods", make_pod("after-drop"))
    consumer.join(timeout=5)
    assert seen == ["before-drop", "after-drop"]
    assert fake_kube.request_count("watch", "pods") == 2
