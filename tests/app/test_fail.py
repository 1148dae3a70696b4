"""JobFailer: a job is failed in Buildkite at most once, whatever asks how often; every waiter gets an
answer that says whether the job's pod may go; what it remembers is bounded."""

from __future__ import annotations

import asyncio

import pytest

from app import fail as fail_module
from app.buildkite.agent_api import FailOutcome
from app.errors import BuildkiteUnavailable
from app.fail import JobFailer
from app.metrics import Metrics

UUID = "0199a1b2-0000-4000-8000-000000000001"


class FakeAgentAPI:
    def __init__(self, *outcomes: FailOutcome | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None  # when set, calls wait for it

    async def fail_job(self, uuid: str, message: str) -> FailOutcome:
        self.calls.append((uuid, message))
        await asyncio.sleep(0)  # let concurrent callers pile up behind this one
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failer(api: FakeAgentAPI, clock: Clock | None = None, metrics: Metrics | None = None) -> JobFailer:
    return JobFailer(api, metrics=metrics or Metrics(), clock=clock or Clock())


def test_concurrent_and_repeated_failures_call_buildkite_once() -> None:
    api = FakeAgentAPI(FailOutcome.FAILED)
    jobs = failer(api)

    async def scenario() -> list[FailOutcome]:
        first = await asyncio.gather(*(jobs.fail(UUID, reason="image_pull", message="m") for _ in range(5)))
        return [*first, await jobs.fail(UUID.upper(), reason="image_pull", message="again")]

    assert asyncio.run(scenario()) == [FailOutcome.FAILED] * 6
    assert len(api.calls) == 1


@pytest.mark.parametrize("outcome", [FailOutcome.HELD_BY_ANOTHER, FailOutcome.ENDED])
def test_a_job_that_is_not_ours_is_not_failed_and_the_answer_says_whether_its_pod_may_go(
    outcome: FailOutcome,
) -> None:
    api = FakeAgentAPI(outcome)
    jobs = failer(api)

    async def scenario() -> tuple[FailOutcome, FailOutcome]:
        return await jobs.fail(UUID, reason="r", message="m"), await jobs.fail(UUID, reason="r", message="m")

    assert asyncio.run(scenario()) == (outcome, outcome)
    assert len(api.calls) == 1
    assert outcome.pod_may_be_deleted is (outcome is FailOutcome.ENDED)


def test_held_by_another_is_asked_again_after_a_minute_failed_is_not() -> None:
    api = FakeAgentAPI(FailOutcome.HELD_BY_ANOTHER, FailOutcome.FAILED)
    clock = Clock()
    jobs = failer(api, clock)

    async def scenario() -> list[FailOutcome]:
        answers = [await jobs.fail(UUID, reason="r", message="m")]
        clock.now += fail_module.HELD_TTL_SECONDS - 1
        answers.append(await jobs.fail(UUID, reason="r", message="m"))
        clock.now += 2
        answers.append(await jobs.fail(UUID, reason="r", message="m"))
        clock.now += fail_module.HELD_TTL_SECONDS + 1
        answers.append(await jobs.fail(UUID, reason="r", message="m"))
        return answers

    held, failed = FailOutcome.HELD_BY_ANOTHER, FailOutcome.FAILED
    assert asyncio.run(scenario()) == [held, held, failed, failed]
    assert len(api.calls) == 2


def test_a_buildkite_error_is_retry_and_may_be_retried_later() -> None:
    api = FakeAgentAPI(BuildkiteUnavailable("HTTP 503"), FailOutcome.FAILED)
    jobs = failer(api)

    async def scenario() -> tuple[FailOutcome, FailOutcome]:
        return await jobs.fail(UUID, reason="r", message="m"), await jobs.fail(UUID, reason="r", message="m")

    assert asyncio.run(scenario()) == (FailOutcome.RETRY, FailOutcome.FAILED)
    assert len(api.calls) == 2


def test_an_unexpected_error_resolves_every_waiter_with_retry(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeAgentAPI(RuntimeError("a bug in the agent client"), FailOutcome.FAILED)
    jobs = failer(api)

    async def scenario() -> tuple[list[FailOutcome], FailOutcome]:
        waiters = asyncio.gather(*(jobs.fail(UUID, reason="r", message="m") for _ in range(4)))
        answers = await asyncio.wait_for(waiters, timeout=5)  # none may hang
        return answers, await jobs.fail(UUID, reason="r", message="m")

    answers, later = asyncio.run(scenario())
    assert answers == [FailOutcome.RETRY] * 4
    assert later is FailOutcome.FAILED
    assert "a bug in the agent client" in caplog.text


def test_a_cancelled_first_caller_leaves_no_waiter_hanging() -> None:
    api = FakeAgentAPI(FailOutcome.FAILED)
    api.gate = asyncio.Event()
    jobs = failer(api)

    async def scenario() -> list[FailOutcome]:
        first = asyncio.create_task(jobs.fail(UUID, reason="r", message="m"))
        await asyncio.sleep(0)
        others = [asyncio.create_task(jobs.fail(UUID, reason="r", message="m")) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        answers = await asyncio.wait_for(asyncio.gather(*others), timeout=5)
        with pytest.raises(asyncio.CancelledError):
            await first
        return answers

    assert asyncio.run(scenario()) == [FailOutcome.RETRY] * 3


def test_a_job_id_that_is_not_a_uuid_is_retry_not_a_crash() -> None:
    api = FakeAgentAPI(FailOutcome.FAILED)
    assert asyncio.run(failer(api).fail("../register", reason="r", message="m")) is FailOutcome.RETRY
    assert api.calls == []


def test_without_an_agent_api_there_is_no_failer() -> None:
    with pytest.raises(ValueError, match="agent token"):
        JobFailer(None, metrics=Metrics())  # type: ignore[arg-type]


def test_what_is_remembered_is_bounded_by_count_and_age(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fail_module, "MAX_REMEMBERED", 5)
    api = FakeAgentAPI(FailOutcome.FAILED)
    clock = Clock()
    jobs = failer(api, clock)
    uuids = [f"0199a1b2-0000-4000-8000-0000000000{i:02x}" for i in range(8)]

    async def scenario() -> list[int]:
        sizes = []
        for uuid in uuids:
            await jobs.fail(uuid, reason="r", message="m")
            sizes.append(jobs.remembered())
        clock.now += fail_module.SETTLED_TTL_SECONDS + 1
        await jobs.fail(uuids[-1], reason="r", message="m")  # forgotten: asked again
        sizes.append(jobs.remembered())
        return sizes

    assert asyncio.run(scenario()) == [1, 2, 3, 4, 5, 5, 5, 5, 1]
    assert len(api.calls) == 9


def test_the_report_time_is_measured_from_detection() -> None:
    metrics, clock = Metrics(), Clock()
    jobs = failer(FakeAgentAPI(FailOutcome.FAILED), clock, metrics)
    asyncio.run(jobs.fail(UUID, reason="image_pull", message="m", detected_at=clock.now - 2.5))
    registry = metrics.registry
    assert registry.get_sample_value("buildkite_controller_failure_report_seconds_sum") == 2.5
    assert registry.get_sample_value("buildkite_controller_jobs_failed_total", {"reason": "image_pull"}) == 1
