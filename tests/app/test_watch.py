"""``PodWatch`` through the production gateway against the fake apiserver: list, watch, and re-list.

Gaps in the watch are made with the fake's faults: a delayed (and failing) watch request, or a dropped
stream followed by a delayed re-list. Whatever changes inside the gap can only reach the index through
the re-list, so the tests show that no transition is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.kube import KubeAPI
from app.metrics import Metrics
from app.podview import PodView
from app.simulate.kube_api import FakeKubeAPI
from app.simulate.pytest_plugin import make_pod
from app.watch import CONTROLLER_ID_LABEL, JOB_UUID_LABEL, PodWatch, label_selector
from tests.app.kube_fixtures import gateway
from tests.support import eventually

NS = "buildkite"
CONTROLLER = "ctl-a"
# A list delayed this long at the server leaves the test time to change pods "while the watch is down".
GAP_SECONDS = 0.3


def labels(uuid: str | None, controller: str | None = CONTROLLER) -> dict[str, str]:
    found = {JOB_UUID_LABEL: uuid, CONTROLLER_ID_LABEL: controller}
    return {key: value for key, value in found.items() if value is not None}


def put(kube: FakeKubeAPI, uuid: str, *, controller: str | None = CONTROLLER, name: str = "") -> str:
    name = name or f"buildkite-{uuid}"
    pod = make_pod(name)
    pod["metadata"]["labels"] = labels(uuid, controller)
    kube.create("pods", pod, NS)
    return name


def set_phase(kube: FakeKubeAPI, uuid: str, phase: str) -> None:
    kube.modify("pods", f"buildkite-{uuid}", lambda pod: pod["status"].update(phase=phase), NS)


def restarts(metrics: Metrics, cause: str) -> float:
    value = metrics.registry.get_sample_value("buildkite_controller_watch_restarts_total", {"cause": cause})
    return value or 0.0


class Running:
    """One ``PodWatch`` running over ``gw``; ``seen`` records every view handed to listeners."""

    def __init__(self, gw: Any, *, controller_id: str = CONTROLLER) -> None:
        self.metrics = Metrics()
        self.watch = PodWatch(kube=gw, controller_id=controller_id, metrics=self.metrics)
        self.seen: list[PodView] = []
        self.watch.subscribe(self.seen.append)

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[PodWatch]:
        task = asyncio.create_task(self.watch.run())
        try:
            await asyncio.wait_for(self.watch.synced.wait(), timeout=5)
            yield self.watch
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert task.cancelled(), "the watch task ended on its own (it must run until cancelled)"


def run(scenario: Callable[[KubeAPI, FakeKubeAPI], Any]) -> None:
    with FakeKubeAPI(bookmark_interval=0.1) as kube:

        async def main() -> None:
            gw = gateway(kube.url, namespace=NS)
            try:
                await asyncio.wait_for(scenario(gw, kube), timeout=20)
            finally:
                await gw.close()

        asyncio.run(main())


def test_the_initial_list_fills_the_index_and_sets_synced() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        put(kube, "u1")
        put(kube, "u2")
        running = Running(gw)
        assert not running.watch.synced.is_set()
        async with running.started() as watch:
            assert watch.has("u1") and watch.has("u2") and not watch.has("u3")
            assert set(watch.pods) == {"buildkite-u1", "buildkite-u2"}
            view = watch.pod_for("u1")
            assert view is not None and view.name == "buildkite-u1" and view.phase == "Pending"
            assert {v.job_uuid for v in running.seen} == {"u1", "u2"}

    run(scenario)


def test_watch_events_add_update_and_remove_pods() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        async with Running(gw).started() as watch:
            put(kube, "u1")
            await eventually(lambda: watch.has("u1"), "the added pod")
            set_phase(kube, "u1", "Running")
            await eventually(lambda: (p := watch.pod_for("u1")) and p.phase == "Running", "the update")
            kube.remove("pods", "buildkite-u1", NS)
            await eventually(lambda: not watch.has("u1"), "the deletion")
            assert watch.pods == {} and watch.pod_for("u1") is None

    run(scenario)


def test_live_uuids_excludes_finished_pods() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        for uuid in ("pending", "running", "succeeded", "failed"):
            put(kube, uuid)
        set_phase(kube, "running", "Running")
        set_phase(kube, "succeeded", "Succeeded")
        set_phase(kube, "failed", "Failed")
        async with Running(gw).started() as watch:
            assert set(watch.live_uuids()) == {"pending", "running"}
            set_phase(kube, "running", "Succeeded")
            await eventually(lambda: set(watch.live_uuids()) == {"pending"}, "the finish")
            assert watch.has("running")  # finished pods stay known until deleted

    run(scenario)


def test_the_label_selector_keeps_other_controllers_pods_out() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        put(kube, "mine")
        put(kube, "theirs", controller="ctl-b")
        put(kube, "unlabelled-controller", controller=None)
        put(kube, "", name="no-job-uuid")  # empty value: a label, but no job
        plain = make_pod("plain")
        kube.create("pods", plain, NS)
        async with Running(gw).started() as watch:
            put(kube, "theirs-later", controller="ctl-b")
            put(kube, "mine-later")
            await eventually(lambda: watch.has("mine-later"), "our later pod")
            known = {view.job_uuid for view in watch.pods.values()}
            assert known <= {"mine", "mine-later", None}
            assert not watch.has("theirs") and not watch.has("theirs-later")
            assert not watch.has("unlabelled-controller")

    run(scenario)


def test_without_a_controller_id_pods_labelled_with_any_id_are_not_ours() -> None:
    assert label_selector("") == f"{JOB_UUID_LABEL},!{CONTROLLER_ID_LABEL}"

    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        put(kube, "anonymous", controller=None)
        put(kube, "claimed", controller="ctl-b")
        async with Running(gw, controller_id="").started() as watch:
            assert watch.has("anonymous") and not watch.has("claimed")

    run(scenario)


def test_a_410_relists_and_sees_every_change_made_in_the_gap() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        put(kube, "changed")
        put(kube, "deleted")
        # The first watch request stalls, then fails 410: the changes below happen in that gap.
        kube.inject("watch", "pods", status=410, delay=GAP_SECONDS)
        running = Running(gw)
        async with running.started() as watch:
            set_phase(kube, "changed", "Running")
            kube.remove("pods", "buildkite-deleted", NS)
            put(kube, "added")
            await eventually(lambda: restarts(running.metrics, "expired") == 1, "the 410")
            await eventually(lambda: watch.has("added"), "the re-list")
            assert not watch.has("deleted")
            changed = watch.pod_for("changed")
            assert changed is not None and changed.phase == "Running"
            assert any(v.name == "buildkite-deleted" and v.deleted for v in running.seen)
            assert kube.request_count("list", "pods") == 2

    run(scenario)


def test_a_dropped_stream_relists_and_forgets_pods_deleted_meanwhile() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        put(kube, "deleted")
        put(kube, "changed")
        running = Running(gw)
        async with running.started() as watch:
            kube.inject("list", "pods", delay=GAP_SECONDS)  # the re-list after the drop
            await eventually(lambda: kube.drop_watches("pods"), "an open stream to drop")
            kube.remove("pods", "buildkite-deleted", NS)
            set_phase(kube, "changed", "Failed")
            await eventually(lambda: not watch.has("deleted"), "the re-list")
            changed = watch.pod_for("changed")
            assert changed is not None and changed.phase == "Failed"
            assert list(watch.live_uuids()) == []
            assert restarts(running.metrics, "closed") >= 1
            # The watch goes on after the re-list.
            put(kube, "after")
            await eventually(lambda: watch.has("after"), "a pod after the re-list")

    run(scenario)


def test_an_apiserver_error_on_the_watch_backs_off_and_relists() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        kube.inject("watch", "pods", status=503)
        running = Running(gw)
        async with running.started() as watch:
            put(kube, "u1")
            await eventually(lambda: watch.has("u1"), "the pod after the 503", timeout=5)
            assert restarts(running.metrics, "error") == 1

    run(scenario)


class Garbling:
    """The real gateway, with malformed objects mixed into the list and the watch stream."""

    GARBAGE: tuple[Any, ...] = ({"metadata": {}}, {"metadata": "x"}, "not an object", {"kind": "Pod"})

    def __init__(self, gw: KubeAPI) -> None:
        self._gw = gw
        self.namespace = gw.namespace

    async def list_pods(self, label_selector: str) -> tuple[list[Any], str]:
        items, version = await self._gw.list_pods(label_selector)
        return [*self.GARBAGE, *items], version

    async def watch_pods(self, label_selector: str, resource_version: str) -> AsyncIterator[tuple[str, Any]]:
        for obj in self.GARBAGE:
            yield "MODIFIED", obj
        async for event in self._gw.watch_pods(label_selector, resource_version):
            yield event


def test_malformed_objects_are_skipped_and_the_watch_goes_on() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        put(kube, "u1")
        async with Running(Garbling(gw)).started() as watch:
            assert set(watch.pods) == {"buildkite-u1"}
            put(kube, "u2")
            await eventually(lambda: watch.has("u2"), "the pod after the garbage")
            assert set(watch.pods) == {"buildkite-u1", "buildkite-u2"}

    run(scenario)


def test_phase_gauges_follow_the_index() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        put(kube, "a")
        put(kube, "b")
        running = Running(gw)
        async with running.started():
            set_phase(kube, "b", "Running")

            def gauge(phase: str) -> float | None:
                return running.metrics.registry.get_sample_value(
                    "buildkite_controller_pods", {"phase": phase}
                )

            await eventually(lambda: gauge("Running") == 1 and gauge("Pending") == 1, "the gauges")

    run(scenario)


def test_the_pods_by_phase_gauge_follows_transitions_and_deletions() -> None:
    async def scenario(gw: KubeAPI, kube: FakeKubeAPI) -> None:
        running = Running(gw)

        def gauge(phase: str) -> float | None:
            return running.metrics.registry.get_sample_value("buildkite_controller_pods", {"phase": phase})

        for uuid in ("a", "b", "c"):
            put(kube, uuid)
        set_phase(kube, "c", "Running")
        async with running.started():
            assert (gauge("Pending"), gauge("Running")) == (2, 1)
            set_phase(kube, "a", "Succeeded")
            kube.remove("pods", "buildkite-b", NS)
            await eventually(lambda: gauge("Succeeded") == 1 and gauge("Pending") == 0, "both changes")
            assert (gauge("Running"), gauge("Failed")) == (1, 0)

    run(scenario)
