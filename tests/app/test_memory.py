"""Memory stays bounded on every replica: 20,000 jobs through a follower and a leader leave every table empty.

Both replicas are the real stages (``JobBook``, ``Intake``, ``Confirmer``, ``Admitter``, ``Creator``,
``Relay`` and ``RelayReceiver``, ``PodWatch``, ``LifecycleRunner`` with its ``JobStateCheck``,
``JobFailer``), assembled as ``app.main.build_controller`` assembles them, on one event loop and one
injected clock. Around them: one in-memory cluster (``FakeGateway``) that both watches follow, a fake
GraphQL API (confirm and job states), a fake agent API, and a kubelet played by the test. The follower
relays to the leader's real ``RelayReceiver`` (signed like production) through an in-memory transport.

Each job goes the whole way: webhook to the follower (some to both replicas) → relay → the leader's
confirm → admit → create → pod Pending → Running → Succeeded → deleted after its retention → DELETED
in both watches. Mixed in: jobs cancelled before a pod exists and while their pod is pending, jobs
Buildkite no longer lists as scheduled, jobs whose pod cannot be built and whose image cannot be
pulled, and late duplicate webhooks after the pod is gone. Then the clock passes every TTL and the
housekeeping runs: every table is back to (about) zero on both replicas.

``podspec.build`` costs over a millisecond a job, so pods here are slim manifests (``SlimCreator``);
jobs whose pod cannot be built still go through the real builder.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from app.admit import Admitter
from app.buildkite.agent_api import FailOutcome
from app.buildkite.queries import JobRecord as BuildkiteJob
from app.confirm import Confirmer
from app.create import Creator
from app.errors import BuildkiteError
from app.fail import MAX_REMEMBERED, SETTLED_TTL_SECONDS, JobFailer
from app.intake import Intake
from app.jobs import ENDED, ENDED_KEEP_SECONDS, TOMBSTONE_SECONDS, JobBook, Stage
from app.lifecycle import LifecyclePolicy
from app.lifecycle.job_states import JobStateCheck
from app.lifecycle.runner import LifecycleRunner
from app.metrics import Metrics
from app.podview import PodView
from app.relay import RELAY_PATH, Relay, RelayReceiver
from app.settings import LifecycleSettings, Settings
from app.tags import ControllerTags
from app.watch import PodWatch
from podspec import Job
from podspec.metadata import JOB_UUID_LABEL
from tests.app.fake_gateway import FakeGateway
from tests.app.pods import ts
from tests.support import Clock, eventually

JOBS = int(os.environ.get("MEMORY_TEST_JOBS", "20000"))
MAX_ENDED = 1000  # JobBook's default cap on ended records
WAVE = 1_000  # at most the book's ended-record cap, so a wave's end stages can all be read back
MAX_IN_FLIGHT = 500  # smaller than a wave: jobs wait for slots, and their confirmations go stale
TICK_SECONDS = 40.0  # past the success retention (30 s) and the image pull grace (30 s)
RELAY_KEY = "memory-test-relay-key"
LEADER_URL = "http://leader.test"
QUEUE_RULES = ("queue=kubernetes",)
BAD_PLUGIN = json.dumps([{"github.com/buildkite-plugins/kubernetes-buildkite-plugin": {"podSpec": 3}}])

# What happens to a job, by kind; the kinds repeat in this pattern over the 20,000 jobs.
PATTERN = (
    ["normal"] * 10
    + ["both"] * 3  # the webhook reaches both replicas
    + ["cancel_before", "cancel_pending", "dropped_running", "dropped_unknown", "build_error", "image_pull"]
)
# Where each kind ends: (on the leader, on the follower). None: the replica never heard of it.
EXPECTED: dict[str, tuple[Stage | None, Stage]] = {
    "normal": (Stage.FINISHED, Stage.FINISHED),  # the follower handed it over, then watched its pod
    "both": (Stage.FINISHED, Stage.FINISHED),
    "cancel_before": (None, Stage.CANCELLED),  # cancelled before the relay: the leader never sees it
    "cancel_pending": (Stage.CANCELLED, Stage.CANCELLED),
    "dropped_running": (Stage.DROPPED, Stage.HANDED_OVER),  # an agent took it meanwhile
    "dropped_unknown": (Stage.DROPPED, Stage.HANDED_OVER),  # Buildkite does not know it
    "build_error": (Stage.FAILED, Stage.HANDED_OVER),
    "image_pull": (Stage.FAILED, Stage.FINISHED),  # the follower sees only its pod go away
}
WITH_POD = frozenset({"normal", "both", "cancel_pending", "image_pull"})


def job_uuid(number: int) -> str:
    return f"0199a1b2-c3d4-7e5f-8a9b-{number:012x}"


# --- the world around the replicas ----------------------------------------------------------------


class StreamingGateway(FakeGateway):
    """``FakeGateway`` made fast enough for ~100,000 changes: its watch resumes where it left off (the
    base scans the whole change log on every change), and objects are copied shallowly (every writer
    here replaces ``status`` or ``metadata`` whole; ``PodView.from_raw`` only reads), not deeply."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def put_pod(self, raw: dict[str, Any]) -> dict[str, Any]:
        obj = {**raw, "metadata": dict(raw["metadata"])}
        kind = "MODIFIED" if obj["metadata"]["name"] in self.pods else "ADDED"
        self.pods[obj["metadata"]["name"]] = obj
        self._emit(kind, obj)
        return obj

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        self._version = next(self._versions)
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._log.append((self._version, kind, {**obj, "metadata": dict(obj["metadata"])}))
        self._changed.set()
        self._changed = asyncio.Event()
        self.changes += 1

    async def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return await super().create_pod({**manifest, "status": {"phase": "Pending"}})  # as the apiserver does

    async def watch_pods(self, label_selector: str, resource_version: str) -> AsyncIterator[tuple[str, Any]]:
        self._enter("watch_pods", resource_version)
        since = int(resource_version or 0)
        position = bisect.bisect_right([version for version, _, _ in self._log], since)
        while True:
            changed = self._changed
            while position < len(self._log):
                _, kind, obj = self._log[position]
                position += 1
                yield kind, obj
            await changed.wait()


class World:
    """What Buildkite knows: each job's kind and state; answers GraphQL and the agent API."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.failed: Counter[str] = Counter()
        self.busy = 0  # requests being answered

    def add(self, uuid: str, kind: str) -> None:
        self.kinds[uuid] = kind
        self.states[uuid] = {"dropped_running": "running", "dropped_unknown": ""}.get(kind, "scheduled")

    # GraphQLClient, as Confirmer and JobStateCheck use it
    budget = None

    async def confirm_jobs(
        self, uuids: Sequence[str], *, with_cluster: bool = False
    ) -> dict[str, BuildkiteJob]:
        self.busy += 1
        await asyncio.sleep(0)  # an answer takes a turn of the loop at least
        self.busy -= 1
        answer: dict[str, BuildkiteJob] = {}
        for uuid in uuids:
            state = self.states.get(uuid)
            if state:
                env = {"BUILDKITE_PLUGINS": BAD_PLUGIN} if self.kinds[uuid] == "build_error" else {}
                answer[uuid] = BuildkiteJob(uuid, state, QUEUE_RULES, env, "make test", priority=0)
        return answer

    async def job_states(self, uuids: Sequence[str]) -> dict[str, str]:
        self.busy += 1
        await asyncio.sleep(0)
        self.busy -= 1
        return {uuid: self.states[uuid] for uuid in uuids if self.states.get(uuid)}

    # AgentAPI, as JobFailer uses it
    async def fail_job(self, uuid: str, message: str) -> FailOutcome:
        self.failed[uuid] += 1
        if self.states.get(uuid) != "scheduled":
            return FailOutcome.ENDED
        self.states[uuid] = "failed"
        return FailOutcome.FAILED


class SlimCreator(Creator):
    """The real ``Creator.create`` (AlreadyExists → Exists, errors → outcomes) with a slim manifest, so
    20,000 pods fit the time budget; a job with plugin config still goes through ``podspec.build``."""

    async def _manifest(self, job: Job, jlog: Any, attempt: int) -> Any:
        if "BUILDKITE_PLUGINS" in job.env:
            return await super()._manifest(job, jlog, attempt)
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.pod_name(job), "labels": {JOB_UUID_LABEL: job.uuid}, "annotations": {}},
            "spec": {"containers": [{"name": "agent", "image": "buildkite/agent"}]},
        }


# --- one replica, assembled like build_controller assembles it ------------------------------------


class Replica:
    def __init__(
        self,
        name: str,
        *,
        leading: bool,
        kube: StreamingGateway,
        world: World,
        clock: Clock,
        leader: Replica | None = None,
    ) -> None:
        settings = Settings()
        self.name = name
        self.metrics = metrics = Metrics()
        is_leader = (lambda: True) if leading else (lambda: False)
        self.book = JobBook(replica=name, timer=metrics, clock=clock, wall_clock=clock)
        self.watch = PodWatch(kube=kube, controller_id="", metrics=metrics)
        self.failer = JobFailer(world, metrics=metrics, clock=clock)
        self.lifecycle = LifecycleRunner(
            kube=kube,
            watch=self.watch,
            graphql=world,
            failer=self.failer,
            policy=LifecyclePolicy(),
            settings=LifecycleSettings(),
            metrics=metrics,
            is_leader=is_leader,
            book=self.book,
            clock=clock,
        )
        self.creator = SlimCreator(kube=kube, pod_config=settings.pod, metrics=metrics)
        confirmer: Confirmer | None = None

        async def recheck(uuids: list[str]) -> dict[str, str]:
            assert confirmer is not None
            return await confirmer.recheck(uuids)

        self.admitter = Admitter(
            book=self.book,
            creator=self.creator,
            recheck=SimpleNamespace(recheck=recheck),
            failer=self.failer,
            live_pods=self.watch.live_count,
            max_in_flight=MAX_IN_FLIGHT,
            concurrency=settings.admit.create_concurrency,
            quota_deadline_seconds=settings.lifecycle.pending_timeout_seconds,
            metrics=metrics,
            is_leader=is_leader,
            clock=clock,
        )
        tags = ControllerTags.from_settings(queues=("kubernetes",), tags=())
        confirmer = self.confirmer = Confirmer(
            graphql=world,  # type: ignore[arg-type]
            tags=tags,
            book=self.book,
            admitter=self.admitter,
            metrics=metrics,
            clock=clock,
        )
        self.receiver = RelayReceiver(
            key=RELAY_KEY,
            allow_unsigned=False,
            submit=lambda uuid: self.intake.submit(uuid, source="relay"),
            cancel=self.on_cancel,
            is_leader=is_leader,
            max_skew_seconds=settings.webhook.max_skew_seconds,
            clock=clock,
        )
        to_leader = httpx.AsyncClient(transport=httpx.MockTransport(receiving(leader or self)))
        self.relay = Relay(
            http=to_leader,
            leader_url=lambda: LEADER_URL,
            key=RELAY_KEY,
            book=self.book,
            metrics=metrics,
            clock=clock,
        )
        self.relaying = 0
        self.intake = Intake(
            book=self.book,
            confirmer=confirmer,
            relay=self,
            is_leader=is_leader,
            batch_size=settings.intake.batch_size,
            metrics=metrics,
            clock=clock,
            sleep=no_retries,
        )
        self.is_leader = is_leader
        self.background: set[asyncio.Task[bool]] = set()
        self.closers = [to_leader.aclose]
        self.events = 0  # watch events delivered
        self.watch.subscribe(self._count)
        self.watch.subscribe(
            lambda view: (
                self.book.pod_seen(view.job_uuid, phase=view.phase, deleted=view.deleted)
                if view.job_uuid
                else None
            )
        )
        self.watch.subscribe(self.lifecycle.on_pod)
        self.watch.subscribe(lambda view: self.admitter.pod_changed(view.job_uuid))

    def _count(self, view: PodView) -> None:
        self.events += 1

    async def forward(self, uuids: list[str]) -> Any:
        """The intake's relay stage: the real ``Relay``, counted so the test knows when it is idle."""
        self.relaying += 1
        try:
            return await self.relay.forward(uuids)
        finally:
            self.relaying -= 1

    # The webhook route's two outcomes, wired as build_controller wires them.
    def webhook_scheduled(self, uuid: str) -> bool:
        return self.intake.submit(uuid)

    def webhook_cancelled(self, uuid: str) -> None:
        self.on_cancel(uuid)
        if not self.is_leader():
            task = asyncio.get_running_loop().create_task(self.relay.forward_cancel(uuid))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    def on_cancel(self, uuid: str) -> None:
        self.book.cancel(uuid)
        self.lifecycle.cancel(uuid)

    def progress(self) -> tuple[object, ...]:
        return (
            self.events,
            tuple(self.book.sizes().values()),
            self.intake.pending(),
            tuple(self.admitter.sizes().values()),
            self.relaying,
            len(self.background),
        )

    def sizes(self) -> dict[str, object]:
        return {
            "book": self.book.sizes(),
            "intake_pending": self.intake.pending(),
            "admitter": self.admitter.sizes(),
            "lifecycle": self.lifecycle.sizes(),
            "job_state_check": self.lifecycle.check.sizes(),
            "watch": self.watch.sizes(),
            "failer_remembered": self.failer.remembered(),
        }


async def no_retries(seconds: float) -> None:
    """The intake's back-off: nothing in this run may need one (it would wait real seconds)."""
    raise AssertionError(f"a batch had to be retried (back-off {seconds:.1f} s); see the log")


def receiving(leader: Replica) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """The follower's HTTP client delivers to the leader's real ``RelayReceiver`` (signature check,
    parsing, submit and cancel), without a server or FastAPI's routing in between."""

    async def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == RELAY_PATH
        body = await request.aread()
        scope = {
            "type": "http",
            "method": request.method,
            "path": request.url.path,
            "query_string": b"",
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        answer = await leader.receiver.handle(Request(scope, receive))
        return httpx.Response(answer.status_code, content=answer.body)

    return handle


# --- the kubelet ------------------------------------------------------------------------------------


def kubelet_status(kind: str, phase: str, now: float) -> dict[str, Any]:
    """The pod's next status as a kubelet would write it."""
    container: dict[str, Any] = {"name": "agent", "image": "buildkite/agent", "ready": False}
    if kind == "image_pull":
        container["state"] = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
        return {"phase": "Pending", "startTime": ts(now), "containerStatuses": [container]}
    if phase == "Pending":
        container |= {"state": {"running": {"startedAt": ts(now)}}, "ready": True}
        return {"phase": "Running", "startTime": ts(now), "containerStatuses": [container]}
    container["state"] = {"terminated": {"exitCode": 0, "startedAt": ts(now - 30), "finishedAt": ts(now)}}
    return {"phase": "Succeeded", "startTime": ts(now - 30), "containerStatuses": [container]}


@dataclass
class Run:
    world: World
    kube: StreamingGateway
    clock: Clock
    leader: Replica
    follower: Replica
    tasks: list[asyncio.Task[None]]

    @property
    def replicas(self) -> tuple[Replica, Replica]:
        return self.leader, self.follower

    async def quiet(self) -> None:
        """Wait until nothing moves: every change delivered to both watches, intakes empty, no relay,
        GraphQL call or cancel forward under way, and the same state for several loop turns."""
        history: list[tuple[object, ...]] = []

        def idle() -> bool:
            for task in self.tasks:
                if task.done():  # a stage loop died: say why instead of waiting for the deadline
                    raise AssertionError(f"{task.get_name()} stopped") from task.exception()
            if (
                self.world.busy
                or any(r.events != self.kube.changes for r in self.replicas)
                or any(r.intake.pending() or r.relaying or r.background for r in self.replicas)
                or any(r.admitter.sizes()["creating"] for r in self.replicas)
            ):
                history.clear()
                return False
            history.append((self.kube.changes, *(r.progress() for r in self.replicas)))
            return len(history) >= 5 and all(state == history[-1] for state in history[-5:])

        try:
            await eventually(idle, "both replicas idle", timeout=30, every=0)
        except AssertionError as exc:
            sizes = [r.sizes() | {"relaying": r.relaying} for r in self.replicas]
            raise AssertionError(f"{exc}: {sizes}") from exc.__cause__

    async def lifecycle(self) -> None:
        """Lifecycle passes on both replicas until the cluster stops changing."""
        for _ in range(10):
            before = self.kube.changes
            for replica in self.replicas:
                await replica.lifecycle.settle()
            await self.quiet()
            if self.kube.changes == before:
                return
        raise AssertionError("the lifecycle kept changing the cluster")

    async def kubelet(self) -> None:
        """Move every pod one step: Pending → Running → Succeeded; a bad image stays pulling; a pod of a
        job to cancel stays Pending and the job is cancelled (webhook to the follower)."""
        now = self.clock()
        for raw in list(self.kube.pods.values()):
            uuid = raw["metadata"]["labels"][JOB_UUID_LABEL]
            kind = self.world.kinds[uuid]
            phase = raw["status"]["phase"]
            if kind == "cancel_pending":
                if self.world.states[uuid] == "scheduled":
                    self.world.states[uuid] = "canceled"
                    self.follower.webhook_cancelled(uuid)
                continue
            if kind == "image_pull" and raw["status"].get("containerStatuses"):
                continue  # still pulling
            if phase == "Succeeded":
                continue  # the lifecycle deletes it after its retention
            updated = dict(raw)
            updated["status"] = kubelet_status(kind, phase, now)
            self.kube.put_pod(updated)
            if kind != "image_pull":  # its agent acquired the job, then finished it
                self.world.states[uuid] = "running" if updated["status"]["phase"] == "Running" else "passed"
        await self.quiet()

    async def tick(self) -> None:
        await self.lifecycle()
        await self.kubelet()
        self.clock.advance(TICK_SECONDS)
        for replica in self.replicas:
            replica.book.forget_old()  # what the controller's housekeeping does every 30 s
            assert replica.book.sizes()["ended"] <= MAX_ENDED, replica.book.sizes()  # bounded all along
        await self.quiet()


async def send_wave(run: Run, numbers: range) -> list[str]:
    uuids = [job_uuid(n) for n in numbers]
    for n, uuid in zip(numbers, uuids, strict=True):
        kind = PATTERN[n % len(PATTERN)]
        run.world.add(uuid, kind)
        if kind == "both":
            assert run.leader.webhook_scheduled(uuid)
        assert run.follower.webhook_scheduled(uuid)
        if kind == "cancel_before":
            run.world.states[uuid] = "canceled"
            run.follower.webhook_cancelled(uuid)
    await run.quiet()
    return uuids


def wave_done(run: Run, uuids: list[str]) -> bool:
    for uuid in uuids:
        for replica, expected in zip(run.replicas, EXPECTED[run.world.kinds[uuid]], strict=True):
            record = replica.book.get(uuid)
            if expected is not None and (record is None or record.stage not in ENDED):
                return False
    return not any(f"buildkite-{uuid}" in run.kube.pods for uuid in uuids)


def check_wave(run: Run, uuids: list[str]) -> None:
    for uuid in uuids:
        kind = run.world.kinds[uuid]
        for replica, expected in zip(run.replicas, EXPECTED[kind], strict=True):
            record = replica.book.get(uuid)
            stage = None if record is None else record.stage
            assert stage == expected, f"{kind} job {uuid} on the {replica.name}: {stage}, not {expected}"


@pytest.fixture
def run_timer() -> Any:
    started = time.monotonic()
    yield
    print(f"\nmemory test: {JOBS} jobs in {time.monotonic() - started:.1f} s")


async def scenario() -> Run:
    clock = Clock(1_767_225_600.0)
    kube = StreamingGateway()
    world = World()
    leader = Replica("leader", leading=True, kube=kube, world=world, clock=clock)
    follower = Replica("follower", leading=False, kube=kube, world=world, clock=clock, leader=leader)
    run = Run(world, kube, clock, leader, follower, tasks=[])
    tasks = run.tasks
    for replica in run.replicas:
        for stage, loop in (
            ("watch", replica.watch.run),
            ("intake", replica.intake.run),
            ("admit", replica.admitter.run),
        ):
            tasks.append(asyncio.create_task(loop(), name=f"{replica.name} {stage}"))
    try:
        for replica in run.replicas:
            await replica.lifecycle.recover()
        previous: list[str] = []
        for start in range(0, JOBS, WAVE):
            uuids = await send_wave(run, range(start, min(JOBS, start + WAVE)))
            for _ in range(40):
                await run.tick()
                if wave_done(run, uuids):
                    break
            check_wave(run, uuids)
            # Late duplicates, to both replicas, now that every pod is gone: this wave's (their ended
            # records still kept) and the previous wave's (records trimmed by the cap; tombstones only).
            # A job whose pod a replica saw is never new work again; the others are confirmed (and
            # dropped: no longer scheduled) or known. The count of creates shows none got a second pod.
            for uuid in previous + uuids:
                late = [replica.webhook_scheduled(uuid) for replica in run.replicas]
                if run.world.kinds[uuid] in WITH_POD:
                    assert late == [False, False], uuid
            await run.quiet()
            previous = uuids
        # Every TTL passes; the housekeeping and the lifecycle run again.
        run.clock.advance(max(TOMBSTONE_SECONDS, ENDED_KEEP_SECONDS, SETTLED_TTL_SECONDS) + 1)
        await run.tick()
        # A webhook later than every TTL is new work again; Buildkite's answer (the job ran) keeps it
        # from a second pod, and its record ages out like any other.
        for uuid in previous:
            for replica in run.replicas:
                replica.webhook_scheduled(uuid)
        await run.quiet()
        run.clock.advance(ENDED_KEEP_SECONDS + 1)
        await run.tick()
        return run
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in run.replicas:
            for close in replica.closers:
                await close()


# About 1.6 ms of CPU a job, most of it the two replicas' watch path (PodView parsing, the book, the
# lifecycle's bookkeeping): ~32 s for 20,000 jobs on an idle core, several times that on a loaded one.
@pytest.mark.timeout(900)
def test_20000_jobs_through_a_follower_and_a_leader_leave_every_table_empty(run_timer: Any) -> None:
    run = asyncio.run(scenario())

    # Nothing was created twice, and every job that should have had a pod got exactly one.
    creates = Counter(run.kube.calls_of("create_pod"))
    assert max(creates.values()) == 1, creates.most_common(3)
    with_pod = {uuid for uuid, kind in run.world.kinds.items() if kind in WITH_POD}
    assert set(creates) == {f"buildkite-{uuid}" for uuid in with_pod}
    failed = {uuid for uuid, kind in run.world.kinds.items() if kind in ("build_error", "image_pull")}
    assert set(run.world.failed) == failed and set(run.world.failed.values()) <= {1}

    for replica in run.replicas:
        sizes = replica.sizes()
        assert sizes == {
            "book": {"active": 0, "ended": 0, "tombstones": 0},
            "intake_pending": 0,
            "admitter": {"ready": 0, "later": 0, "creating": 0, "seen_while_creating": 0, "unseen": 0},
            "lifecycle": {"pods": 0, "jobs": 0, "early_cancels": 0},
            "job_state_check": {"wanted": 0, "states": 0, "asked": 0},
            "watch": {"pods": 0, "jobs": 0},
            "failer_remembered": sizes["failer_remembered"],
        }, replica.name
        assert sizes["failer_remembered"] <= MAX_REMEMBERED


def test_the_failer_forgets_settled_answers_after_their_ttl() -> None:
    async def scenario() -> tuple[int, int]:
        clock = Clock()
        world = World()
        failer = JobFailer(world, metrics=Metrics(), clock=clock)
        for n in range(3):
            world.add(job_uuid(n), "build_error")
            assert await failer.fail(job_uuid(n), reason="build_error", message="x") is FailOutcome.FAILED
        before = failer.remembered()
        clock.advance(SETTLED_TTL_SECONDS + 1)
        world.add(job_uuid(9), "build_error")
        await failer.fail(job_uuid(9), reason="build_error", message="x")
        return before, failer.remembered()

    assert asyncio.run(scenario()) == (3, 1)


def test_a_job_forgotten_while_its_state_round_is_out_keeps_nothing() -> None:
    """A pod deleted while the GraphQL round asking for its job is out: the answer must not bring the
    job back into the check's tables (nothing would ever forget it again)."""

    class Slow:
        budget = None

        def __init__(self, fail: bool) -> None:
            self.release = asyncio.Event()
            self.fail = fail

        async def job_states(self, uuids: Sequence[str]) -> dict[str, str]:
            await self.release.wait()
            if self.fail:
                raise BuildkiteError("Buildkite answered 502")
            return dict.fromkeys(uuids, "scheduled")

    async def scenario(fail: bool) -> dict[str, int]:
        source = Slow(fail)
        check = JobStateCheck(source, interval_seconds=5)
        gone, kept = job_uuid(1), job_uuid(2)
        check.want(gone)
        check.want(kept)
        round_out = asyncio.create_task(check.run(now=1000.0))
        await asyncio.sleep(0)
        check.forget(gone)  # its last pod went: the runner forgets the job
        source.release.set()
        learned = await round_out
        assert gone not in learned
        return check.sizes()

    assert asyncio.run(scenario(fail=False)) == {"wanted": 0, "states": 1, "asked": 1}
    assert asyncio.run(scenario(fail=True)) == {"wanted": 1, "states": 0, "asked": 1}
