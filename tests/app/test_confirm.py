"""``Confirmer``: one GraphQL request per batch; each verdict ends the job's record as dropped with the
reason, or moves it to queued and hands a ``Job`` to admission; a Buildkite failure asks intake to retry
the whole batch; a job whose record moved on during the request (cancelled, its pod seen) is left alone.

``FakeConfirmGraphQL`` has the two members of ``GraphQLClient`` the stage uses (``confirm_jobs`` and
``budget``) and can run a hook while "the request is out". Records are put where intake leaves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from app.buildkite.queries import JobRecord
from app.confirm import REQUEUE_DELAY_SECONDS, Confirmer, to_job
from app.errors import BuildkiteError, BuildkiteUnavailable, GraphQLErrors, RateLimited
from app.intake import Retry
from app.jobs import JobBook, Stage
from app.metrics import Metrics
from app.tags import ControllerTags
from podspec import Job
from tests.support import Clock


def uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


A, B, C, D = (uuid(n) for n in range(1, 5))


@dataclass
class Budget:
    remaining: int | None


class FakeConfirmGraphQL:
    """``confirm_jobs`` over a dict of records; records each request; may fail with ``error``."""

    def __init__(self, records: Sequence[JobRecord] = ()) -> None:
        self.records = {r.uuid: r for r in records}
        self.requests: list[list[str]] = []
        self.with_cluster: list[bool] = []
        self.error: BuildkiteError | None = None
        self.budget: Budget | None = None
        self.during: Callable[[], None] = lambda: None  # runs while the request is out

    async def confirm_jobs(
        self, uuids: Sequence[str], *, with_cluster: bool = False
    ) -> dict[str, JobRecord | None]:
        self.requests.append(list(uuids))
        self.with_cluster.append(with_cluster)
        self.during()
        if self.error is not None:
            raise self.error
        return {u: self.records.get(u) for u in uuids}


class Admission:
    """Records every ``enqueue`` call (one per batch is expected)."""

    def __init__(self) -> None:
        self.calls: list[list[Job]] = []

    def enqueue(self, jobs: Sequence[Job]) -> None:
        self.calls.append(list(jobs))

    def uuids(self) -> list[str]:
        return [job.uuid for call in self.calls for job in call]


def record(
    key: str, *, state: str = "scheduled", rules: tuple[str, ...] = ("queue=kubernetes",), priority: int = 0
) -> JobRecord:
    return JobRecord(key, state, rules, {"BUILDKITE_PLUGINS": "[]"}, f"echo {key}", priority)


class World:
    def __init__(self, records: Sequence[JobRecord] = (), *, cluster_uuid: str | None = None) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.book = JobBook(replica="r1", clock=self.clock)
        self.graphql = FakeConfirmGraphQL(records)
        self.admission = Admission()
        self.confirmer = Confirmer(
            graphql=self.graphql,  # type: ignore[arg-type]
            tags=ControllerTags.from_settings(queues=["kubernetes"], tags=["os=linux"]),
            book=self.book,
            admitter=self.admission,
            metrics=self.metrics,
            clock=self.clock,
            cluster_uuid=cluster_uuid,
        )

    def confirming(self, *keys: str) -> None:
        """As intake leaves a batch: sighted, then confirming."""
        for key in keys:
            assert self.book.sighted(key, source="webhook")
            self.book.move(key, Stage.CONFIRMING, "confirm")

    def stage(self, key: str) -> Stage | None:
        found = self.book.get(key)
        return None if found is None else found.stage

    def reason(self, key: str) -> str | None:
        found = self.book.get(key)
        return None if found is None else found.reason

    def outcomes(self) -> dict[str, float]:
        samples = self.metrics.registry.get_sample_value
        labels = (
            "scheduled",
            "unknown",
            "state_running",
            "state_canceled",
            "not_our_tags",
            "not_our_cluster",
            "cancelled",
        )
        name = "buildkite_controller_jobs_confirmed_total"
        return {label: value for label in labels if (value := samples(name, {"outcome": label}))}

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.metrics.registry.get_sample_value(f"buildkite_controller_{name}", labels or {})


def test_a_scheduled_job_with_our_tags_is_queued_and_handed_to_admission() -> None:
    world = World([record(A, priority=7, rules=("queue=kubernetes", "os=linux"))])
    world.confirming(A)
    world.graphql.during = lambda: world.clock.advance(2.5)  # the answer takes 2.5 s
    assert asyncio.run(world.confirmer.confirm([A])) is None
    assert world.admission.calls == [
        [
            Job(
                uuid=A,
                command=f"echo {A}",
                env={"BUILDKITE_PLUGINS": "[]"},
                agent_tags={"queue": "kubernetes", "os": "linux"},
                priority=7,
            )
        ]
    ]
    assert world.stage(A) is Stage.QUEUED
    # "Scheduled" is what Buildkite said when asked: the confirmation's age counts from the question.
    assert world.book.confirmation_age(A) == 2.5
    assert world.outcomes() == {"scheduled": 1}


def test_one_graphql_request_per_batch_and_one_hand_over_to_admission() -> None:
    keys = [uuid(n) for n in range(100)]
    world = World([record(k) for k in keys])
    world.confirming(*keys)
    asyncio.run(world.confirmer.confirm(keys))
    assert world.graphql.requests == [keys]
    assert len(world.admission.calls) == 1 and world.admission.uuids() == keys
    assert world.metric("graphql_calls_total", {"operation": "confirm"}) == 1


@pytest.mark.parametrize(
    ("found", "verdict"),
    [
        pytest.param(None, "unknown", id="unknown-to-buildkite"),
        pytest.param(record(A, state="running"), "state_running", id="already-running"),
        pytest.param(record(A, state="canceled"), "state_canceled", id="cancelled-in-buildkite"),
        pytest.param(record(A, rules=("queue=elsewhere",)), "not_our_tags", id="other-queue"),
        pytest.param(record(A, rules=("queue=kubernetes", "os=windows")), "not_our_tags", id="tag-value"),
        pytest.param(record(A, rules=()), "not_our_tags", id="default-queue"),
    ],
)
def test_a_job_that_is_not_ours_to_run_ends_dropped_with_the_verdict(
    found: JobRecord | None, verdict: str
) -> None:
    world = World([found] if found else [])
    world.confirming(A)
    asyncio.run(world.confirmer.confirm([A]))
    assert world.admission.calls == []
    assert world.stage(A) is Stage.DROPPED and world.reason(A) == verdict
    assert world.book.sizes()["active"] == 0
    assert world.outcomes() == {verdict: 1}


CLUSTER = "7b4f3c2a-1d5e-4f6a-9b8c-0d1e2f3a4b5c"


def in_cluster(key: str, cluster: str | None) -> JobRecord:
    return JobRecord(key, "scheduled", ("queue=kubernetes",), {}, "true", 0, cluster, has_cluster=True)


def test_with_a_cluster_only_our_clusters_jobs_are_queued_and_the_query_asks_for_it() -> None:
    other = "5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
    world = World(
        [in_cluster(A, CLUSTER), in_cluster(B, other), in_cluster(C, None), record(D)],
        cluster_uuid=CLUSTER.upper(),  # as configured; Buildkite's answers are lower case
    )
    world.confirming(A, B, C, D)
    asyncio.run(world.confirmer.confirm([A, B, C, D]))
    assert world.graphql.with_cluster == [True]
    assert world.admission.uuids() == [A]
    # Another cluster, no cluster, and a record that does not say (D) are all not ours.
    assert [world.reason(k) for k in (B, C, D)] == ["not_our_cluster"] * 3
    assert world.outcomes() == {"scheduled": 1, "not_our_cluster": 3}


def test_a_cancel_sticks_to_a_job_a_sweep_takes_again_and_drops_it_as_cancelled() -> None:
    # Dropped, then cancelled in Buildkite, then a stale sweep page still lists it as scheduled.
    world = World()
    world.confirming(A)
    world.book.end(A, Stage.DROPPED, "confirm", "state_running")
    world.book.cancel(A)
    assert world.book.sighted(A, source="sweep", still_scheduled=True)
    assert world.book.sighted(B, source="sweep", still_scheduled=True)
    asyncio.run(world.confirmer.accept([record(A), record(B)]))
    assert world.stage(A) is Stage.DROPPED and world.reason(A) == "cancelled"
    assert world.admission.uuids() == [B]
    assert world.outcomes() == {"cancelled": 1, "scheduled": 1}


def test_a_mixed_batch_admits_only_the_good_ones_in_order() -> None:
    world = World([record(A), record(B, state="finished"), record(D, priority=3)])
    world.confirming(A, B, C, D)
    asyncio.run(world.confirmer.confirm([A, B, C, D]))
    assert world.admission.calls and world.admission.uuids() == [A, D]
    assert [world.stage(k) for k in (A, B, C, D)] == [
        Stage.QUEUED,
        Stage.DROPPED,
        Stage.DROPPED,
        Stage.QUEUED,
    ]


def test_admission_is_not_called_when_nothing_survives() -> None:
    world = World()
    world.confirming(A, B)
    asyncio.run(world.confirmer.confirm([A, B]))
    assert world.admission.calls == []


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RateLimited(3), id="rate-limited"),
        pytest.param(BuildkiteUnavailable("502 from graphql"), id="unavailable"),
        pytest.param(GraphQLErrors(["Internal server error"], transient=True), id="graphql-errors"),
    ],
)
def test_a_buildkite_failure_asks_for_a_retry_of_the_whole_batch(error: BuildkiteError) -> None:
    world = World([record(A), record(B)])
    world.confirming(A, B)
    world.graphql.error = error
    retry = asyncio.run(world.confirmer.confirm([A, B]))
    assert isinstance(retry, Retry)
    assert retry.uuids == [A, B] and retry.after == REQUEUE_DELAY_SECONDS and str(error) in retry.reason
    assert world.admission.calls == []
    assert world.stage(A) is world.stage(B) is Stage.CONFIRMING  # untouched: intake moves them back
    assert world.metric("graphql_errors_total", {"operation": "confirm"}) == 1
    assert world.outcomes() == {}


def test_a_job_whose_record_moved_on_during_the_request_is_left_alone() -> None:
    world = World([record(A), record(B), record(C)])
    world.confirming(A, B, C)

    def meanwhile() -> None:
        world.book.cancel(A)  # job.finished webhook
        world.book.pod_seen(B, phase="Pending", deleted=False)  # another replica's pod

    world.graphql.during = meanwhile
    asyncio.run(world.confirmer.confirm([A, B, C]))
    assert world.admission.uuids() == [C]
    assert world.stage(A) is Stage.CANCELLED and world.stage(B) is Stage.CREATED
    assert world.stage(C) is Stage.QUEUED


def test_a_job_whose_pod_showed_up_is_not_dropped_by_an_unknown_verdict() -> None:
    world = World()  # Buildkite does not know B (yet): the pod we saw is what counts
    world.confirming(B)
    world.graphql.during = lambda: world.book.pod_seen(B, phase="Running", deleted=False)
    asyncio.run(world.confirmer.confirm([B]))
    assert world.stage(B) is Stage.CREATED and world.admission.calls == []


def test_records_from_the_sweep_are_judged_the_same_way_without_a_request() -> None:
    world = World()
    good, other, gone = uuid(10), uuid(11), uuid(12)
    for key in (good, other, gone):
        assert world.book.sighted(key, source="sweep", still_scheduled=True)
    asyncio.run(
        world.confirmer.accept(
            [record(good), record(other, rules=("queue=x",)), record(gone, state="expired")]
        )
    )
    assert world.admission.uuids() == [good] and world.stage(good) is Stage.QUEUED
    assert world.reason(other) == "not_our_tags" and world.reason(gone) == "state_expired"
    assert world.graphql.requests == []  # the sweep's records need no second query
    assert world.book.confirmation_age(good) == 0


def test_recheck_answers_each_jobs_verdict_in_one_request_and_moves_nothing() -> None:
    world = World([record(A), record(B, state="running"), record(C, rules=("queue=x",))])
    world.confirming(A, B, C, D)
    verdicts = asyncio.run(world.confirmer.recheck([A, B, C, D]))
    assert verdicts == {A: "scheduled", B: "state_running", C: "not_our_tags", D: "unknown"}
    assert world.graphql.requests == [[A, B, C, D]]
    assert {world.stage(k) for k in (A, B, C, D)} == {Stage.CONFIRMING}  # admission acts on them
    assert world.metric("graphql_calls_total", {"operation": "recheck"}) == 1


def test_recheck_raises_a_buildkite_failure_for_admission_to_handle() -> None:
    world = World([record(A)])
    world.graphql.error = BuildkiteUnavailable("503")
    with pytest.raises(BuildkiteUnavailable):
        asyncio.run(world.confirmer.recheck([A]))


@pytest.mark.parametrize("fails", [False, True], ids=["answered", "failed"])
def test_the_remaining_graphql_budget_is_exported_after_every_request(fails: bool) -> None:
    world = World([record(A)])
    world.confirming(A)
    world.graphql.budget = Budget(remaining=1234)
    world.graphql.error = BuildkiteUnavailable("502") if fails else None
    asyncio.run(world.confirmer.confirm([A]))
    assert world.metric("graphql_budget_remaining") == 1234
    world.graphql.budget = Budget(remaining=999)
    world.graphql.error = None
    asyncio.run(world.confirmer.recheck([A]))
    assert world.metric("graphql_budget_remaining") == 999


def test_an_unknown_budget_leaves_the_gauge_alone() -> None:
    world = World([record(A)])
    world.confirming(A)
    world.graphql.budget = Budget(remaining=None)
    asyncio.run(world.confirmer.confirm([A]))
    assert world.metric("graphql_budget_remaining") == 0


def test_to_job_parses_agent_query_rules_into_tags_and_lower_cases_the_uuid() -> None:
    job = to_job(record(A.upper(), rules=("queue=kubernetes", "arch=arm64", "flag")))
    assert job.uuid == A
    assert job.agent_tags == {"queue": "kubernetes", "arch": "arm64", "flag": ""}
