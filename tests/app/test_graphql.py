"""GraphQL client: query texts validate against Buildkite's real schema, responses parse, and the
transport retries what it should (429, 5xx, timeouts) through httpx.MockTransport with a fake sleep."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest

from app.buildkite.graphql import GraphQLClient
from app.buildkite.queries import (
    Document,
    JobRecord,
    build_confirm_jobs,
    build_job_states,
    build_scheduled_jobs,
    cluster_graphql_id,
    cluster_mismatch,
    parse_confirm_jobs,
    parse_env,
    parse_job_states,
    parse_scheduled_jobs,
)
from app.buildkite.retry import RateBudget, RetryPolicy
from app.errors import BuildkiteAuthError, BuildkiteError, BuildkiteUnavailable, GraphQLErrors, RateLimited

URL = "https://graphql.example.test/v1"
TOKEN = "bkua_do-not-log-me"
POLICY = RetryPolicy(attempts=4, base_seconds=1.0, cap_seconds=3.0, max_wait_seconds=60.0)
UUIDS = [str(uuid.UUID(int=i + 1)) for i in range(3)]
SCHEMA_FILES = [
    Path(__file__).resolve().parents[2] / "app" / "simulate" / "buildkite-schema.graphql",
    Path("/work/shared/reference/buildkite-schema.graphql"),
]


@pytest.fixture(scope="module")
def schema() -> graphql.GraphQLSchema:
    path = next(path for path in SCHEMA_FILES if path.exists())
    return graphql.build_schema(path.read_text())


def assert_valid(schema: graphql.GraphQLSchema, document: Document) -> None:
    """Valid against the schema, and executable: the variables coerce and the operation name exists."""
    ast = graphql.parse(document.query)
    assert graphql.validate(schema, ast) == []
    # With no resolvers every root field is null, so any error left is about the document or variables.
    result = graphql.execute_sync(
        schema,
        ast,
        root_value={},
        variable_values=dict(document.variables),
        operation_name=document.operation_name,
    )
    assert result.errors is None


# --- query texts against the real schema ---------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 100])
def test_confirm_jobs_query_validates_against_the_buildkite_schema(
    schema: graphql.GraphQLSchema, count: int
) -> None:
    uuids = [str(uuid.UUID(int=i)) for i in range(count)]
    document = build_confirm_jobs(uuids)
    assert_valid(schema, document)
    assert document.query.count("job(uuid:") == count


def test_job_states_query_validates_against_the_buildkite_schema(schema: graphql.GraphQLSchema) -> None:
    assert_valid(schema, build_job_states(UUIDS))


@pytest.mark.parametrize("cursor", [None, "Y3Vyc29yOjQy"], ids=["first page", "later page"])
def test_scheduled_jobs_query_validates_against_the_buildkite_schema(
    schema: graphql.GraphQLSchema, cursor: str | None
) -> None:
    document = build_scheduled_jobs(org="acme", agent_query_rules=["queue=k8s"], page_size=100, cursor=cursor)
    assert_valid(schema, document)


def test_confirm_jobs_refuses_more_than_100_uuids_in_one_request() -> None:
    with pytest.raises(ValueError, match="limit is 100"):
        build_confirm_jobs([str(uuid.UUID(int=i)) for i in range(101)])


def test_confirm_jobs_refuses_a_non_uuid() -> None:
    async def action(client: GraphQLClient) -> object:
        return await client.confirm_jobs(["not-a-uuid"])

    with pytest.raises(ValueError):
        run(lambda request: httpx.Response(500), action)


# --- response parsing ----------------------------------------------------------------------------


def command_node(job_uuid: str, **fields: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "uuid": job_uuid,
        "state": "SCHEDULED",
        "agentQueryRules": ["queue=k8s"],
        "env": ['BUILDKITE_PLUGINS=[{"a":"b=c"}]', "EMPTY=", "NOEQUALS"],
        "command": "make",
        "priority": {"number": 3},
        "somethingNew": {"ignored": True},
    }
    node.update(fields)
    return node


def test_confirm_response_maps_uuids_to_records_and_none() -> None:
    data = {"j0": command_node(UUIDS[0]), "j1": None, "j2": {}}
    records = parse_confirm_jobs(data, UUIDS)
    assert records[UUIDS[1]] is None  # unknown job
    assert records[UUIDS[2]] is None  # not a command job (the fragment selected nothing)
    assert records[UUIDS[0]] == JobRecord(
        uuid=UUIDS[0],
        state="scheduled",
        agent_query_rules=("queue=k8s",),
        env={"BUILDKITE_PLUGINS": '[{"a":"b=c"}]', "EMPTY": "", "NOEQUALS": ""},
        command="make",
        priority=3,
    )


def test_null_optional_fields_become_empty_values() -> None:
    node = command_node(UUIDS[0], agentQueryRules=None, env=None, command=None, priority={"number": None})
    record = parse_confirm_jobs({"j0": node}, UUIDS[:1])[UUIDS[0]]
    assert record == JobRecord(UUIDS[0], "scheduled", (), {}, "", 0)


def test_env_splits_on_the_first_equals_sign() -> None:
    assert parse_env(["A=1=2", "B==", "C"]) == {"A": "1=2", "B": "=", "C": ""}


MALFORMED = {
    "data not an object": ([1], "no data object"),
    "alias missing": ({"j0": command_node(UUIDS[0])}, "lacks j1"),
    "alias not an object": ({"j0": "x", "j1": None}, "not an object"),
    "state not a string": ({"j0": command_node(UUIDS[0], state=5), "j1": None}, "state"),
    "env not a list": ({"j0": command_node(UUIDS[0], env="A=1"), "j1": None}, "env"),
    "answer for another job": ({"j0": command_node(UUIDS[2]), "j1": None}, "when asked for"),
}


@pytest.mark.parametrize(("data", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_confirm_responses_raise_a_short_buildkite_error(data: object, message: str) -> None:
    with pytest.raises(BuildkiteError, match=message) as caught:
        parse_confirm_jobs(data, UUIDS[:2])
    assert len(str(caught.value)) < 300


def test_job_states_are_lower_case_and_unknown_jobs_are_left_out() -> None:
    data = {"j0": {"uuid": UUIDS[0], "state": "CANCELING"}, "j1": None, "j2": {}}
    assert parse_job_states(data, UUIDS) == {UUIDS[0]: "canceling"}


def test_a_scheduled_page_is_reversed_into_oldest_first_order() -> None:
    data = {
        "organization": {
            "jobs": {
                "edges": [
                    {"node": command_node(UUIDS[1])},
                    None,
                    {"node": None},
                    {"node": command_node(UUIDS[0])},
                ],
                "pageInfo": {"hasPreviousPage": True, "startCursor": "c1"},
            }
        }
    }
    page = parse_scheduled_jobs(data)
    assert [job.uuid for job in page.jobs] == [UUIDS[0], UUIDS[1]]
    assert page.next_cursor == "c1"


def test_an_unknown_organization_is_a_clear_error() -> None:
    with pytest.raises(BuildkiteError, match="organization not found"):
        parse_scheduled_jobs({"organization": None})


# --- transport, through httpx.MockTransport ------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Records requests and sleeps so tests can assert on both."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def run(
    handler: Handler,
    action: Callable[[GraphQLClient], Awaitable[Any]],
    recorder: Recorder | None = None,
    policy: RetryPolicy = POLICY,
) -> Any:
    recorder = recorder or Recorder()

    def recording(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        return handler(request)

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(recording)) as http:
            client = GraphQLClient(
                http,
                url=URL,
                token=TOKEN,
                retry=policy,
                sleep=recorder.sleep,
                rng=lambda: 0.5,
                clock=lambda: 1000.0,
            )
            return await action(client)

    return asyncio.run(main())


def confirm(client: GraphQLClient) -> Awaitable[dict[str, JobRecord | None]]:
    return client.confirm_jobs(UUIDS[:1])


def ok(**headers: str) -> httpx.Response:
    return httpx.Response(200, json={"data": {"j0": command_node(UUIDS[0])}}, headers=headers)


def sequence(*responses: httpx.Response | Exception) -> Handler:
    remaining = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        reply = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    return handler


def test_confirm_jobs_sends_one_bearer_request_with_aliases() -> None:
    recorder = Recorder()
    records = run(
        lambda r: httpx.Response(200, json={"data": {f"j{i}": None for i in range(3)}}),
        lambda c: c.confirm_jobs([u.upper() for u in UUIDS]),
        recorder,
    )
    assert records == dict.fromkeys(UUIDS)
    (request,) = recorder.requests
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request.content)
    assert body["operationName"] == "ConfirmJobs"
    assert body["variables"] == {"u0": UUIDS[0], "u1": UUIDS[1], "u2": UUIDS[2]}


def test_429_with_retry_after_is_honoured_then_retried() -> None:
    recorder = Recorder()
    handler = sequence(
        httpx.Response(429, headers={"Retry-After": "2.5"}, json={"errors": [{"message": "slow"}]}), ok()
    )
    records = run(handler, confirm, recorder)
    assert records[UUIDS[0]] is not None
    assert recorder.sleeps == [2.5]
    assert len(recorder.requests) == 2


def test_a_429_pauses_every_later_call_not_only_the_refused_one() -> None:
    # The organization's budget is shared: after a 429 the next, unrelated call waits too.
    recorder = Recorder()
    handler = sequence(httpx.Response(429, headers={"Retry-After": "4"}), ok(), ok())

    async def two_calls(client: GraphQLClient) -> None:
        await client.confirm_jobs(UUIDS[:1])
        await client.confirm_jobs(UUIDS[:1])

    run(handler, two_calls, recorder)
    assert recorder.sleeps == [4.0, 4.0]  # the retry's own wait, then the second call's (clock stands still)


def test_429_without_retry_after_waits_for_ratelimit_reset() -> None:
    recorder = Recorder()
    run(sequence(httpx.Response(429, headers={"RateLimit-Reset": "7"}), ok()), confirm, recorder)
    assert recorder.sleeps == [7.0]


def test_429_that_never_clears_raises_rate_limited_after_the_attempts() -> None:
    recorder = Recorder()
    with pytest.raises(RateLimited) as caught:
        run(lambda r: httpx.Response(429, headers={"Retry-After": "1"}), confirm, recorder)
    assert caught.value.retry_after == 1.0
    assert caught.value.is_retryable
    assert len(recorder.requests) == POLICY.attempts
    assert recorder.sleeps == [1.0] * (POLICY.attempts - 1)


def test_a_retry_after_longer_than_max_wait_is_not_slept_through() -> None:
    recorder = Recorder()
    with pytest.raises(RateLimited) as caught:
        run(lambda r: httpx.Response(429, headers={"Retry-After": "240"}), confirm, recorder)
    assert caught.value.retry_after == 240.0
    assert recorder.sleeps == []
    assert len(recorder.requests) == 1


def test_5xx_backs_off_exponentially_with_a_cap_and_bounded_attempts() -> None:
    recorder = Recorder()
    with pytest.raises(BuildkiteUnavailable, match="HTTP 503"):
        run(lambda r: httpx.Response(503, text="<html>down</html>"), confirm, recorder)
    # rng = 0.5 → each wait is 3/4 of min(cap, base·2ⁿ): 1, 2, then capped at 3.
    assert recorder.sleeps == [0.75, 1.5, 2.25]
    assert len(recorder.requests) == POLICY.attempts


def test_a_transient_5xx_is_retried_until_it_succeeds() -> None:
    recorder = Recorder()
    records = run(sequence(httpx.Response(502), httpx.Response(504), ok()), confirm, recorder)
    assert records[UUIDS[0]] is not None
    assert len(recorder.sleeps) == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof")],
    ids=["read timeout", "connection refused", "connection dropped"],
)
def test_timeouts_and_connection_errors_are_retried_then_reported_as_unavailable(failure: Exception) -> None:
    recorder = Recorder()
    with pytest.raises(BuildkiteUnavailable, match=type(failure).__name__):
        run(sequence(failure), confirm, recorder)
    assert len(recorder.requests) == POLICY.attempts
    records = run(sequence(failure, ok()), confirm)
    assert records[UUIDS[0]] is not None


@pytest.mark.parametrize(
    "message",
    [
        "Field 'nope' doesn't exist on type 'JobTypeCommand'",
        "Query has complexity of 60000, which exceeds max complexity of 50000",
    ],
    ids=["schema error", "complexity error"],
)
def test_graphql_errors_with_200_are_permanent(message: str) -> None:
    recorder = Recorder()
    reply = httpx.Response(
        200, json={"errors": [{"message": message, "locations": [{"line": 1, "column": 2}]}]}
    )
    with pytest.raises(GraphQLErrors) as caught:
        run(lambda r: reply, confirm, recorder)
    assert caught.value.messages == (message,)
    assert not caught.value.is_retryable
    assert len(recorder.requests) == 1


def test_a_graphql_timeout_error_is_retried() -> None:
    recorder = Recorder()
    timeout = httpx.Response(200, json={"data": None, "errors": [{"message": "Execution timed out"}]})
    records = run(sequence(timeout, ok()), confirm, recorder)
    assert records[UUIDS[0]] is not None
    assert len(recorder.requests) == 2


def test_an_error_on_one_alias_leaves_only_that_job_unknown() -> None:
    data = {"j0": command_node(UUIDS[0]), "j1": None}
    errors = [{"message": "No job found", "path": ["j1"]}]
    records = run(
        lambda r: httpx.Response(200, json={"data": data, "errors": errors}),
        lambda c: c.confirm_jobs(UUIDS[:2]),
    )
    assert records[UUIDS[0]] is not None
    assert records[UUIDS[1]] is None


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_permanent_and_never_show_the_token(status: int) -> None:
    recorder = Recorder()
    with pytest.raises(BuildkiteAuthError) as caught:
        run(lambda r: httpx.Response(status, json={"errors": [{"message": "bad token"}]}), confirm, recorder)
    assert len(recorder.requests) == 1
    assert TOKEN not in str(caught.value)
    assert "bad token" in str(caught.value)


HOSTILE_REPLIES = {
    "malformed json": (httpx.Response(200, content=b"{'data': "), "not JSON"),
    "json array": (httpx.Response(200, json=[1]), "not an object"),
    "neither data nor errors": (httpx.Response(200, json={}), "neither data nor errors"),
    "errors not a list": (httpx.Response(200, json={"errors": "boom"}), "not a list"),
    "unexpected 404": (httpx.Response(404, text="x" * 5000), "HTTP 404"),
    "huge html body": (httpx.Response(200, text="<html>" + "x" * 100_000), "not JSON"),
}


@pytest.mark.parametrize(("reply", "message"), HOSTILE_REPLIES.values(), ids=HOSTILE_REPLIES.keys())
def test_malformed_replies_raise_a_short_permanent_buildkite_error(
    reply: httpx.Response, message: str
) -> None:
    recorder = Recorder()
    with pytest.raises(BuildkiteError, match=message) as caught:
        run(lambda r: reply, confirm, recorder)
    assert not caught.value.is_retryable
    assert len(str(caught.value)) < 400
    assert len(recorder.requests) == 1


def test_the_rate_budget_follows_the_ratelimit_headers() -> None:
    async def action(client: GraphQLClient) -> RateBudget | None:
        assert client.budget is None
        await client.confirm_jobs(UUIDS[:1])
        return client.budget

    headers = {"RateLimit-Remaining": "19000", "RateLimit-Limit": "20000", "RateLimit-Reset": "120"}
    budget = run(lambda r: ok(**headers), action)
    assert budget == RateBudget(remaining=19000, limit=20000, reset_at=1120.0)


def test_the_token_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run(sequence(httpx.Response(503), ok()), confirm)
    assert caplog.records  # the retry was logged …
    assert TOKEN not in caplog.text  # … without the token
    assert TOKEN not in repr(GraphQLClient(httpx.AsyncClient(), url=URL, token=TOKEN))


def test_job_states_batches_100_uuids_per_request() -> None:
    recorder = Recorder()
    uuids = [str(uuid.UUID(int=i + 1)) for i in range(150)]

    def handler(request: httpx.Request) -> httpx.Response:
        variables = json.loads(request.content)["variables"]
        data = {
            name.replace("u", "j"): {"uuid": value, "state": "RUNNING"} for name, value in variables.items()
        }
        return httpx.Response(200, json={"data": data})

    states = run(handler, lambda c: c.job_states(uuids), recorder)
    assert states == dict.fromkeys(uuids, "running")
    assert [len(json.loads(r.content)["variables"]) for r in recorder.requests] == [100, 50]


# --- pagination --------------------------------------------------------------------------------


def backwards_pages(newest_first: list[str]) -> Handler:
    """Serve organization.jobs like Relay over a newest-first list: last/before pages backwards."""

    def handler(request: httpx.Request) -> httpx.Response:
        variables = json.loads(request.content)["variables"]
        end = int(variables["before"]) if variables["before"] is not None else len(newest_first)
        start = max(0, end - variables["last"])
        edges = [{"node": command_node(job)} for job in newest_first[start:end]]
        info = {"hasPreviousPage": start > 0, "startCursor": str(start)}
        return httpx.Response(
            200, json={"data": {"organization": {"jobs": {"edges": edges, "pageInfo": info}}}}
        )

    return handler


def test_scheduled_jobs_pages_backwards_and_returns_the_oldest_first() -> None:
    recorder = Recorder()
    oldest_first = [str(uuid.UUID(int=i + 1)) for i in range(7)]
    jobs = run(
        backwards_pages(list(reversed(oldest_first))),
        lambda c: c.scheduled_jobs(org="acme", agent_query_rules=["queue=k8s"], page_size=3),
        recorder,
    )
    assert [job.uuid for job in jobs] == oldest_first
    sent = [json.loads(r.content)["variables"] for r in recorder.requests]
    assert [v["before"] for v in sent] == [None, "4", "1"]
    assert all(v["org"] == "acme" and v["rules"] == ["queue=k8s"] and v["last"] == 3 for v in sent)


def test_scheduled_jobs_stops_at_max_pages_keeping_the_oldest() -> None:
    oldest_first = [str(uuid.UUID(int=i + 1)) for i in range(10)]
    jobs = run(
        backwards_pages(list(reversed(oldest_first))),
        lambda c: c.scheduled_jobs(org="acme", agent_query_rules=[], page_size=2, max_pages=2),
    )
    assert [job.uuid for job in jobs] == oldest_first[:4]


def test_a_job_seen_on_two_pages_is_returned_once() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        before = json.loads(request.content)["variables"]["before"]
        info = {"hasPreviousPage": before is None, "startCursor": "older"}
        edges = [{"node": command_node(UUIDS[0])}, {"node": command_node(UUIDS[1] if before else UUIDS[2])}]
        return httpx.Response(
            200, json={"data": {"organization": {"jobs": {"edges": edges, "pageInfo": info}}}}
        )

    jobs = run(handler, lambda c: c.scheduled_jobs(org="acme", agent_query_rules=[]))
    assert sorted(job.uuid for job in jobs) == sorted(UUIDS)


def test_scheduled_jobs_rejects_a_silly_page_size() -> None:
    with pytest.raises(ValueError, match="page_size"):
        run(backwards_pages([]), lambda c: c.scheduled_jobs(org="acme", agent_query_rules=[], page_size=0))


def test_a_5xx_backs_off_instead_of_waiting_for_the_budget_window() -> None:
    recorder = Recorder()
    busy = httpx.Response(502, headers={"RateLimit-Reset": "250", "RateLimit-Remaining": "19000"})
    run(sequence(busy, ok()), confirm, recorder)
    assert recorder.sleeps == [0.75]


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_nonsense_retry_after_falls_back_to_backing_off(value: str) -> None:
    recorder = Recorder()
    run(sequence(httpx.Response(429, headers={"Retry-After": value}), ok()), confirm, recorder)
    assert recorder.sleeps == [0.75]


# --- cluster scoping (issue 9) -------------------------------------------------------------------

CLUSTER = "7b4f3c2a-1d5e-4f6a-9b8c-0d1e2f3a4b5c"
OTHER_CLUSTER = "5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize("cursor", [None, "Y3Vyc29yOjQy"], ids=["first page", "later page"])
def test_the_cluster_scoped_scheduled_query_validates_against_the_buildkite_schema(
    schema: graphql.GraphQLSchema, cursor: str | None
) -> None:
    document = build_scheduled_jobs(
        org="acme", agent_query_rules=["queue=k8s"], page_size=100, cursor=cursor, cluster_uuid=CLUSTER
    )
    assert_valid(schema, document)
    assert "cluster: $cluster" in document.query and "cluster { uuid }" in document.query
    assert base64.b64decode(document.variables["cluster"]).decode() == f"Cluster---{CLUSTER}"


@pytest.mark.parametrize("count", [1, 100])
def test_the_confirm_query_with_the_cluster_validates_against_the_buildkite_schema(
    schema: graphql.GraphQLSchema, count: int
) -> None:
    document = build_confirm_jobs([str(uuid.UUID(int=i)) for i in range(count)], with_cluster=True)
    assert_valid(schema, document)
    assert document.query.count("cluster { uuid }") == 1  # once, in the fragment


def test_without_a_cluster_the_queries_are_todays() -> None:
    scheduled = build_scheduled_jobs(org="acme", agent_query_rules=[], page_size=10, cursor=None)
    assert "cluster" not in scheduled.query and "cluster" not in scheduled.variables
    assert "cluster" not in build_confirm_jobs(UUIDS).query


def test_cluster_graphql_id_refuses_a_non_uuid() -> None:
    with pytest.raises(ValueError):
        cluster_graphql_id("my-cluster")


@pytest.mark.parametrize(
    ("cluster", "has_cluster", "expected"),
    [
        ({"uuid": CLUSTER.upper()}, True, CLUSTER),
        (None, True, None),
    ],
    ids=["clustered", "unclustered"],
)
def test_a_fetched_cluster_is_parsed_lower_case(
    cluster: object, has_cluster: bool, expected: str | None
) -> None:
    record = parse_confirm_jobs({"j0": command_node(UUIDS[0], cluster=cluster)}, UUIDS[:1])[UUIDS[0]]
    assert record is not None
    assert (record.has_cluster, record.cluster_uuid) == (has_cluster, expected)


def test_a_record_whose_query_did_not_ask_knows_no_cluster() -> None:
    record = parse_confirm_jobs({"j0": command_node(UUIDS[0])}, UUIDS[:1])[UUIDS[0]]
    assert record is not None and not record.has_cluster and record.cluster_uuid is None


@pytest.mark.parametrize(
    "cluster",
    [{"uuid": 7}, {"uuid": "x" * 65}, {}, "Cluster---x", [CLUSTER]],
    ids=["number", "huge", "no-uuid", "string", "list"],
)
def test_a_malformed_cluster_is_a_short_buildkite_error(cluster: object) -> None:
    with pytest.raises(BuildkiteError, match="cluster") as caught:
        parse_confirm_jobs({"j0": command_node(UUIDS[0], cluster=cluster)}, UUIDS[:1])
    assert len(str(caught.value)) < 300


def _record(*, cluster_uuid: str | None, has_cluster: bool) -> JobRecord:
    return JobRecord(
        uuid=UUIDS[0],
        state="scheduled",
        agent_query_rules=(),
        env={},
        command="",
        priority=0,
        cluster_uuid=cluster_uuid,
        has_cluster=has_cluster,
    )


@pytest.mark.parametrize(
    ("configured", "cluster_uuid", "has_cluster", "ours"),
    [
        (None, OTHER_CLUSTER, True, True),  # no cluster configured: today's behaviour
        (None, None, False, True),
        (CLUSTER, CLUSTER, True, True),
        (CLUSTER.upper(), CLUSTER, True, True),
        (CLUSTER, OTHER_CLUSTER, True, False),
        (CLUSTER, None, True, False),  # an unclustered job
        (CLUSTER, None, False, False),  # the query did not ask: fail closed
    ],
    ids=[
        "unscoped-other",
        "unscoped-unknown",
        "same",
        "same-any-case",
        "other",
        "unclustered",
        "not-fetched",
    ],
)
def test_cluster_mismatch_keeps_only_our_clusters_jobs(
    configured: str | None, cluster_uuid: str | None, has_cluster: bool, ours: bool
) -> None:
    reason = cluster_mismatch(_record(cluster_uuid=cluster_uuid, has_cluster=has_cluster), configured)
    assert (reason is None) == ours
    if reason is not None:
        assert "cluster" in reason


def test_scheduled_jobs_sends_the_cluster_on_every_page() -> None:
    recorder = Recorder()
    run(
        backwards_pages([str(uuid.UUID(int=i + 1)) for i in range(5)]),
        lambda c: c.scheduled_jobs(org="acme", agent_query_rules=[], page_size=2, cluster_uuid=CLUSTER),
        recorder,
    )
    sent = [json.loads(r.content)["variables"] for r in recorder.requests]
    assert len(sent) == 3
    assert {base64.b64decode(v["cluster"]).decode() for v in sent} == {f"Cluster---{CLUSTER}"}


def test_confirm_jobs_with_cluster_asks_for_it() -> None:
    recorder = Recorder()
    handler = sequence(
        httpx.Response(200, json={"data": {"j0": command_node(UUIDS[0], cluster={"uuid": CLUSTER})}})
    )
    records = run(handler, lambda c: c.confirm_jobs(UUIDS[:1], with_cluster=True), recorder)
    assert "cluster { uuid }" in json.loads(recorder.requests[0].content)["query"]
    assert records[UUIDS[0]].cluster_uuid == CLUSTER
