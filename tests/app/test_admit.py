"""``Admitter``: priority order, the max-in-flight limit, in-flight derived from the cluster, drain.

The admitter runs for real on an event loop; its collaborators are a tiny in-memory world: ``live`` is
what the pod watch would report (unfinished pods by job UUID), ``create`` records the call and, when it
succeeds, the pod shows up in ``live`` as the watch would see it. Time is an injected clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.admit import UNSEEN_EXPIRY_SECONDS, Admitter, free_slots
from app.metrics import Metrics
from podspec import Job


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """The cluster as the admitter sees it, plus a record of every create."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.created: list[str] = []
        self.outcome: Callable[[Job], bool] = lambda job: True
        self.gate: asyncio.Event | None = None  # when set, creates block until it is set
        self.watch_lags: Callable[[Job], bool] = lambda job: False  # created, but not yet in ``live``
        self.turns: Callable[[], int] = lambda: 0  # loop turns a create takes (the API round trip)
        self.creating = 0
        self.on_seen: Callable[[str], None] = lambda uuid: None  # the watch telling the admitter
        self.most_at_once = 0  # the largest number of pods alive or being created at one time

    async def create(self, job: Job) -> bool:
        self.created.append(job.uuid)
        self.creating += 1
        self._note()
        try:
            if self.gate is not None:
                await self.gate.wait()
            for _ in range(self.turns()):
                await asyncio.sleep(0)
            exists = self.outcome(job)
            if exists and not self.watch_lags(job):
                self.live.add(job.uuid)  # the pod exists and the watch sees it
                self.on_seen(job.uuid)
            return exists
        finally:
            self.creating -= 1

    def _note(self) -> None:
        self.most_at_once = max(self.most_at_once, len(self.live) + self.creating)


def make(world: World, *, limit: int, concurrency: int = 10, clock: Clock | None = None) -> Admitter:
    admitter = Admitter(
        max_in_flight=limit,
        concurrency=concurrency,
        create=world.create,
        live_pods=lambda: world.live,
        metrics=Metrics(),
        clock=clock or Clock(),
    )
    world.on_seen = admitter.pod_changed
    return admitter


async def settle() -> None:
    """Let the admit loop and the create tasks run until they block (a few loop turns)."""
    for _ in range(10):
        await asyncio.sleep(0)


def finish(admitter: Admitter, world: World, uuid: str) -> None:
    """The pod finished: the watch no longer reports it as live, and tells the admitter."""
    world.live.discard(uuid)
    admitter.pod_changed(uuid)


def job(uuid: str, priority: int = 0) -> Job:
    return Job(uuid=uuid, priority=priority)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


async def running(admitter: Admitter) -> asyncio.Task[None]:
    task = asyncio.create_task(admitter.run())
    await settle()
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("in_flight", "limit", "expected"),
    [
        pytest.param(0, 0, None, id="no-limit"),
        pytest.param(500, 0, None, id="no-limit-busy"),
        pytest.param(0, 3, 3, id="empty"),
        pytest.param(2, 3, 1, id="one-left"),
        pytest.param(3, 3, 0, id="full"),
        pytest.param(5, 3, 0, id="over-the-limit-is-zero-not-negative"),
    ],
)
def test_free_slots(in_flight: int, limit: int, expected: int | None) -> None:
    assert free_slots(in_flight=in_flight, limit=limit) == expected


def test_highest_priority_first_and_equal_priorities_in_arrival_order() -> None:
    async def scenario() -> None:
        world = World()
        admitter = make(world, limit=1)
        await admitter.enqueue([job("low", 1), job("high", 10), job("mid", 5), job("high-2", 10)])
        task = await running(admitter)
        for expected in ("high", "high-2", "mid", "low"):
            assert world.created[-1] == expected
            finish(admitter, world, expected)
            await settle()
        assert world.created == ["high", "high-2", "mid", "low"]
        await stop(task)

    run(scenario)


def test_no_limit_admits_everything_at_once() -> None:
    async def scenario() -> None:
        world = World()
        admitter = make(world, limit=0)
        task = await running(admitter)
        await admitter.enqueue([job(f"j{i}") for i in range(50)])
        await settle()
        assert len(world.created) == 50
        await stop(task)

    run(scenario)


def test_a_pod_the_watch_saw_come_and_go_before_the_create_returned_is_not_counted() -> None:
    # The watch can deliver ADDED and DELETED before the create call's own response arrives; counting
    # that pod as "created but unseen" would hold a slot for a minute (a leak, if briefly).
    async def scenario() -> None:
        world = World()
        admitter = make(world, limit=1)
        world.gate = asyncio.Event()
        world.watch_lags = lambda j: True
        task = await running(admitter)
        await admitter.enqueue([job("quick")])
        await settle()
        admitter.pod_changed("quick")  # ADDED, then DELETED: the pod is already gone
        world.gate.set()
        await settle()
        assert admitter.in_flight() == 0
        await stop(task)

    run(scenario)


def test_in_flight_counts_live_pods_creates_running_and_pods_not_yet_seen() -> None:
    async def scenario() -> None:
        world, clock = World(), Clock()
        world.live.add("already-running")
        admitter = make(world, limit=10, clock=clock)
        assert admitter.in_flight() == 1
        world.gate = asyncio.Event()
        task = await running(admitter)
        await admitter.enqueue([job("new")])
        await settle()
        assert admitter.in_flight() == 2  # the create is running
        world.watch_lags = lambda j: True
        world.gate.set()
        await settle()
        assert "new" not in world.live
        assert admitter.in_flight() == 2  # created but not yet seen by the watch
        world.live.add("new")
        admitter.pod_changed("new")  # the watch's ADDED event
        assert admitter.in_flight() == 2  # seen now: counted once, not twice
        world.live.discard("new")
        assert admitter.in_flight() == 1  # finished
        await stop(task)

    run(scenario)


def test_a_pod_never_seen_stops_counting_after_the_expiry() -> None:
    async def scenario() -> None:
        world, clock = World(), Clock()
        admitter = make(world, limit=1, clock=clock)
        world.watch_lags = lambda j: j.uuid == "never-seen"  # deleted before the watch saw it
        task = await running(admitter)
        await admitter.enqueue([job("never-seen"), job("next")])
        await settle()
        assert world.created == ["never-seen"] and admitter.in_flight() == 1
        clock.now += UNSEEN_EXPIRY_SECONDS - 1
        admitter.pod_changed(None)
        await settle()
        assert world.created == ["never-seen"]
        clock.now += 2
        admitter.pod_changed(None)
        await settle()
        assert world.created == ["never-seen", "next"]
        await stop(task)

    run(scenario)


def test_a_create_that_fails_does_not_hold_a_slot() -> None:
    async def scenario() -> None:
        world = World()
        world.outcome = lambda j: j.uuid != "fails"
        admitter = make(world, limit=1)
        task = await running(admitter)
        await admitter.enqueue([job("fails", 9), job("works", 1)])
        await settle()
        assert world.created == ["fails", "works"]
        assert admitter.in_flight() == 1
        await stop(task)

    run(scenario)


def test_a_finished_pod_frees_its_slot_and_the_limit_holds() -> None:
    async def scenario() -> None:
        world = World()
        admitter = make(world, limit=2)
        task = await running(admitter)
        await admitter.enqueue([job("a"), job("b"), job("c")])
        await settle()
        assert world.created == ["a", "b"]
        admitter.pod_changed(None)  # a wake-up without a change admits nothing
        await settle()
        assert world.created == ["a", "b"]
        finish(admitter, world, "a")
        await settle()
        assert world.created == ["a", "b", "c"]
        assert world.most_at_once == 2
        await stop(task)

    run(scenario)


def test_a_job_enqueued_twice_is_created_once() -> None:
    async def scenario() -> None:
        world = World()
        world.gate = asyncio.Event()
        admitter = make(world, limit=5)
        task = await running(admitter)
        await admitter.enqueue([job("a"), job("a")])
        await settle()
        await admitter.enqueue([job("a")])  # while its create runs
        world.gate.set()
        await settle()
        assert world.created == ["a"]
        await stop(task)

    run(scenario)


def test_a_discarded_job_is_skipped_and_others_still_run() -> None:
    async def scenario() -> None:
        world = World()
        waiting: list[str] = []
        admitter = Admitter(
            max_in_flight=1,
            concurrency=1,
            create=world.create,
            live_pods=lambda: world.live,
            metrics=Metrics(),
            on_waiting=waiting.append,
            clock=Clock(),
        )
        world.on_seen = admitter.pod_changed
        task = await running(admitter)
        await admitter.enqueue([job("first", 3), job("cancelled", 2), job("last", 1)])
        await settle()
        assert set(waiting) == {"cancelled", "last"}
        admitter.discard("cancelled")
        finish(admitter, world, "first")
        await settle()
        assert world.created == ["first", "last"]
        await stop(task)

    run(scenario)


def test_a_requeued_job_is_admitted_again_when_capacity_allows() -> None:
    async def scenario() -> None:
        world = World()
        world.outcome = lambda j: len(world.created) > 1  # the first attempt fails (quota)
        admitter = make(world, limit=1)
        task = await running(admitter)
        await admitter.enqueue([job("a")])
        await settle()
        admitter.requeue(job("a"))
        await settle()
        assert world.created == ["a", "a"] and world.live == {"a"}
        await stop(task)

    run(scenario)


def test_drain_waits_for_running_creates_and_admits_nothing_more() -> None:
    async def scenario() -> None:
        world = World()
        world.gate = asyncio.Event()
        admitter = make(world, limit=0)
        task = await running(admitter)
        await admitter.enqueue([job("in-flight")])
        await settle()
        drained = asyncio.create_task(admitter.drain(timeout=5))
        await settle()
        assert not drained.done()  # still waiting for the create
        world.gate.set()
        await drained
        assert world.live == {"in-flight"}
        await admitter.enqueue([job("too-late")])
        await settle()
        assert world.created == ["in-flight"]
        await stop(task)

    run(scenario)


def test_drain_gives_up_after_its_timeout() -> None:
    async def scenario() -> None:
        world = World()
        world.gate = asyncio.Event()  # never set: the create hangs
        admitter = make(world, limit=0)
        task = await running(admitter)
        await admitter.enqueue([job("hangs")])
        await settle()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await admitter.drain(timeout=0.05)
        assert loop.time() - started < 1
        assert world.creating == 0  # the hung create was cancelled, not left behind
        await stop(task)

    run(scenario)


def test_no_more_creates_run_at_once_than_the_concurrency_even_without_a_limit() -> None:
    async def scenario() -> None:
        world = World()
        world.gate = asyncio.Event()
        admitter = make(world, limit=0, concurrency=3)
        task = await running(admitter)
        await admitter.enqueue([job(f"job-{i}") for i in range(50)])
        await settle()
        assert world.creating == 3
        assert len(asyncio.all_tasks()) < 10  # the backlog waits in the heap, not as parked tasks
        world.gate.set()
        for _ in range(30):
            await settle()
        assert len(world.created) == 50
        assert world.most_at_once >= 3
        await stop(task)

    run(scenario)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    limit=st.integers(1, 6),
    fail_rate=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_nothing_leaks_after_a_thousand_random_create_and_finish_cycles(
    seed: int, limit: int, fail_rate: float
) -> None:
    """At every step the limit holds; at the end every job was created once and nothing is in flight."""

    async def scenario() -> None:
        rng = random.Random(seed)
        world, clock = World(), Clock()
        world.outcome = lambda j: rng.random() >= fail_rate
        world.turns = lambda: rng.randint(0, 3)
        admitter = make(world, limit=limit, concurrency=3, clock=clock)
        task = await running(admitter)
        enqueued = 0
        for _ in range(1000):
            roll = rng.random()
            if roll < 0.5:
                await admitter.enqueue([job(f"job-{enqueued}", rng.randint(0, 3))])
                enqueued += 1
            elif world.live and roll < 0.9:
                finish(admitter, world, rng.choice(sorted(world.live)))
            else:
                clock.now += rng.choice([0.001, 1.0, 30.0])
            await asyncio.sleep(0)
            assert len(world.live) + world.creating <= limit
        while len(world.created) < enqueued or world.live or world.creating:
            for uuid in sorted(world.live):
                finish(admitter, world, uuid)
            clock.now += UNSEEN_EXPIRY_SECONDS + 1
            admitter.pod_changed(None)
            await settle()
        assert sorted(world.created) == sorted(f"job-{i}" for i in range(enqueued))
        clock.now += UNSEEN_EXPIRY_SECONDS + 1
        assert admitter.in_flight() == 0
        assert world.most_at_once <= limit
        await stop(task)

    run(scenario)
