"""``JobBook``: the transition table is enforced for every pair of stages, sightings de-duplicate, and
tombstones keep a job whose pod ran from ever becoming new work again — with every table bounded.

The clock is injected; a job is put in a stage only by legal moves through the public API.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.jobs import BEFORE_POD, ENDED, MAX_TRAIL, TRANSITIONS, IllegalMove, JobBook, PhaseTimer, Stage
from tests.support import Clock

U = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
KEEP = 600.0
TOMBSTONE = 6 * 3600.0


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def make(clock: Clock | None = None, *, max_ended: int = 1000, timer: PhaseTimer | None = None) -> JobBook:
    return JobBook(
        replica="r1",
        max_ended=max_ended,
        ended_keep_seconds=KEEP,
        tombstone_seconds=TOMBSTONE,
        timer=timer,
        clock=clock or Clock(),
        wall_clock=lambda: 1.7e9,
    )


def put_in(book: JobBook, key: str, stage: Stage) -> None:
    """Bring a new job to ``stage`` along legal moves only."""
    assert book.sighted(key, source="webhook")
    path = [Stage.CONFIRMING, Stage.QUEUED, Stage.CREATING, Stage.CREATED]
    if stage in path:
        for step in path[: path.index(stage) + 1]:
            book.move(key, step, "test")
    elif stage is Stage.FINISHED:
        for step in path:
            book.move(key, step, "test")
        book.end(key, Stage.FINISHED, "test")
    elif stage is Stage.FAILED:
        for step in path[:3]:
            book.move(key, step, "test")
        book.end(key, Stage.FAILED, "test", "bad config")
    elif stage in ENDED:
        book.end(key, stage, "test", f"ended {stage}")
    record = book.get(key)
    assert record is not None and record.stage is stage


def stage_of(book: JobBook, key: str = U) -> Stage | None:
    record = book.get(key)
    return None if record is None else record.stage


# --- the transition table --------------------------------------------------------------------------------

ACTIVE = [stage for stage in Stage if stage not in ENDED]
PAIRS = [(a, b) for a, b in itertools.product(ACTIVE, Stage) if a is not b]


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_an_active_job_moves_exactly_where_the_table_allows(source: Stage, target: Stage) -> None:
    book = make()
    put_in(book, U, source)
    act = book.end if target in ENDED else book.move
    if target in TRANSITIONS[source]:
        act(U, target, "test")
        assert stage_of(book) is target
        assert (book.get(U) in book.in_flight()) is (target not in ENDED)
    else:
        with pytest.raises(IllegalMove):
            act(U, target, "test")
        assert stage_of(book) is source  # a refused move changes nothing
        assert book.sizes()["active"] == 1


@pytest.mark.parametrize("target", sorted(ENDED), ids=str)
def test_move_never_reaches_an_end_only_end_does(target: Stage) -> None:
    # An end reached through ``move`` would leave the record among the active ones, never trimmed.
    book = make()
    put_in(book, U, Stage.SEEN)
    with pytest.raises(IllegalMove):
        book.move(U, target, "test")
    assert stage_of(book) is Stage.SEEN and book.sizes() == {"active": 1, "ended": 0, "tombstones": 0}


@pytest.mark.parametrize("target", ACTIVE, ids=str)
def test_end_refuses_a_stage_that_is_not_an_end(target: Stage) -> None:
    book = make()
    put_in(book, U, Stage.SEEN)
    with pytest.raises(IllegalMove):
        book.end(U, target, "test")
    assert book.sizes()["ended"] == 0


@pytest.mark.parametrize(("source", "target"), list(itertools.product(sorted(ENDED), Stage)))
def test_an_ended_job_never_moves_by_move(source: Stage, target: Stage) -> None:
    # Ended jobs come back only through a sighting (``sighted``, ``pod_seen``), tested below.
    book = make()
    put_in(book, U, source)
    with pytest.raises(IllegalMove):
        book.move(U, target, "test")
    assert stage_of(book) is source


def test_ending_an_ended_or_unknown_job_only_notes_it() -> None:
    book = make()
    put_in(book, U, Stage.DROPPED)
    book.end(U, Stage.FAILED, "late", "too late")
    book.end(uuid(9), Stage.FAILED, "late")
    record = book.get(U)
    assert record is not None and record.stage is Stage.DROPPED and record.trail[-1].what == "late"
    assert book.get(uuid(9)) is None


def test_the_tables_stages_are_consistent() -> None:
    assert set(TRANSITIONS) == set(Stage)
    assert BEFORE_POD | {Stage.CREATED} | ENDED == set(Stage)
    for end in ENDED:  # an ended job comes back only as new work or because its pod showed up
        assert TRANSITIONS[end] <= {Stage.SEEN, Stage.QUEUED, Stage.CREATED}


# --- sightings ------------------------------------------------------------------------------------------


def test_a_job_is_new_once_and_every_later_sighting_is_a_duplicate() -> None:
    book = make()
    assert book.sighted(U, source="webhook") is True
    assert book.sighted(U.upper(), source="webhook") is False  # one spelling of a UUID
    assert book.sighted(f"  {U}\n", source="relay") is False
    assert book.sighted(U, source="sweep", still_scheduled=True) is False  # active: not retaken
    record = book.get(U)
    assert record is not None and record.announced
    assert [step.what for step in record.trail] == ["webhook", "webhook", "relay", "sweep"]
    assert all(step.detail == "duplicate" for step in record.trail[1:])
    assert book.sizes() == {"active": 1, "ended": 0, "tombstones": 0}


def test_a_sweep_sighting_does_not_count_as_announced() -> None:
    book = make()
    assert book.sighted(U, source="sweep", still_scheduled=True)
    record = book.get(U)
    assert record is not None and not record.announced


@pytest.mark.parametrize("end", [Stage.DROPPED, Stage.HANDED_OVER], ids=str)
def test_a_still_scheduled_sighting_retakes_a_dropped_or_handed_over_job(end: Stage) -> None:
    book = make()
    put_in(book, U, end)
    assert book.sighted(U, source="webhook") is False  # a webhook says nothing about now
    assert book.sighted(U, source="sweep", still_scheduled=True) is True
    assert stage_of(book) is Stage.SEEN
    assert book.sizes() == {"active": 1, "ended": 0, "tombstones": 0}
    record = book.get(U)  # active again: its last life's ending is not shown as its outcome
    assert record is not None and (record.outcome, record.reason, record.ended_at) == (None, None, None)


@pytest.mark.parametrize("end", [Stage.FINISHED, Stage.FAILED, Stage.CANCELLED], ids=str)
def test_a_still_scheduled_sighting_never_retakes_a_job_that_ran_failed_or_was_cancelled(end: Stage) -> None:
    book = make()
    put_in(book, U, end)
    assert book.sighted(U, source="sweep", still_scheduled=True) is False
    assert stage_of(book) is end and book.sizes()["active"] == 0


@pytest.mark.parametrize("end", [Stage.DROPPED, Stage.HANDED_OVER], ids=str)
def test_a_dropped_job_whose_pod_was_seen_is_never_retaken(end: Stage) -> None:
    # E.g. a follower handed the job over, then its watch saw the leader's pod: the tombstone wins.
    book = make()
    put_in(book, U, end)
    book.pod_seen(U, phase="Pending", deleted=False)
    book.pod_seen(U, phase="Running", deleted=True)
    assert stage_of(book) is Stage.FINISHED
    assert book.sighted(U, source="sweep", still_scheduled=True) is False
    assert book.pod_ever_seen(U) and book.sizes()["active"] == 0


def test_duplicate_pod_after_retention_a_late_sighting_of_a_forgotten_job_is_not_new_work() -> None:
    """Issue 8's duplicate: the pod ran, finished and was deleted; the record ended and was trimmed;
    a late webhook or a stale sweep page names the job again. Nothing may create it a second time."""
    clock = Clock()
    book = make(clock)
    put_in(book, U, Stage.CREATING)
    book.pod_seen(U, phase="Pending", deleted=False)
    assert stage_of(book) is Stage.CREATED
    clock.advance(30)
    book.pod_seen(U, phase="Succeeded", deleted=False)
    clock.advance(5)
    book.pod_seen(U, phase="Succeeded", deleted=True)  # retention over: the pod is gone
    assert stage_of(book) is Stage.FINISHED
    clock.advance(KEEP + 1)
    book.forget_old()
    assert book.get(U) is None and book.sizes() == {"active": 0, "ended": 0, "tombstones": 1}

    assert book.sighted(U, source="sweep", still_scheduled=True) is False
    assert book.sighted(U, source="webhook") is False
    assert book.sighted(U, source="relay") is False
    assert book.get(U) is None and book.sizes()["active"] == 0


def test_a_pod_made_by_another_replica_tombstones_a_job_this_replica_never_had() -> None:
    clock = Clock()
    book = make(clock)
    book.pod_seen(U, phase="Running", deleted=False)
    assert stage_of(book) is Stage.CREATED
    book.pod_seen(U, phase="Succeeded", deleted=True)
    assert stage_of(book) is Stage.FINISHED
    clock.advance(KEEP + 1)
    book.forget_old()
    assert book.sighted(U, source="sweep", still_scheduled=True) is False


def test_a_deleted_pod_of_an_unknown_job_leaves_only_a_tombstone() -> None:
    book = make()
    book.pod_seen(U, phase="Succeeded", deleted=True)
    assert book.get(U) is None and book.pod_ever_seen(U)
    assert book.sighted(U, source="webhook") is False


def test_tombstones_expire_after_their_ttl_and_not_before() -> None:
    clock = Clock()
    book = make(clock)
    book.pod_seen(U, phase="Succeeded", deleted=True)
    book.pod_seen(uuid(2), phase="Succeeded", deleted=True)
    clock.advance(TOMBSTONE)
    book.forget_old()
    assert book.pod_ever_seen(U)
    clock.advance(1)
    book.forget_old()
    assert not book.pod_ever_seen(U) and book.sizes()["tombstones"] == 0
    assert book.sighted(U, source="sweep", still_scheduled=True) is True  # six hours on, new work


def test_a_tombstone_counts_from_the_last_sighting_of_the_pod_so_a_long_pod_keeps_its_protection() -> None:
    # A pod that runs longer than the TTL (a long build, a raised activeDeadlineSeconds) must still
    # leave a full tombstone behind when it is finally deleted.
    clock = Clock()
    book = make(clock)
    book.pod_seen(uuid(1), phase="Pending", deleted=False)  # another job's pod, seen once
    put_in(book, U, Stage.CREATING)
    book.pod_seen(U, phase="Running", deleted=False)
    clock.advance(TOMBSTONE + 3600)
    book.pod_seen(U, phase="Succeeded", deleted=True)  # seven hours later, done and deleted
    clock.advance(KEEP + 1)
    book.forget_old()
    assert book.get(U) is None and not book.pod_ever_seen(uuid(1))
    assert book.pod_ever_seen(U) and book.sighted(U, source="sweep", still_scheduled=True) is False
    clock.advance(TOMBSTONE - KEEP)  # the TTL counted from the deletion
    book.forget_old()
    assert not book.pod_ever_seen(U) and book.sizes()["tombstones"] == 0


def test_a_pod_of_a_failed_job_does_not_bring_it_back() -> None:
    book = make()
    put_in(book, U, Stage.FAILED)
    book.pod_seen(U, phase="Pending", deleted=False)
    assert stage_of(book) is Stage.FAILED and book.pod_ever_seen(U)


@pytest.mark.parametrize("end", [Stage.DROPPED, Stage.HANDED_OVER, Stage.CANCELLED], ids=str)
def test_a_pod_of_an_ended_job_brings_it_back_as_created(end: Stage) -> None:
    book = make()
    put_in(book, U, end)
    book.pod_seen(U, phase="Pending", deleted=False)
    record = book.get(U)
    assert record is not None and record.stage is Stage.CREATED
    assert (record.outcome, record.reason, record.ended_at) == (None, None, None)
    assert record in book.in_flight()


# --- cancel ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [Stage.SEEN, Stage.CONFIRMING, Stage.QUEUED], ids=str)
def test_a_cancel_before_the_create_ends_the_job(stage: Stage) -> None:
    book = make()
    put_in(book, U, stage)
    assert book.cancel(U) is stage
    record = book.get(U)
    assert record is not None and record.stage is Stage.CANCELLED and record.cancelled
    assert book.sizes()["active"] == 0


def test_a_cancel_while_creating_marks_the_job_and_its_pods_end_ends_it_cancelled() -> None:
    book = make()
    put_in(book, U, Stage.CREATING)
    assert book.cancel(U) is Stage.CREATING
    assert stage_of(book) is Stage.CREATING
    book.pod_seen(U, phase="Pending", deleted=False)
    book.pod_seen(U, phase="Pending", deleted=True)
    record = book.get(U)
    assert record is not None and record.stage is Stage.CANCELLED and record.outcome == "cancelled"


def test_a_cancel_of_an_ended_job_is_remembered_if_a_sweep_retakes_it() -> None:
    book = make()
    put_in(book, U, Stage.DROPPED)
    assert book.cancel(U) is None
    assert book.sighted(U, source="sweep", still_scheduled=True)
    record = book.get(U)
    assert record is not None and record.cancelled


# --- bounds ---------------------------------------------------------------------------------------------


def test_a_trail_keeps_its_start_and_its_latest_steps_within_max_trail() -> None:
    book = make()
    put_in(book, U, Stage.CREATED)
    for n in range(5 * MAX_TRAIL):
        book.note(U, "pod", f"phase flap {n}")
    record = book.get(U)
    assert record is not None and len(record.trail) == MAX_TRAIL
    assert record.trail[0].what == "webhook"
    assert record.trail[-1].detail == f"phase flap {5 * MAX_TRAIL - 1}"


def test_ended_records_are_capped_at_max_ended_oldest_first() -> None:
    book = make(max_ended=3)
    for n in range(5):
        put_in(book, uuid(n), Stage.DROPPED)
    assert book.sizes()["ended"] == 3
    assert [stage_of(book, uuid(n)) for n in range(5)] == [None, None, *[Stage.DROPPED] * 3]
    assert [r.uuid for r in book.recent(10)] == [uuid(4), uuid(3), uuid(2)]
    assert [r.uuid for r in book.recent(1)] == [uuid(4)]


def test_ended_records_are_forgotten_after_their_keep_time_and_not_before() -> None:
    clock = Clock()
    book = make(clock)
    put_in(book, uuid(1), Stage.DROPPED)
    clock.advance(KEEP / 2)
    put_in(book, uuid(2), Stage.DROPPED)
    clock.advance(KEEP / 2 + 1)
    book.forget_old()
    assert book.get(uuid(1)) is None and stage_of(book, uuid(2)) is Stage.DROPPED


def test_sizes_return_to_zero_once_the_clock_is_past_every_ttl() -> None:
    clock = Clock()
    book = make(clock)
    for n in range(300):
        key = uuid(n)
        match n % 5:
            case 0:  # ran here
                put_in(book, key, Stage.CREATING)
                book.pod_seen(key, phase="Running", deleted=False)
                book.pod_seen(key, phase="Succeeded", deleted=True)
            case 1:  # ran elsewhere
                book.pod_seen(key, phase="Succeeded", deleted=False)
                book.pod_seen(key, phase="Succeeded", deleted=True)
            case 2:
                put_in(book, key, Stage.HANDED_OVER)
            case 3:
                put_in(book, key, Stage.QUEUED)
                book.cancel(key)
            case _:
                put_in(book, key, Stage.FAILED)
        clock.advance(1)
    assert book.sizes() == {"active": 0, "ended": 300, "tombstones": 120}
    clock.advance(KEEP + 1)
    book.forget_old()
    assert book.sizes() == {"active": 0, "ended": 0, "tombstones": 120}
    clock.advance(TOMBSTONE)
    book.forget_old()
    assert book.sizes() == {"active": 0, "ended": 0, "tombstones": 0}


# --- time -----------------------------------------------------------------------------------------------


class Phases:
    def __init__(self) -> None:
        self.observed: list[tuple[str, float]] = []

    def observe_phase(self, phase: str, seconds: float) -> None:
        self.observed.append((phase, seconds))


def test_phase_timings_are_observed_once_each_from_the_first_sighting() -> None:
    clock = Clock()
    phases = Phases()
    book = make(clock, timer=phases)
    assert book.sighted(U, source="webhook")
    clock.advance(0.25)
    book.move(U, Stage.CONFIRMING, "test")
    book.move(U, Stage.QUEUED, "test")
    book.move(U, Stage.CONFIRMING, "recheck")
    book.move(U, Stage.QUEUED, "recheck")  # again: not a second observation
    clock.advance(0.5)
    book.move(U, Stage.CREATING, "test")
    book.move(U, Stage.CREATED, "test")
    assert phases.observed == [("confirmed", 0.25), ("pod_created", 0.75)]


def test_confirmation_age_follows_the_injected_clock() -> None:
    clock = Clock()
    book = make(clock)
    put_in(book, U, Stage.QUEUED)
    assert book.confirmation_age(U) == float("inf")
    book.confirmed(U)
    clock.advance(12)
    assert book.confirmation_age(U) == 12
    book.confirmed(U, at=clock.now - 3)
    assert book.confirmation_age(U) == 3
    assert book.confirmation_age(uuid(7)) == float("inf")


def test_next_change_returns_on_a_move_and_after_its_timeout_without_one() -> None:
    async def scenario() -> None:
        book = make()
        put_in(book, U, Stage.SEEN)
        waiter = asyncio.create_task(book.next_change(timeout=30))
        await asyncio.sleep(0)
        assert not waiter.done()
        book.move(U, Stage.CONFIRMING, "test")
        await asyncio.wait_for(waiter, timeout=5)
        await book.next_change(timeout=0.001)  # nothing moves: returns after the timeout

    asyncio.run(scenario())
