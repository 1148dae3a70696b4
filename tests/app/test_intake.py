"""``Intake``: each job once, natural batching (no waiting window), leader → confirm, follower → relay,
retries after a back-off that lose nothing, and cancelled or refused UUIDs never handed on.

The batching loop runs for real on the event loop. The next stages are recorders that note the
injected clock at each call and can hold a batch "out" until the test releases it; the back-off
sleep is injected too, so a retry's wait is a number the test reads, not time it spends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import app.intake
from app.buildkite.queries import JobRecord
from app.intake import MAX_RETRY_SECONDS, RETRY_SECONDS, Intake, Retry
from app.jobs import JobBook, Stage
from app.metrics import Metrics
from tests.support import Clock, eventually, settle


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


A, B, C, D = (uuid(n) for n in range(1, 5))

Answer = Callable[[list[str]], Retry | None]


class Next:
    """A confirm stage and a relay in one recorder: every call with the clock's time and the stage
    each job was in at that moment; ``hold`` keeps the next batch out until ``release``."""

    def __init__(self, book: JobBook, clock: Clock) -> None:
        self.book = book
        self.clock = clock
        self.confirmed: list[tuple[float, list[str]]] = []
        self.relayed: list[tuple[float, list[str]]] = []
        self.accepted: list[list[str]] = []
        self.stages: list[list[Stage | None]] = []
        self.answers: list[Answer | Exception] = []  # one per call, then "all done"
        self.gate: asyncio.Event | None = None
        self.space = asyncio.Event()  # admission's room for more confirmed jobs
        self.space.set()

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        gate, self.gate = self.gate, None
        gate.set()

    def room(self) -> asyncio.Event:
        return self.space

    async def confirm(self, uuids: list[str]) -> Retry | None:
        self.confirmed.append((self.clock(), list(uuids)))
        return await self._answer(uuids)

    async def forward(self, uuids: list[str]) -> Retry | None:
        self.relayed.append((self.clock(), list(uuids)))
        return await self._answer(uuids)

    async def accept(self, records: list[JobRecord]) -> None:
        self.accepted.append([r.uuid for r in records])

    async def _answer(self, uuids: list[str]) -> Retry | None:
        self.stages.append([self._stage(u) for u in uuids])
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return None if answer is None else answer(uuids)

    def _stage(self, key: str) -> Stage | None:
        record = self.book.get(key)
        return None if record is None else record.stage

    def batches(self) -> list[list[str]]:
        return [batch for _, batch in self.confirmed]


class Sleeps:
    """The injected back-off sleep: records each wait and moves the clock by it; after ``hold`` the
    next wait lasts until ``release``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self.gate: asyncio.Event | None = None

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.gate is not None:
            await self.gate.wait()
            self.gate = None
        self.clock.advance(seconds)
        await asyncio.sleep(0)


class World:
    def __init__(self, *, batch_size: int = 100, leader: bool = True) -> None:
        self.clock = Clock()
        self.book = JobBook(replica="r1", clock=self.clock)
        self.next = Next(self.book, self.clock)
        self.sleeps = Sleeps(self.clock)
        self.metrics = Metrics()
        self.leader = leader
        self.intake = Intake(
            book=self.book,
            confirmer=self.next,
            relay=self.next,
            is_leader=lambda: self.leader,
            batch_size=batch_size,
            metrics=self.metrics,
            clock=self.clock,
            sleep=self.sleeps,
        )

    def stage(self, key: str) -> Stage | None:
        record = self.book.get(key)
        return None if record is None else record.stage

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(f"buildkite_controller_{name}", labels or {})
        return value or 0.0


def scenario(**world_args: object) -> Callable[[Callable[[World], Awaitable[None]]], Callable[[], None]]:
    """Run an async test body against a fresh world whose intake loop is running."""

    def wrap(body: Callable[[World], Awaitable[None]]) -> Callable[[], None]:
        def test() -> None:
            async def main() -> None:
                world = World(**world_args)  # type: ignore[arg-type]
                loop = asyncio.create_task(world.intake.run())
                try:
                    await body(world)
                finally:
                    loop.cancel()
                    await asyncio.gather(loop, return_exceptions=True)

            asyncio.run(asyncio.wait_for(main(), timeout=20))

        test.__name__, test.__qualname__, test.__doc__ = body.__name__, body.__qualname__, body.__doc__
        return test

    return wrap


def retry(after: float, reason: str = "busy") -> Answer:
    return lambda uuids: Retry(list(uuids), after=after, reason=reason)


# --- natural batching -----------------------------------------------------------------------------------


@scenario()
async def test_a_lone_uuid_is_handed_on_at_once_with_no_waiting_window(w: World) -> None:
    assert w.intake.submit(A)
    await settle(3)  # three loop turns, no time: a window of any length would not have passed
    assert w.next.confirmed == [(1000.0, [A])]
    assert w.sleeps.delays == []
    assert w.next.stages == [[Stage.CONFIRMING]]
    assert w.intake.pending() == 0


@scenario()
async def test_uuids_that_arrive_while_a_batch_is_out_leave_together_as_the_next_batch(w: World) -> None:
    w.next.hold()
    w.intake.submit(A)
    await eventually(lambda: w.next.confirmed, "the first batch")
    for key in (B, C, D):
        w.intake.submit(key)
    await settle()
    assert w.next.batches() == [[A]]  # one batch out at a time
    assert w.intake.pending() == 3
    w.next.release()
    await eventually(lambda: len(w.next.confirmed) == 2, "the second batch")
    await settle()
    assert w.next.batches() == [[A], [B, C, D]]
    assert w.sleeps.delays == []


@scenario(batch_size=3)
async def test_a_batch_holds_at_most_batch_size_uuids(w: World) -> None:
    w.next.hold()
    w.intake.submit(uuid(100))
    await eventually(lambda: w.next.confirmed, "the first batch")
    keys = [uuid(n) for n in range(8)]
    for key in keys:
        w.intake.submit(key)
    w.next.release()
    await eventually(lambda: len(w.next.confirmed) == 4, "every batch")
    assert w.next.batches()[1:] == [keys[0:3], keys[3:6], keys[6:8]]


@scenario(leader=False)
async def test_a_follower_relays_to_the_leader_and_never_confirms(w: World) -> None:
    w.intake.submit(A)
    await eventually(lambda: w.next.relayed, "the relay")
    assert w.next.relayed == [(1000.0, [A])] and w.next.confirmed == []
    assert w.next.stages == [[Stage.SEEN]]  # a follower does not confirm: no CONFIRMING
    w.leader = True
    w.intake.submit(B)
    await eventually(lambda: w.next.confirmed, "the confirm")
    assert w.next.batches() == [[B]] and len(w.next.relayed) == 1


# --- back-pressure from admission ----------------------------------------------------------------------


@scenario()
async def test_the_leader_holds_its_next_batch_while_admission_has_no_room(w: World) -> None:
    w.next.space.clear()  # admission holds a full batch of confirmed jobs, waiting for creates
    for key in (A, B, C):
        w.intake.submit(key)
    await settle(5)
    assert w.next.confirmed == [] and w.intake.pending() == 3
    assert [w.stage(key) for key in (A, B, C)] == [Stage.SEEN] * 3
    w.next.space.set()
    await eventually(lambda: w.next.confirmed, "the batch")
    await settle()
    assert w.next.batches() == [[A, B, C]]  # one batch for all that gathered meanwhile


@scenario(leader=False)
async def test_a_follower_relays_whatever_the_leaders_admission_holds(w: World) -> None:
    w.next.space.clear()  # this replica's own admission is not where the jobs go
    w.intake.submit(A)
    await eventually(lambda: w.next.relayed, "the relay")
    assert w.next.relayed == [(1000.0, [A])]


@scenario()
async def test_jobs_held_for_room_go_to_the_new_leader_at_once_when_leadership_is_lost(w: World) -> None:
    w.next.space.clear()
    w.intake.submit(A)
    await settle(5)
    assert w.next.confirmed == []
    w.leader = False
    w.intake.retry_now()  # what Controller.leadership_changed does
    await eventually(lambda: w.next.relayed, "the relay")
    assert w.next.relayed == [(1000.0, [A])] and w.next.confirmed == []


# --- retries --------------------------------------------------------------------------------------------


@scenario()
async def test_a_retry_brings_the_same_uuids_back_after_the_back_off_and_loses_nothing(w: World) -> None:
    def part(uuids: list[str]) -> Retry:
        # C was confirmed and queued; A and B could not be: only they come back.
        w.book.move(C, Stage.QUEUED, "confirmed")
        return Retry([A, B], after=2.0, reason="budget spent")

    w.next.answers.append(part)
    w.next.hold()
    for key in (A, B, C):
        w.intake.submit(key)
    await eventually(lambda: w.next.confirmed, "the first batch")
    w.intake.submit(D)  # arrives while the batch is out
    w.sleeps.hold()
    w.next.release()
    await eventually(lambda: w.sleeps.delays, "the back-off")
    await settle()
    assert len(w.next.confirmed) == 1  # nothing leaves during the back-off, not even D
    assert (w.stage(A), w.stage(B), w.stage(D)) == (Stage.SEEN, Stage.SEEN, Stage.SEEN)
    w.sleeps.release()
    await eventually(lambda: len(w.next.confirmed) == 2, "the retry")
    (first, _), (second, batch) = w.next.confirmed
    assert w.sleeps.delays == [2.0] and second - first == 2.0
    assert sorted(batch) == sorted([A, B, D])
    assert w.next.stages[1] == [Stage.CONFIRMING] * 3  # moved back to seen, then confirmed again
    assert w.stage(C) is Stage.QUEUED and w.intake.pending() == 0


@scenario()
async def test_retries_back_off_doubling_to_the_maximum_and_a_success_resets_it(w: World) -> None:
    w.next.answers.extend([retry(0.0)] * 7)
    w.intake.submit(A)
    await eventually(lambda: len(w.next.confirmed) == 8, "eight tries")
    expected = [min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2**n) for n in range(7)]
    assert w.sleeps.delays == expected and expected[-1] == MAX_RETRY_SECONDS
    w.next.answers.append(retry(0.0))
    w.intake.submit(B)
    await eventually(lambda: len(w.next.confirmed) == 10, "B and its retry")
    assert w.sleeps.delays[-1] == RETRY_SECONDS  # counted from the start again
    assert all(batch == [A] for batch in w.next.batches()[:8])


@scenario()
async def test_a_longer_retry_after_than_the_back_off_is_honoured(w: World) -> None:
    w.next.answers.append(retry(7.5, "rate limited"))
    w.intake.submit(A)
    await eventually(lambda: len(w.next.confirmed) == 2, "the retry")
    assert w.sleeps.delays == [7.5]


@scenario()
async def test_a_crashing_confirm_keeps_the_batch_for_a_retry(w: World) -> None:
    w.next.answers.append(RuntimeError("a bug"))
    w.intake.submit(A)
    w.intake.submit(B)
    await eventually(lambda: len(w.next.confirmed) == 2, "the retry")
    assert w.next.batches() == [[A, B], [A, B]]
    assert w.sleeps.delays == [RETRY_SECONDS]
    assert w.next.stages == [[Stage.CONFIRMING] * 2] * 2


@scenario(leader=False)
async def test_an_undelivered_relay_is_retried(w: World) -> None:
    w.next.answers.append(retry(1.0, "no leader known yet"))
    w.intake.submit(A)
    await eventually(lambda: len(w.next.relayed) == 2, "the retry")
    assert [batch for _, batch in w.next.relayed] == [[A], [A]] and w.sleeps.delays == [1.0]


@scenario()
async def test_a_job_cancelled_during_the_back_off_is_not_sent_again(w: World) -> None:
    w.next.answers.append(retry(3.0))
    w.sleeps.hold()
    w.intake.submit(A)
    w.intake.submit(B)
    await eventually(lambda: w.sleeps.delays, "the back-off")
    assert w.stage(A) is Stage.SEEN and w.intake.pending() == 2
    w.book.cancel(A)
    w.sleeps.release()
    await eventually(lambda: len(w.next.confirmed) == 2, "the retry")
    assert w.next.batches() == [[A, B], [B]]
    assert w.stage(A) is Stage.CANCELLED


# --- what is never handed on ----------------------------------------------------------------------------


@pytest.mark.parametrize("leader", [True, False], ids=["leader", "follower"])
def test_uuids_cancelled_while_waiting_are_not_sent(leader: bool) -> None:
    @scenario(leader=leader)
    async def body(w: World) -> None:
        sent = w.next.confirmed if leader else w.next.relayed
        w.next.hold()
        w.intake.submit(A)
        await eventually(lambda: sent, "the first batch")
        w.intake.submit(B)
        w.intake.submit(C)
        w.book.cancel(B)  # the job.finished webhook
        w.next.release()
        await eventually(lambda: len(sent) == 2, "the second batch")
        assert [batch for _, batch in sent] == [[A], [C]]
        assert w.sleeps.delays == []  # left out of the batch, not refused by a failing one
        assert w.stage(B) is Stage.CANCELLED

    body()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-a-uuid",
        "0199a1b2-c3d4-7e5f-8a9b",
        "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5bff",
        "' OR 1=1 --",
        "\x00",
    ],
)
def test_a_non_uuid_is_refused_and_leaves_no_record(value: str) -> None:
    world = World()
    assert world.intake.submit(value) is False
    assert world.intake.pending() == 0 and world.book.sizes() == {"active": 0, "ended": 0, "tombstones": 0}


@scenario()
async def test_a_uuid_is_taken_once_in_any_spelling(w: World) -> None:
    assert w.intake.submit(A.upper())
    assert not w.intake.submit(A)
    assert not w.intake.submit(f" {A} ", source="relay")
    await eventually(lambda: w.next.confirmed, "the batch")
    await settle()
    assert w.next.batches() == [[A]]
    assert w.metric("duplicates_avoided_total", {"stage": "intake"}) == 2


def test_a_full_intake_leaves_its_oldest_uuids_to_the_leaders_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.intake, "MAX_PENDING", 3)
    world = World(leader=False)
    for n in range(5):
        assert world.intake.submit(uuid(n))
    assert world.intake.pending() == 3
    assert [world.stage(uuid(n)) for n in range(5)] == [Stage.DROPPED] * 2 + [Stage.SEEN] * 3
    dropped = world.book.get(uuid(0))
    assert dropped is not None and dropped.reason is not None and "sweep" in dropped.reason
    assert world.metric("intake_pending") == 3


# --- the sweep's records ----------------------------------------------------------------------------------


def record(key: str) -> JobRecord:
    return JobRecord(key, "scheduled", ("queue=kubernetes",), {}, "true", 0)


@scenario()
async def test_the_leader_accepts_the_sweeps_new_records_directly(w: World) -> None:
    w.intake.submit(A)
    fresh, known = await w.intake.submit_confirmed([record(A), record(B), record(C)])
    assert [r.uuid for r in fresh] == [B, C] and known == 1
    assert w.next.accepted == [[B, C]]
    await settle()
    assert w.next.batches() == [[A]]  # nothing confirmed twice


@scenario(leader=False)
async def test_a_followers_sweep_records_go_to_the_leader_by_relay(w: World) -> None:
    fresh, known = await w.intake.submit_confirmed([record(A), record(B)])
    assert len(fresh) == 2 and known == 0
    await eventually(lambda: w.next.relayed, "the relay")
    assert [batch for _, batch in w.next.relayed] == [[A, B]] and w.next.accepted == []
