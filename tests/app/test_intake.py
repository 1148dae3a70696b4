"""``Intake``: de-duplication, micro-batching (≤ batch size, within a window), cancel, requeue, TTLs.

The batching loop runs for real; ``confirm`` and ``accept`` are recorders, ``has_pod`` is a set, and the
clock that ages bookkeeping is injected (the batch window itself is a real, short asyncio sleep).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from app.buildkite.queries import JobRecord
from app.intake import CANCELLED_TTL_SECONDS, DROPPED_TTL_SECONDS, MAX_CONFIRMS_IN_FLIGHT, Intake
from app.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.accepted: list[list[str]] = []
        self.pods: set[str] = set()
        self.metrics = Metrics()

    async def confirm(self, batch: list[str]) -> None:
        self.batches.append(list(batch))

    async def accept(self, records: list[JobRecord]) -> None:
        self.accepted.append([r.uuid for r in records])


def make(
    recorder: Recorder, *, batch_size: int = 100, window: float = 0.0, clock: Clock | None = None
) -> Intake:
    return Intake(
        batch_size=batch_size,
        window_seconds=window,
        confirm=recorder.confirm,
        accept=recorder.accept,
        has_pod=recorder.pods.__contains__,
        metrics=recorder.metrics,
        clock=clock or Clock(),
    )


def record(uuid: str) -> JobRecord:
    return JobRecord(uuid, "scheduled", ("queue=kubernetes",), {}, "true", 0)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def eventually(predicate: Callable[[], object], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


async def with_loop(intake: Intake, body: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(intake.run())
    try:
        await body()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def duplicates(recorder: Recorder) -> float:
    value = recorder.metrics.registry.get_sample_value(
        "buildkite_controller_duplicates_avoided_total", {"stage": "intake"}
    )
    return value or 0.0


# --- de-duplication -------------------------------------------------------------------------------------


def test_a_duplicate_webhook_is_refused_and_counted() -> None:
    recorder = Recorder()
    intake = make(recorder)
    assert intake.submit("a") is True
    assert intake.submit("a") is False
    assert intake.submit("A") is False  # UUIDs are compared lower-case
    assert duplicates(recorder) == 2
    assert list(intake.entries) == ["a"]


def test_a_job_whose_pod_exists_is_a_duplicate() -> None:
    recorder = Recorder()
    recorder.pods.add("has-pod")
    intake = make(recorder)
    assert intake.submit("has-pod") is False
    assert "has-pod" not in intake.entries


@pytest.mark.parametrize("stage", ["pending", "confirming", "queued", "waiting", "creating"])
def test_a_job_in_any_live_stage_is_a_duplicate(stage: str) -> None:
    intake = make(Recorder())
    intake.mark("a", stage)
    assert intake.submit("a") is False


@pytest.mark.parametrize("stage", ["done", "dropped"])
def test_a_finished_job_is_remembered_for_the_ttl_then_accepted_again(stage: str) -> None:
    clock = Clock()
    intake = make(Recorder(), clock=clock)
    intake.mark("a", stage)
    clock.now += DROPPED_TTL_SECONDS
    assert intake.submit("a") is False
    clock.now += 1
    assert intake.submit("a") is True


def test_forget_finished_trims_old_bookkeeping_only() -> None:
    clock = Clock()
    intake = make(Recorder(), clock=clock)
    intake.mark("old", "done")
    intake.cancel("cancelled")
    clock.now += DROPPED_TTL_SECONDS + 1
    intake.mark("recent", "dropped")
    intake.submit("pending")
    intake.forget_finished()
    assert set(intake.entries) == {"recent", "pending"}
    assert intake.is_cancelled("cancelled")
    clock.now += CANCELLED_TTL_SECONDS
    intake.forget_finished()
    assert not intake.is_cancelled("cancelled")
    assert intake.submit("cancelled") is True  # a cancel is forgotten after an hour


def test_sweep_records_new_to_us_are_accepted_and_known_ones_counted() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.pods.add("has-pod")
        intake = make(recorder)
        intake.submit("from-webhook")
        fresh, known = await intake.submit_confirmed(
            [record("from-webhook"), record("has-pod"), record("new-1"), record("new-2")]
        )
        assert [r.uuid for r in fresh] == ["new-1", "new-2"] and known == 2
        assert recorder.accepted == [["new-1", "new-2"]]
        assert intake.entries["new-1"].stage == "confirming" and not intake.announced("new-1")
        assert intake.announced("from-webhook")
        _, known_again = await intake.submit_confirmed([record("new-1")])
        assert known_again == 1 and len(recorder.accepted) == 1

    run(scenario)


def test_a_sweep_with_nothing_new_calls_nothing() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        intake = make(recorder)
        assert await intake.submit_confirmed([]) == ([], 0)
        assert recorder.accepted == []

    run(scenario)


# --- batching -------------------------------------------------------------------------------------------


def test_a_burst_is_cut_into_batches_of_at_most_100() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        intake = make(recorder, window=0.01)
        uuids = [f"job-{i:03d}" for i in range(250)]
        for uuid in uuids:
            intake.submit(uuid)

        async def body() -> None:
            await eventually(lambda: sum(map(len, recorder.batches)) == 250, "every UUID confirmed")

        await with_loop(intake, body)
        assert [len(b) for b in recorder.batches] == [100, 100, 50]
        assert [u for b in recorder.batches for u in b] == uuids
        assert all(intake.entries[u].stage == "confirming" for u in uuids)

    run(scenario)


def test_a_smaller_batch_size_is_honoured() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        intake = make(recorder, batch_size=3)
        for i in range(7):
            intake.submit(f"j{i}")

        async def body() -> None:
            await eventually(lambda: sum(map(len, recorder.batches)) == 7, "every UUID confirmed")

        await with_loop(intake, body)
        assert [len(b) for b in recorder.batches] == [3, 3, 1]

    run(scenario)


def test_uuids_arriving_within_the_window_share_one_batch() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        intake = make(recorder, window=0.2)

        async def body() -> None:
            intake.submit("first")
            await settle()  # the loop woke and now waits out the window
            assert recorder.batches == []
            intake.submit("second")
            await eventually(lambda: recorder.batches, "the batch")
            await settle()
            assert recorder.batches == [["first", "second"]]
            intake.submit("third")  # after the window closed: a batch of its own
            await eventually(lambda: len(recorder.batches) == 2, "the second batch")
            assert recorder.batches[1] == ["third"]

        await with_loop(intake, body)

    run(scenario)


def test_without_a_window_a_single_uuid_is_sent_at_once() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        intake = make(recorder, window=0)

        async def body() -> None:
            intake.submit("a")
            await settle()
            assert recorder.batches == [["a"]]

        await with_loop(intake, body)

    run(scenario)


def test_while_confirms_are_busy_new_uuids_pile_up_into_one_batch() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        release = asyncio.Event()

        async def slow_confirm(batch: list[str]) -> None:
            recorder.batches.append(list(batch))
            await release.wait()  # a GraphQL round trip that has not come back yet

        intake = Intake(
            batch_size=100,
            window_seconds=0,
            confirm=slow_confirm,
            accept=recorder.accept,
            has_pod=recorder.pods.__contains__,
            metrics=recorder.metrics,
        )

        async def body() -> None:
            for uuid in ("a", "b"):  # each goes out alone: nothing else is in flight
                intake.submit(uuid)
                await settle()
            for index in range(30):  # a burst while MAX_CONFIRMS_IN_FLIGHT confirms are out
                intake.submit(f"burst-{index}")
                await settle()
            assert MAX_CONFIRMS_IN_FLIGHT == 2 and recorder.batches == [["a"], ["b"]]
            release.set()
            await eventually(lambda: len(recorder.batches) == 3, "the piled-up batch")
            assert recorder.batches[2] == [f"burst-{index}" for index in range(30)]

        await with_loop(intake, body)

    run(scenario)


# --- cancel and requeue ---------------------------------------------------------------------------------


def test_a_job_cancelled_before_confirm_is_never_confirmed() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        intake = make(recorder, window=0.05)

        async def body() -> None:
            intake.submit("keep")
            intake.submit("cancelled")
            intake.cancel("CANCELLED")
            await eventually(lambda: recorder.batches, "the batch")
            await settle()
            assert recorder.batches == [["keep"]]
            assert intake.entries["cancelled"].stage == "dropped"
            assert intake.submit("cancelled") is False  # a late duplicate webhook

        await with_loop(intake, body)

    run(scenario)


def test_cancel_does_not_rewrite_a_job_already_creating() -> None:
    intake = make(Recorder())
    intake.mark("a", "creating")
    intake.cancel("a")
    assert intake.entries["a"].stage == "creating"  # create checks is_cancelled itself
    assert intake.is_cancelled("a")


def test_requeue_sends_the_uuids_again_except_cancelled_ones() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        intake = make(recorder, window=0)

        async def body() -> None:
            intake.submit("a")
            intake.submit("b")
            await eventually(lambda: recorder.batches, "the first batch")
            intake.cancel("b")
            intake.requeue(["a", "b"])
            await eventually(lambda: len(recorder.batches) == 2, "the retry")
            assert recorder.batches == [["a", "b"], ["a"]]

        await with_loop(intake, body)

    run(scenario)


# --- outcome --------------------------------------------------------------------------------------------


def test_outcome_resolves_when_the_job_settles() -> None:
    async def scenario() -> None:
        intake = make(Recorder())
        intake.submit("a")
        intake.mark("b", "done")
        future = intake.outcome("a")
        assert not future.done()
        intake.mark("a", "creating")
        assert not future.done()
        intake.mark("a", "waiting")
        assert await future == "waiting"
        assert await intake.outcome("b") == "done"

    run(scenario)


def test_a_crashing_confirm_drops_its_batch_so_the_sweep_can_pick_it_up_later() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        clock = Clock()

        async def crash(batch: list[str]) -> None:
            raise RuntimeError("bug")

        intake = Intake(
            batch_size=100,
            window_seconds=0,
            confirm=crash,
            accept=recorder.accept,
            has_pod=recorder.pods.__contains__,
            metrics=recorder.metrics,
            clock=clock,
        )

        async def body() -> None:
            intake.submit("job-1")
            await eventually(lambda: intake.entries["job-1"].stage == "dropped", "the batch dropped")

        await with_loop(intake, body)
        clock.now += 61
        _, known = await intake.submit_confirmed([record("job-1")])
        assert known == 0 and recorder.accepted == [["job-1"]]

    run(scenario)
