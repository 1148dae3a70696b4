"""Failing a job through the agent API: the call sequence, its bodies and headers, retries and
refusals, against an in-test double behind httpx.MockTransport (the fake Buildkite is tested too,
in test_buildkite_clients_live.py)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from app.buildkite import agent_api
from app.buildkite.agent_api import AgentAPI, FailOutcome
from app.buildkite.agent_log import HEADER, MAX_LOG_BYTES, failure_log, split_chunks
from app.buildkite.retry import RetryPolicy
from app.errors import BuildkiteAuthError, BuildkiteError, BuildkiteUnavailable

ENDPOINT = "https://agent.example.test/v3"
AGENT_TOKEN = "bkct_agent-token-do-not-log"
ACCESS_TOKEN = "bkaa_access-token"
JOB = "0190c5e8-1d2b-4f6a-9c3e-7a1b2c3d4e5f"
POLICY = RetryPolicy(attempts=3, base_seconds=1.0, cap_seconds=4.0)
T = TypeVar("T")
Reply = httpx.Response | Exception | Callable[[], httpx.Response | Exception]


class AgentDouble:
    """Answers the agent API like Buildkite would for one scheduled job, unless told otherwise.

    ``replies[(method, last_path_segment)]`` queues special replies for a call, consumed in order;
    a reply may be a response, an exception to raise, or a callable producing either (to change
    ``state`` as a request that "landed" would). ``state`` follows the default replies.
    """

    def __init__(self, registration: dict[str, Any] | None = None) -> None:
        self.registration = registration or {"id": "a1", "access_token": ACCESS_TOKEN, "endpoint": ""}
        self.replies: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.state = "scheduled"

    def reply(self, method: str, suffix: str, *replies: Reply) -> None:
        self.replies.setdefault((method, suffix), []).extend(replies)

    def calls(self) -> list[str]:
        return [f"{r.method} {r.url.path.removeprefix('/v3/')}" for r in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.rsplit("/", 1)[-1]
        queued = self.replies.get((request.method, path))
        if queued:
            reply = queued.pop(0)
            reply = reply() if callable(reply) else reply
            if isinstance(reply, Exception):
                raise reply
            return reply
        return self.default(request.method, path)

    def default(self, method: str, path: str) -> httpx.Response:
        moves = {
            "acquire": ("scheduled", "accepted"),
            "start": ("accepted", "running"),
            "finish": ("running", "finished"),
        }
        if path == "register":
            return httpx.Response(200, json=self.registration)
        if method == "GET" and path == JOB:
            return httpx.Response(200, json={"state": self.state})
        if path in moves:
            before, after = moves[path]
            if self.state != before:
                return httpx.Response(422, json={"message": f"job is {self.state}"})
            self.state = after
        if path == "acquire":
            return httpx.Response(200, json={"id": JOB, "state": "accepted", "env": {}, "token": "job-token"})
        return httpx.Response(200, json={})

    def landed(self, state: str) -> Callable[[], Exception]:
        """A reply for a request that took effect (the job moved to ``state``) but whose reply was lost."""

        def reply() -> Exception:
            self.state = state
            return httpx.ReadTimeout("reply lost")

        return reply

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def fail(self, message: str = "The image could not be pulled.", job: str = JOB) -> FailOutcome:
        return self.run(lambda api: api.fail_job(job, message))

    def run(
        self, scenario: Callable[[AgentAPI], Awaitable[T]], clock: Callable[[], float] | None = None
    ) -> T:
        """Run ``scenario`` with one ``AgentAPI`` aimed at this double (one API across several calls)."""

        async def main() -> T:
            async with httpx.AsyncClient(transport=httpx.MockTransport(self)) as http:
                api = AgentAPI(
                    http,
                    endpoint=ENDPOINT,
                    agent_token=AGENT_TOKEN,
                    tags=["queue=kubernetes"],
                    retry=POLICY,
                    sleep=self.sleep,
                    rng=lambda: 0.0,
                    clock=clock or (lambda: 1_700_000_000.25),
                    hostname="controller-0",
                )
                return await scenario(api)

        return asyncio.run(main())

    def body(self, call: str) -> Any:
        request = next(r for r in self.requests if f"{r.method} {r.url.path.removeprefix('/v3/')}" == call)
        return json.loads(request.content)

    def log(self) -> bytes:
        chunks = [r for r in self.requests if r.url.path.endswith("/chunks")]
        return b"".join(gzip.decompress(r.content) for r in chunks)


FULL_SEQUENCE = [
    "POST register",
    f"PUT jobs/{JOB}/acquire",
    f"PUT jobs/{JOB}/start",
    f"POST jobs/{JOB}/chunks",
    f"PUT jobs/{JOB}/finish",
    "POST disconnect",
]


def test_failing_a_job_registers_acquires_starts_logs_finishes_and_disconnects() -> None:
    double = AgentDouble()
    assert double.fail() is FailOutcome.FAILED
    assert double.calls() == FULL_SEQUENCE
    assert double.sleeps == []


def test_register_uses_the_agent_token_and_asks_not_to_be_dispatched_work() -> None:
    double = AgentDouble()
    double.fail()
    register = double.requests[0]
    assert register.headers["Authorization"] == f"Token {AGENT_TOKEN}"
    body = json.loads(register.content)
    assert body["ignore_in_dispatches"] is True
    assert "acquire-job" in body["features"]
    assert body["meta_data"] == ["queue=kubernetes"]
    assert body["hostname"] == "controller-0"
    assert body["name"].startswith("buildkite-controller")


def test_every_call_after_register_uses_the_access_token() -> None:
    double = AgentDouble()
    double.fail()
    assert {r.headers["Authorization"] for r in double.requests[1:]} == {f"Token {ACCESS_TOKEN}"}
    assert double.requests[1].headers["X-Buildkite-Lock-Acquire-Job"] == "1"


def test_start_and_finish_report_a_minus_one_stack_error_with_timestamps() -> None:
    double = AgentDouble()
    double.fail()
    assert double.body(f"PUT jobs/{JOB}/start") == {"started_at": "2023-11-14T22:13:20.250Z"}
    assert double.body(f"PUT jobs/{JOB}/finish") == {
        "exit_status": "-1",
        "signal_reason": "stack_error",
        "finished_at": "2023-11-14T22:13:20.250Z",
        "chunks_failed_count": 0,
    }


def test_the_message_is_the_gzip_compressed_job_log() -> None:
    double = AgentDouble()
    double.fail("Pod failed: ErrImagePull for image `nope:latest`.")
    (chunk,) = [r for r in double.requests if r.url.path.endswith("/chunks")]
    assert chunk.headers["Content-Encoding"] == "gzip"
    assert chunk.headers["Content-Type"] == "text/plain"
    log = double.log()
    assert log == (HEADER + "Pod failed: ErrImagePull for image `nope:latest`.\n").encode()
    assert dict(chunk.url.params) == {"sequence": "1", "offset": "0", "size": str(len(log))}


def test_the_endpoint_from_register_replaces_the_configured_one() -> None:
    double = AgentDouble({"access_token": ACCESS_TOKEN, "endpoint": "https://edge.example.test/v3/"})
    double.fail()
    assert [r.url.host for r in double.requests] == ["agent.example.test"] + ["edge.example.test"] * 5
    assert str(double.requests[1].url) == f"https://edge.example.test/v3/jobs/{JOB}/acquire"


def test_buildkite_request_headers_from_register_are_echoed() -> None:
    headers = {"Buildkite-Timeout-Milliseconds": "5000", "X-Other": "no"}
    double = AgentDouble({"access_token": ACCESS_TOKEN, "request_headers": headers})
    double.fail()
    assert double.requests[2].headers["Buildkite-Timeout-Milliseconds"] == "5000"
    assert "X-Other" not in double.requests[2].headers


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("accepted", FailOutcome.HELD_BY_ANOTHER),
        ("running", FailOutcome.HELD_BY_ANOTHER),
        ("canceling", FailOutcome.HELD_BY_ANOTHER),
        ("scheduled", FailOutcome.HELD_BY_ANOTHER),  # odd after a 422: treated as held, the safe side
        ("finished", FailOutcome.ENDED),
        ("canceled", FailOutcome.ENDED),
        ("expired", FailOutcome.ENDED),
        (None, FailOutcome.HELD_BY_ANOTHER),  # Buildkite would not say
    ],
)
def test_a_job_that_cannot_be_acquired_is_left_alone_and_says_who_has_it(
    state: str | None, outcome: FailOutcome
) -> None:
    double = AgentDouble()
    double.reply("PUT", "acquire", httpx.Response(422, json={"message": "Job already assigned"}))
    if state is None:
        double.reply("GET", JOB, httpx.Response(403, json={"message": "not your job"}))
    else:
        double.state = state
    assert double.fail() is outcome
    assert outcome.pod_may_be_deleted is (outcome is FailOutcome.ENDED)
    assert double.calls() == [
        "POST register",
        f"PUT jobs/{JOB}/acquire",
        f"GET jobs/{JOB}",
        "POST disconnect",
    ]


def test_only_failed_and_ended_let_the_pod_go() -> None:
    assert {o for o in FailOutcome if o.pod_may_be_deleted} == {FailOutcome.FAILED, FailOutcome.ENDED}
    assert {o for o in FailOutcome if not o.settled} == {FailOutcome.RETRY}


def test_a_locked_job_is_retried_after_retry_after() -> None:
    double = AgentDouble()
    double.reply("PUT", "acquire", httpx.Response(423, headers={"Retry-After": "1.5"}))
    assert double.fail() is FailOutcome.FAILED
    assert double.sleeps == [1.5]
    sequences = [
        r.headers["X-Buildkite-Backoff-Sequence"] for r in double.requests if r.url.path.endswith("acquire")
    ]
    assert sequences == ["0", "1"]


def test_a_job_that_stays_locked_raises_and_still_disconnects() -> None:
    double = AgentDouble()
    double.reply("PUT", "acquire", *[httpx.Response(423, headers={"Retry-After": "2"})] * POLICY.attempts)
    with pytest.raises(BuildkiteError, match="423"):
        double.fail()
    assert double.calls()[-1] == "POST disconnect"
    assert double.sleeps == [2.0] * (POLICY.attempts - 1)


@pytest.mark.parametrize(
    "trouble",
    [httpx.Response(429, headers={"Retry-After": "0.25"}), httpx.Response(502), httpx.ConnectError("reset")],
    ids=["429", "502", "connection reset"],
)
def test_start_is_retried_through_429_and_5xx_and_connection_errors(trouble: Reply) -> None:
    double = AgentDouble()
    double.reply("PUT", "start", trouble)
    assert double.fail() is FailOutcome.FAILED
    assert double.calls().count(f"PUT jobs/{JOB}/start") == 2
    assert len(double.sleeps) == 1


def test_persistent_5xx_gives_up_after_the_attempts_and_keeps_the_agent_that_holds_the_job() -> None:
    double = AgentDouble()
    double.reply("PUT", "finish", *[httpx.Response(503)] * POLICY.attempts)
    with pytest.raises(BuildkiteUnavailable, match="HTTP 503"):
        double.fail()
    assert double.calls().count(f"PUT jobs/{JOB}/finish") == POLICY.attempts
    assert "POST disconnect" not in double.calls()  # it holds a running job: only it can finish it
    assert double.sleeps == [0.5, 1.0]  # rng=0: half of base·2ⁿ


def test_a_register_that_fails_leaves_nothing_to_resume() -> None:
    double = AgentDouble()
    double.reply("POST", "register", *[httpx.Response(503)] * POLICY.attempts)

    async def scenario(api: AgentAPI) -> tuple[int, FailOutcome]:
        with pytest.raises(BuildkiteUnavailable):
            await api.fail_job(JOB, "m")
        return api.unfinished(), await api.fail_job(JOB, "m")

    assert double.run(scenario) == (0, FailOutcome.FAILED)


# --- a report that stopped half-way resumes with the same agent ----------------------------------


def fail_then_retry(double: AgentDouble, first: str = "first", second: str = "second") -> list[Any]:
    """``fail_job`` twice on one ``AgentAPI``: the first raises, the second's outcome is returned."""
    marks: list[Any] = []

    async def scenario(api: AgentAPI) -> list[Any]:
        with pytest.raises(BuildkiteError):
            await api.fail_job(JOB, first)
        marks.append(len(double.requests))
        marks.append(api.unfinished())
        outcome = await api.fail_job(JOB, second)
        return [*marks, outcome, api.unfinished()]

    return double.run(scenario)


def test_a_finish_that_failed_is_retried_by_the_same_agent_without_a_new_register() -> None:
    double = AgentDouble()
    double.reply("PUT", "finish", *[httpx.Response(503)] * POLICY.attempts)
    before, kept, outcome, left = fail_then_retry(double)
    assert (kept, outcome, left) == (1, FailOutcome.FAILED, 0)
    assert double.calls()[before:] == [f"PUT jobs/{JOB}/finish", "POST disconnect"]
    assert double.calls().count("POST register") == 1
    assert {r.headers["Authorization"] for r in double.requests[1:]} == {f"Token {ACCESS_TOKEN}"}
    assert double.state == "finished"
    assert double.log() == failure_log("first")  # the log went up once


def test_a_start_that_failed_resumes_at_start() -> None:
    double = AgentDouble()
    double.reply("PUT", "start", *[httpx.Response(502)] * POLICY.attempts)
    before, kept, outcome, _ = fail_then_retry(double)
    assert (kept, outcome) == (1, FailOutcome.FAILED)
    assert double.calls()[before:] == [
        f"PUT jobs/{JOB}/start",
        f"POST jobs/{JOB}/chunks",
        f"PUT jobs/{JOB}/finish",
        "POST disconnect",
    ]
    assert double.log() == failure_log("second")


def test_an_acquire_that_may_have_landed_is_resumed_by_the_agent_that_sent_it() -> None:
    # Every try timed out but the first reached Buildkite: the job is ours. A new agent would be
    # refused (422) and leave it accepted under an agent nobody drives.
    double = AgentDouble()
    double.reply("PUT", "acquire", double.landed("accepted"), *[httpx.Response(502)] * (POLICY.attempts - 1))
    before, kept, outcome, _ = fail_then_retry(double)
    assert (kept, outcome) == (1, FailOutcome.FAILED)
    assert double.calls()[before:][:2] == [f"PUT jobs/{JOB}/acquire", f"PUT jobs/{JOB}/start"]
    assert double.state == "finished"


def test_a_job_cancelled_while_its_report_was_half_done_ends() -> None:
    double = AgentDouble()

    def cancelled() -> httpx.Response:
        double.state = "canceled"
        return httpx.Response(503)

    double.reply("PUT", "finish", *[httpx.Response(503)] * (POLICY.attempts - 1), cancelled)
    double.reply("PUT", "finish", httpx.Response(422, json={"message": "Job is canceled"}))
    _, kept, outcome, left = fail_then_retry(double)
    assert (kept, outcome, left) == (1, FailOutcome.ENDED, 0)
    assert double.calls()[-1] == "POST disconnect"


def test_a_refused_acquire_is_not_kept() -> None:
    double = AgentDouble()
    double.reply("PUT", "acquire", httpx.Response(400, json={"message": "bad"}))

    async def scenario(api: AgentAPI) -> int:
        with pytest.raises(BuildkiteError, match="acquire"):
            await api.fail_job(JOB, "m")
        return api.unfinished()

    assert double.run(scenario) == 0
    assert double.calls()[-1] == "POST disconnect"


def test_kept_reports_are_bounded_by_count_and_age(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(agent_api, "MAX_UNFINISHED", 3)
    jobs = [f"0190c5e8-1d2b-4f6a-9c3e-7a1b2c3d4e{i:02x}" for i in range(5)]
    double = AgentDouble()
    now = [1_700_000_000.0]

    def finish_always_fails(request: httpx.Request) -> httpx.Response:
        double.requests.append(request)
        if request.url.path.endswith("/finish"):
            return httpx.Response(503)
        if request.method == "GET":
            return httpx.Response(200, json={"state": "running"})
        return httpx.Response(200, json={"id": "x", "access_token": ACCESS_TOKEN})

    async def scenario(api: AgentAPI) -> list[int]:
        sizes = []
        for job in jobs:
            with pytest.raises(BuildkiteUnavailable):
                await api.fail_job(job, "m")
            sizes.append(api.unfinished())
        now[0] += agent_api.UNFINISHED_TTL_SECONDS + 1
        with pytest.raises(BuildkiteUnavailable):
            await api.fail_job(jobs[0], "m")  # long gone: a new agent, kept alone
        sizes.append(api.unfinished())
        return sizes

    async def with_clock() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(finish_always_fails)) as http:
            api = AgentAPI(
                http,
                endpoint=ENDPOINT,
                agent_token=AGENT_TOKEN,
                retry=POLICY,
                sleep=double.sleep,
                rng=lambda: 0.0,
                clock=lambda: now[0],
                hostname="h",
            )
            return await scenario(api)

    assert asyncio.run(with_clock()) == [1, 2, 3, 3, 3, 1]
    assert "dropped the unfinished failure report" in caplog.text


def test_an_acquire_that_may_have_landed_is_resolved_by_starting_the_job() -> None:
    double = AgentDouble()
    # The first acquire reached Buildkite but the reply was lost; the retry then sees "taken".
    double.reply("PUT", "acquire", double.landed("accepted"))
    assert double.fail() is FailOutcome.FAILED
    assert double.calls().count(f"PUT jobs/{JOB}/acquire") == 2
    assert double.calls().count(f"PUT jobs/{JOB}/start") == 1
    assert double.calls()[-2:] == [f"PUT jobs/{JOB}/finish", "POST disconnect"]
    assert double.state == "finished"


def test_an_acquire_lost_to_another_agent_after_a_timeout_is_held_by_another() -> None:
    double = AgentDouble()
    double.state = "accepted"  # the pod's own agent got it
    double.reply("PUT", "acquire", httpx.ReadTimeout("lost reply"), httpx.Response(422))
    double.reply("PUT", "start", httpx.Response(422))
    assert double.fail() is FailOutcome.HELD_BY_ANOTHER
    assert f"PUT jobs/{JOB}/finish" not in double.calls()
    assert double.calls()[-1] == "POST disconnect"


def test_a_start_whose_reply_was_lost_carries_on_when_the_job_is_running() -> None:
    double = AgentDouble()
    double.reply("PUT", "start", double.landed("running"))
    assert double.fail() is FailOutcome.FAILED
    assert double.state == "finished"


def test_a_finish_whose_reply_was_lost_is_not_sent_again_once_the_job_is_finished() -> None:
    double = AgentDouble()
    double.reply("PUT", "finish", double.landed("finished"))
    assert double.fail() is FailOutcome.FAILED
    assert double.calls().count(f"PUT jobs/{JOB}/finish") == 2  # the lost one and the retry that saw 422
    assert double.calls()[-2:] == [f"GET jobs/{JOB}", "POST disconnect"]


def test_a_start_refused_for_a_job_that_is_not_running_is_an_error() -> None:
    double = AgentDouble()
    double.reply("PUT", "start", httpx.Response(403, json={"message": "not your job"}))
    with pytest.raises(BuildkiteAuthError, match="start job"):
        double.fail()


def test_finish_without_signal_reason_when_buildkite_refuses_it() -> None:
    double = AgentDouble()
    double.reply("PUT", "finish", httpx.Response(422, json={"message": "signal_reason is invalid"}))
    assert double.fail() is FailOutcome.FAILED
    assert double.state == "finished"
    finishes = [json.loads(r.content) for r in double.requests if r.url.path.endswith("/finish")]
    assert [("signal_reason" in body, body["exit_status"]) for body in finishes] == [
        (True, "-1"),
        (False, "-1"),
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_agent_token_is_an_auth_error_without_the_token(status: int) -> None:
    double = AgentDouble()
    double.reply("POST", "register", httpx.Response(status, json={"message": "Invalid token"}))
    with pytest.raises(BuildkiteAuthError) as caught:
        double.fail()
    assert AGENT_TOKEN not in str(caught.value)
    assert double.calls() == ["POST register"]


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, content=b"<html>"),
        httpx.Response(200, json={"access_token": ""}),
        httpx.Response(200, json=[]),
        httpx.Response(201, json={"access_token": 5}),
    ],
    ids=["not json", "empty access token", "json array", "token not a string"],
)
def test_a_malformed_register_reply_is_a_buildkite_error(reply: httpx.Response) -> None:
    double = AgentDouble()
    double.reply("POST", "register", reply)
    with pytest.raises(BuildkiteError, match="register"):
        double.fail()


def test_an_unexpected_status_names_the_call() -> None:
    double = AgentDouble()
    double.reply("POST", "chunks", httpx.Response(400, text="bad chunk " + "x" * 10_000))
    with pytest.raises(BuildkiteError, match=r"upload log of job .*HTTP 400: bad chunk") as caught:
        double.fail()
    assert len(str(caught.value)) < 400


def test_a_failed_disconnect_does_not_hide_the_outcome() -> None:
    double = AgentDouble()
    double.reply("POST", "disconnect", *[httpx.Response(500)] * POLICY.attempts)
    assert double.fail() is FailOutcome.FAILED


def test_a_job_id_that_is_not_a_uuid_is_refused_before_any_call() -> None:
    double = AgentDouble()
    with pytest.raises(ValueError):
        double.fail(job="../../register")
    assert double.requests == []


def test_the_agent_token_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    double = AgentDouble()
    double.reply("PUT", "start", httpx.Response(502))
    double.fail()
    assert "retry" in caplog.text
    assert AGENT_TOKEN not in caplog.text
    assert ACCESS_TOKEN not in caplog.text


# --- the log text (pure) -------------------------------------------------------------------------


def test_a_huge_message_is_cut_to_the_log_limit_and_says_so() -> None:
    log = failure_log("é" * 100_000)
    assert len(log) <= MAX_LOG_BYTES
    assert log.startswith(HEADER.encode())
    assert b"message truncated: showing" in log
    assert b"of 200000 bytes" in log
    log.decode("utf-8")  # never cut inside a character


def test_carriage_returns_and_a_missing_final_newline_are_tidied() -> None:
    assert failure_log("a\r\nb\n") == (HEADER + "a\nb\n").encode()


@pytest.mark.parametrize("limit", [None, 1, 7, 10_000])
def test_chunks_reassemble_to_the_log_with_consecutive_offsets(limit: int | None) -> None:
    text = failure_log("x" * 1000)
    chunks = split_chunks(text, limit)
    assert b"".join(gzip.decompress(compressed) for _, _, compressed in chunks) == text
    offsets = [offset for offset, _, _ in chunks]
    assert offsets == [sum(len(data) for _, data, _ in chunks[:i]) for i in range(len(chunks))]


def test_a_small_chunk_limit_from_acquire_splits_the_upload() -> None:
    double = AgentDouble()

    def acquire_with_small_chunks() -> httpx.Response:
        double.state = "accepted"
        return httpx.Response(200, json={"id": JOB, "chunks_max_size_bytes": 40})

    double.reply("PUT", "acquire", acquire_with_small_chunks)
    double.fail("y" * 100)
    chunks = [r for r in double.requests if r.url.path.endswith("/chunks")]
    assert len(chunks) > 1
    assert [r.url.params["sequence"] for r in chunks] == [str(i) for i in range(1, len(chunks) + 1)]
    assert double.log() == failure_log("y" * 100)
