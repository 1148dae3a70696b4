"""The lifecycle loop over an in-memory Kubernetes gateway, a real ``PodWatch``, fake Buildkite parts and
an injected clock: one test per situation of issue 4, seen from the outside (pods, calls, metrics).

Pods are created at T0 and accepted by the kubelet at T0+2 (``tests.app.pods``). ``Harness.at(t)`` moves
the clock to T0+t, lets the watch deliver every change, and runs lifecycle passes until nothing is left
to do at that instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from app.errors import Forbidden, GraphQLErrors, KubeUnavailable
from app.lifecycle import LifecyclePolicy
from app.lifecycle.runner import RETRY_SECONDS, LifecycleRunner
from app.metrics import Metrics
from app.podview import FAILURE_NOTIFIED_ANNOTATION, FAILURE_REPORTED_ANNOTATION
from app.settings import LifecycleSettings
from app.watch import PodWatch
from tests.app.fake_gateway import FakeFailer, FakeGateway, FakeJobStates
from tests.app.pods import (
    AGENT_IMAGE,
    JOB_UUID,
    POD_NAME,
    T0,
    Ctr,
    condition,
    event,
    pod,
    running,
    terminated,
    waiting,
)
from tests.support import Clock, eventually

PULL = waiting("ImagePullBackOff", 'Back-off pulling image "no-such:1"')


def job_uuid(number: int) -> str:
    return f"0199a1b2-c3d4-7e5f-8a9b-{number:012x}"


def as_job(raw: dict[str, Any], uuid: str) -> dict[str, Any]:
    """The same pod for another job: its own name, uid and job label."""
    raw["metadata"]["name"] = f"buildkite-{uuid}"
    raw["metadata"]["uid"] = f"uid-{uuid}"
    raw["metadata"]["labels"] = {"buildkite.com/job-uuid": uuid}
    return raw


def pending_with(*ctrs: Ctr, **kwargs: Any) -> dict[str, Any]:
    return pod(main=[*ctrs, Ctr("agent", AGENT_IMAGE), Ctr("checkout", AGENT_IMAGE)], **kwargs)


def finished(phase: str, *, agent_exit: int = 0, **kwargs: Any) -> dict[str, Any]:
    main = [
        Ctr("container-0", state=terminated(0 if phase == "Succeeded" else 1, at=T0 + 50)),
        Ctr("agent", AGENT_IMAGE, terminated(agent_exit, at=T0 + 60)),
        Ctr("checkout", AGENT_IMAGE, terminated(0, at=T0 + 20)),
    ]
    return pod(phase=phase, main=main, **kwargs)


class Harness:
    def __init__(
        self,
        *,
        states: dict[str, str] | None = None,
        is_leader: Callable[[], bool] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.clock = clock or Clock(T0)
        self.kube = FakeGateway()
        self.metrics = Metrics()
        self.graphql = FakeJobStates({JOB_UUID: "scheduled"} if states is None else states)
        self.failer = FakeFailer()
        self.watch = PodWatch(kube=self.kube, controller_id="", metrics=self.metrics)
        self.runner = self.new_runner(is_leader or (lambda: True))

    def new_runner(self, is_leader: Callable[[], bool]) -> LifecycleRunner:
        runner = LifecycleRunner(
            kube=self.kube,
            watch=self.watch,
            graphql=self.graphql,
            failer=self.failer,
            policy=LifecyclePolicy(),
            settings=LifecycleSettings(),
            metrics=self.metrics,
            is_leader=is_leader,
            clock=self.clock,
        )
        self.watch.subscribe(runner.on_pod)
        return runner

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Harness]:
        task = asyncio.create_task(self.watch.run())
        try:
            await self.runner.recover()
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def at(self, seconds: float) -> None:
        self.clock.now = T0 + seconds
        for _ in range(100):
            await self._watch_caught_up()
            await self.runner.settle()
            if await self._watch_caught_up():
                return
        raise AssertionError("lifecycle kept writing")

    async def _watch_caught_up(self) -> bool:
        """Yield until the watch's index matches the gateway; True if it already did."""
        for turn in range(1000):
            if self._index_matches():
                return turn == 0
            await asyncio.sleep(0)
        raise AssertionError("watch never caught up")

    def _index_matches(self) -> bool:
        wanted = {name: p["metadata"]["resourceVersion"] for name, p in self.kube.pods.items()}
        return wanted == {name: v.resource_version for name, v in self.watch.pods.items()}

    def deleted_by(self, cause: str) -> float:
        return (
            self.metrics.registry.get_sample_value(
                "buildkite_controller_pods_deleted_total", {"cause": cause}
            )
            or 0.0
        )

    def annotations(self, name: str = POD_NAME) -> dict[str, str]:
        return self.kube.pods[name]["metadata"].get("annotations") or {}


def scenario(**harness_args: Any) -> Callable[[Callable[[Harness], Awaitable[None]]], Callable[[], None]]:
    """Run an async test body against a fresh, running harness."""

    def wrap(body: Callable[[Harness], Awaitable[None]]) -> Callable[[], None]:
        def test() -> None:
            async def main() -> None:
                async with Harness(**harness_args).running() as harness:
                    await body(harness)

            asyncio.run(main())

        # Not functools.wraps: pytest would read the body's signature and look for a fixture `h`.
        test.__name__, test.__qualname__, test.__doc__ = body.__name__, body.__qualname__, body.__doc__
        return test

    return wrap


# --- finished pods ----------------------------------------------------------------------------------


@scenario()
async def test_succeeded_pod_is_deleted_after_its_short_retention(h: Harness) -> None:
    h.kube.put_pod(finished("Succeeded"))
    await h.at(89)  # finished at +60, kept 30 s
    assert POD_NAME in h.kube.pods
    await h.at(90)
    assert POD_NAME not in h.kube.pods
    assert h.deleted_by("succeeded") == 1
    assert h.failer.calls == [] and h.graphql.requests == []


@scenario()
async def test_failed_pod_is_kept_ten_minutes_for_people_to_inspect(h: Harness) -> None:
    h.kube.put_pod(finished("Failed"))  # the agent ran the job (exit 0); the step failed
    await h.at(90)
    await h.at(659)
    assert POD_NAME in h.kube.pods
    await h.at(660)
    assert POD_NAME not in h.kube.pods
    assert h.deleted_by("failed") == 1
    assert h.failer.calls == []


@scenario()
async def test_delete_names_the_pod_uid_so_a_newer_pod_of_that_name_survives(h: Harness) -> None:
    h.kube.put_pod(finished("Succeeded"))
    await h.at(90)
    assert h.kube.calls_of("delete_pod") == [(POD_NAME, "3f1c2d4e-0000-4000-8000-000000000001", None)]


# --- image, init and pending failures ----------------------------------------------------------------


@scenario()
async def test_image_pull_failure_is_reported_after_the_grace_and_the_pod_deleted(h: Harness) -> None:
    h.kube.events[POD_NAME] = [
        event("Failed", 'Failed to pull image "no-such:1"', at=T0 + 20, kind="Warning")
    ]
    marked: list[dict[str, str]] = []
    h.failer.probe = lambda: marked.append(dict(h.annotations()))
    h.kube.put_pod(pending_with(Ctr("container-0", state=PULL)))
    await h.at(31)  # grace: 30 s from startTime (+2)
    assert h.failer.calls == [] and POD_NAME in h.kube.pods
    await h.at(32)
    [(uuid, reason, message)] = h.failer.calls
    assert (uuid, reason) == (JOB_UUID, "image_pull")
    assert "ImagePullBackOff" in message and "no-such:1" in message
    assert "Recent Kubernetes events" in message and "Failed to pull image" in message
    assert marked == [{FAILURE_REPORTED_ANNOTATION: "image_pull"}], "annotated before the job was finished"
    assert POD_NAME not in h.kube.pods
    assert h.deleted_by("image_pull") == 1


@scenario()
async def test_invalid_image_name_is_reported_at_once(h: Harness) -> None:
    h.kube.put_pod(pending_with(Ctr("container-0", "Not An Image", waiting("InvalidImageName", "bad ref"))))
    await h.at(3)
    assert [c[1] for c in h.failer.calls] == ["image_pull"]
    assert POD_NAME not in h.kube.pods


@scenario()
async def test_init_container_failure_fails_the_job_and_keeps_the_pod_for_inspection(h: Harness) -> None:
    init = [Ctr("copy-agent", AGENT_IMAGE, terminated(1, reason="Error", message="no tini", at=T0 + 4))]
    h.kube.put_pod(
        pod(phase="Failed", init=init, main=[Ctr("agent", AGENT_IMAGE, waiting("PodInitializing"))])
    )
    await h.at(5)
    [(_, reason, message)] = h.failer.calls
    assert reason == "init_container" and "copy-agent" in message and "no tini" in message
    assert h.annotations() == {FAILURE_REPORTED_ANNOTATION: "init_container"}
    await h.at(603)  # retention runs from the last container exit (+4)
    assert POD_NAME in h.kube.pods
    await h.at(604)
    assert POD_NAME not in h.kube.pods and h.deleted_by("failed") == 1


@scenario()
async def test_native_sidecar_exit_is_not_an_init_failure(h: Harness) -> None:
    init = [
        Ctr("copy-agent", AGENT_IMAGE, terminated(0, at=T0 + 4)),
        Ctr("proxy", "envoy:1", terminated(143, reason="Error", signal=15), sidecar=True),
    ]
    main = [Ctr("agent", AGENT_IMAGE, running()), Ctr("checkout", AGENT_IMAGE, running())]
    h.kube.put_pod(pod(phase="Running", init=init, main=main))
    await h.at(100)
    assert h.failer.calls == [] and POD_NAME in h.kube.pods


@scenario()
async def test_pod_pending_too_long_fails_the_job_with_its_conditions(h: Harness) -> None:
    conditions = [condition("PodScheduled", "False", "Unschedulable", "0/3 nodes are available")]
    h.kube.put_pod(pod(conditions=conditions, started=None, statuses=False))
    await h.at(899)
    assert h.failer.calls == []
    await h.at(900)
    [(_, reason, message)] = h.failer.calls
    assert reason == "pending_timeout" and "Unschedulable" in message and "0/3 nodes" in message
    assert POD_NAME not in h.kube.pods


# --- pods that end on their own ----------------------------------------------------------------------


@scenario()
async def test_pod_gone_before_the_agent_acquired_the_job_fails_it(h: Harness) -> None:
    h.kube.put_pod(pod())
    await h.at(3)
    h.kube.remove_pod(POD_NAME)
    await h.at(4)
    [(uuid, reason, message)] = h.failer.calls
    assert (uuid, reason) == (JOB_UUID, "lost_before_acquire") and "was deleted" in message
    assert h.kube.calls_of("annotate_pod") == [], "a gone pod cannot carry the marker"


@scenario()
async def test_agent_done_but_pod_kept_alive_by_a_sidecar_is_ended_after_a_grace(h: Harness) -> None:
    main = [
        Ctr("agent", AGENT_IMAGE, terminated(0, at=T0 + 60)),
        Ctr("istio-proxy", "istio/proxy:1", running()),
    ]
    h.kube.put_pod(pod(phase="Running", main=main))
    await h.at(69)
    assert POD_NAME in h.kube.pods
    await h.at(70)
    assert POD_NAME not in h.kube.pods and h.deleted_by("agent_done") == 1
    assert h.failer.calls == []


# --- job states: owned, ended, cancelled -------------------------------------------------------------


@scenario(states={JOB_UUID: "running"})
async def test_failure_while_the_agent_owns_the_job_notifies_once_and_never_fails(h: Harness) -> None:
    h.kube.put_pod(pending_with(Ctr("sidecar", "no-such:1", PULL)))
    await h.at(40)
    await h.at(50)
    assert h.failer.calls == []
    assert h.annotations() == {FAILURE_NOTIFIED_ANNOTATION: "image_pull"}
    assert len(h.kube.calls_of("annotate_pod")) == 1
    assert POD_NAME in h.kube.pods


@scenario()
async def test_a_scheduled_state_from_before_the_failure_is_not_trusted_to_fail_the_job(h: Harness) -> None:
    h.kube.put_pod(pod())
    await h.at(1)  # the poll learns `scheduled`
    h.graphql.states[JOB_UUID] = "running"  # then the agent acquires the job
    h.kube.put_pod(pending_with(Ctr("sidecar", "x y", waiting("InvalidImageName", "bad"))))
    await h.at(2)
    assert h.failer.calls == [] and POD_NAME in h.kube.pods
    assert h.annotations() == {FAILURE_NOTIFIED_ANNOTATION: "image_pull"}
    assert len(h.graphql.requests) == 2, "asked again at once, not after the poll interval"


@scenario(states={})
async def test_a_failing_pod_of_a_job_buildkite_does_not_know_is_deleted_not_failed(h: Harness) -> None:
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    for second in range(3, 13):
        await h.at(second)
    assert len(h.graphql.requests) == 1
    assert h.failer.calls == [] and POD_NAME not in h.kube.pods
    assert h.deleted_by("job_unknown") == 1


@scenario(states={JOB_UUID: "finished"})
async def test_failure_of_a_job_that_already_ended_just_cleans_up(h: Harness) -> None:
    h.kube.put_pod(pending_with(Ctr("container-0", state=PULL)))
    await h.at(40)
    assert h.failer.calls == []
    assert POD_NAME not in h.kube.pods and h.deleted_by("job_ended") == 1


@scenario()
async def test_cancel_webhook_deletes_the_pending_pod_at_once(h: Harness) -> None:
    h.kube.put_pod(pod())
    await h.at(1)
    requests = len(h.graphql.requests)
    h.runner.cancel(JOB_UUID)
    await h.at(1)
    assert POD_NAME not in h.kube.pods and h.deleted_by("cancelled") == 1
    assert h.kube.calls_of("delete_pod")[0][2] == 0, "a pod that never ran user code has nothing to flush"
    assert len(h.graphql.requests) == requests, "the webhook needs no GraphQL call"
    assert h.failer.calls == []


@scenario()
async def test_lost_cancel_webhook_costs_at_most_one_check_interval(h: Harness) -> None:
    h.kube.put_pod(pod())
    await h.at(1)
    assert h.graphql.requests == [[JOB_UUID]]
    h.graphql.states[JOB_UUID] = "canceled"
    await h.at(5.9)
    assert POD_NAME in h.kube.pods
    await h.at(6)
    assert POD_NAME not in h.kube.pods and h.deleted_by("cancelled") == 1
    assert len(h.graphql.requests) == 2


@scenario()
async def test_cancel_that_arrives_before_the_pod_exists_still_deletes_it(h: Harness) -> None:
    h.runner.cancel(JOB_UUID)
    h.kube.put_pod(pod())
    await h.at(1)
    assert POD_NAME not in h.kube.pods and h.deleted_by("cancelled") == 1


@scenario()
async def test_running_pod_of_a_cancelled_job_is_left_to_its_agent(h: Harness) -> None:
    main = [Ctr("container-0", state=running()), Ctr("agent", AGENT_IMAGE, running())]
    h.kube.put_pod(pod(phase="Running", main=main))
    h.runner.cancel(JOB_UUID)
    await h.at(10)
    assert POD_NAME in h.kube.pods


# --- at most once, restarts, leadership --------------------------------------------------------------


@scenario()
async def test_two_events_for_one_failure_fail_the_job_once(h: Harness) -> None:
    stuck = pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad")))
    h.kube.put_pod(stuck)
    h.kube.put_pod(stuck)
    await h.at(3)
    assert len(h.failer.calls) == 1


@scenario()
async def test_restart_with_the_marker_present_does_not_fail_again(h: Harness) -> None:
    marker = {FAILURE_REPORTED_ANNOTATION: "init_container"}
    init = [Ctr("copy-agent", AGENT_IMAGE, terminated(1, reason="Error", at=T0 + 4))]
    h.kube.put_pod(pod(phase="Failed", init=init, annotations=marker))
    stuck = pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad")), annotations=marker)
    h.kube.put_pod(as_job(stuck, job_uuid(2)))
    await h.at(10)
    assert h.failer.calls == []
    assert POD_NAME in h.kube.pods, "the failed pod keeps its retention"
    assert f"buildkite-{job_uuid(2)}" not in h.kube.pods, "failed, then crashed before deleting: delete now"


@scenario()
async def test_a_second_runner_after_a_restart_cleans_orphans_and_fails_nothing_twice(h: Harness) -> None:
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    h.kube.put_pod(as_job(finished("Succeeded"), job_uuid(3)))
    await h.at(3)
    assert len(h.failer.calls) == 1
    restarted = h.new_runner(lambda: True)  # same cluster, same failer fake, empty memory
    h.runner = restarted
    await restarted.recover()
    await h.at(100)
    assert len(h.failer.calls) == 1
    assert h.kube.pods == {}


@scenario(is_leader=lambda: False)
async def test_follower_keeps_its_view_but_does_nothing(h: Harness) -> None:
    h.kube.put_pod(finished("Succeeded"))
    h.kube.put_pod(
        as_job(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "b"))), job_uuid(4))
    )
    await h.at(1000)
    assert len(h.kube.pods) == 2 and h.graphql.requests == [] and h.failer.calls == []
    assert not [c for c in h.kube.calls if c[0] in ("delete_pod", "annotate_pod")]


def test_follower_that_takes_over_acts_at_once() -> None:
    leader = False

    async def main() -> None:
        async with Harness(is_leader=lambda: leader).running() as h:
            h.kube.put_pod(finished("Succeeded"))
            await h.at(1000)
            assert POD_NAME in h.kube.pods
            nonlocal leader
            leader = True
            await h.at(1000)
            assert POD_NAME not in h.kube.pods

    asyncio.run(main())


# --- the loop itself, in real time ---------------------------------------------------------------------


def test_run_loop_wakes_on_a_pod_event_and_on_a_due_timer_without_one() -> None:
    start = time.monotonic()

    def clock() -> float:  # a finished pod 0.3 s before its retention ends, then real time
        return T0 + 89.7 + (time.monotonic() - start)

    async def main() -> None:
        async with Harness(clock=clock).running() as h:
            loop = asyncio.create_task(h.runner.run())
            try:
                h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
                await eventually(lambda: len(h.failer.calls) == 1, "the failure")  # woken by the event
                deleted_at: list[float] = []
                delete = h.kube.delete_pod

                async def timed_delete(name: str, **kwargs: Any) -> bool:
                    deleted_at.append(clock())
                    return await delete(name, **kwargs)

                h.kube.delete_pod = timed_delete  # type: ignore[method-assign]
                h.kube.put_pod(as_job(finished("Succeeded"), job_uuid(7)))
                await eventually(lambda: h.deleted_by("succeeded") == 1, "the delete")  # woken by its timer
                assert T0 + 90 <= deleted_at[0] < T0 + 90.5, "at the end of the retention"
            finally:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop

    asyncio.run(main())


# --- the batched state check -------------------------------------------------------------------------


@scenario(states={})
async def test_state_check_asks_once_per_hundred_jobs_per_interval(h: Harness) -> None:
    for number in range(250):
        h.kube.put_pod(as_job(pod(), job_uuid(number)))
    await h.at(1)
    assert [len(r) for r in h.graphql.requests] == [100, 100, 50]
    assert len({u for r in h.graphql.requests for u in r}) == 250
    await h.at(5.5)
    assert len(h.graphql.requests) == 3, "polled jobs are asked at most once per interval"
    await h.at(6)
    assert len(h.graphql.requests) == 6


@scenario(states={})
async def test_pod_with_a_malformed_job_uuid_is_never_sent_to_buildkite(h: Harness) -> None:
    h.kube.put_pod(pod(labels={"buildkite.com/job-uuid": "'; drop table jobs; --"}))
    h.kube.put_pod(as_job(pod(), job_uuid(5)))
    await h.at(1)
    assert h.graphql.requests == [[job_uuid(5)]]
    await h.at(2000)  # past the pending timeout: Buildkite knows no such job, so nothing is failed
    assert h.failer.calls == []
    assert POD_NAME not in h.kube.pods  # but a pod stuck for a job nobody can run is not kept either


@scenario()
async def test_graphql_outage_is_retried_next_interval_not_in_a_loop(h: Harness) -> None:
    h.graphql.error = GraphQLErrors(["Internal server error"], transient=True)
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    await h.at(3)
    assert len(h.graphql.requests) == 1 and h.failer.calls == []
    h.graphql.error = None
    await h.at(7.9)
    assert len(h.graphql.requests) == 1
    await h.at(8)
    assert len(h.failer.calls) == 1


# --- failed calls are retried, never lost ------------------------------------------------------------


@scenario()
async def test_buildkite_error_takes_the_marker_back_and_retries(h: Harness) -> None:
    h.failer.queued = ["error"]
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    await h.at(3)
    assert len(h.failer.calls) == 1 and h.annotations() == {}
    await h.at(3 + RETRY_SECONDS[0])
    assert len(h.failer.calls) == 2 and POD_NAME not in h.kube.pods


@scenario()
async def test_refused_acquire_leaves_the_pod_to_the_agent_that_holds_the_job(h: Harness) -> None:
    # The state said scheduled, but an agent (perhaps this pod's own) acquired the job meanwhile:
    # deleting the pod could kill the job's run, and the job is not ours to fail any more.
    h.failer.outcome = "held_by_another"
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    await h.at(3)
    assert len(h.failer.calls) == 1
    h.graphql.states[JOB_UUID] = "running"  # what Buildkite says once the agent has it
    await h.at(100)
    assert len(h.failer.calls) == 1
    assert POD_NAME in h.kube.pods, "the pod of a job an agent may hold is never deleted"
    assert not h.kube.pods[POD_NAME]["metadata"].get("annotations", {}).get(FAILURE_REPORTED_ANNOTATION)


@scenario()
async def test_kubernetes_error_on_delete_is_retried_after_a_back_off(h: Harness) -> None:
    h.kube.fail_next("delete_pod", KubeUnavailable(503, "ServiceUnavailable", "etcd is slow"))
    h.kube.put_pod(finished("Succeeded"))
    await h.at(90)
    assert POD_NAME in h.kube.pods
    await h.at(90 + RETRY_SECONDS[0])
    assert POD_NAME not in h.kube.pods and h.deleted_by("succeeded") == 1


@scenario()
async def test_failed_annotation_holds_back_the_report(h: Harness) -> None:
    h.kube.fail_next("annotate_pod", KubeUnavailable(429, "TooManyRequests", "slow down"))
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    await h.at(3)
    assert h.failer.calls == [], "never finish the job without the marker on the pod"
    await h.at(3 + RETRY_SECONDS[0])
    assert len(h.failer.calls) == 1


@scenario()
async def test_annotation_refused_for_good_does_not_hold_the_job_hostage(h: Harness) -> None:
    h.kube.fail_next("annotate_pod", Forbidden(403, "Forbidden", "cannot patch pods", is_quota=False))
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    await h.at(3)
    await h.at(100)
    assert len(h.failer.calls) == 1 and POD_NAME not in h.kube.pods


@scenario()
async def test_events_unavailable_still_reports_the_failure(h: Harness) -> None:
    h.kube.fail_next("list_events", KubeUnavailable(503, "ServiceUnavailable", "down"))
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    await h.at(3)
    [(_, _, message)] = h.failer.calls
    assert "InvalidImageName" in message and "Recent Kubernetes events" not in message


# --- metrics -----------------------------------------------------------------------------------------


@scenario()
async def test_metrics_count_failures_and_time_reports_and_cancels(h: Harness) -> None:
    h.kube.put_pod(pending_with(Ctr("container-0", "x y", waiting("InvalidImageName", "bad"))))
    h.kube.put_pod(as_job(pod(), job_uuid(6)))
    h.graphql.states[job_uuid(6)] = "scheduled"
    await h.at(3)
    h.runner.cancel(job_uuid(6))
    await h.at(3)
    sample = h.metrics.registry.get_sample_value
    assert sample("buildkite_controller_lifecycle_failures_total", {"reason": "image_pull"}) == 1
    assert sample("buildkite_controller_failure_report_seconds_count") == 1
    assert sample("buildkite_controller_cancel_to_delete_seconds_count") == 1
    assert sample("buildkite_controller_oldest_pending_pod_seconds") == pytest.approx(3)
