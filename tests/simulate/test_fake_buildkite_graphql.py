"""The fake Buildkite's GraphQL endpoint over real HTTP: schema validation, resolvers, limits, faults."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.simulate.buildkite_clock import ManualClock
from app.simulate.buildkite_server import FakeBuildkite

pytest_plugins = ["app.simulate.buildkite_fixtures"]

JOB_FIELDS = """
  ... on JobTypeCommand {
    id uuid state agentQueryRules env command priority { number } label scheduledAt
    step { key } build { number branch pipeline { slug } } pipeline { slug } exitStatus
  }
"""
SCHEDULED_PAGE = """
query Page($rules: [String!], $first: Int, $after: String, $last: Int, $before: String) {
  organization(slug: "acme") {
    jobs(state: [SCHEDULED], type: [COMMAND], agentQueryRules: $rules, first: $first, after: $after,
         last: $last, before: $before, order: RECENTLY_CREATED) {
      count
      edges { cursor node { ... on JobTypeCommand { uuid } } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}
"""


def post(
    http: httpx.Client, bk: FakeBuildkite, query: str, variables: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {bk.api_token}"} | headers
    return http.post(bk.graphql_url, json={"query": query, "variables": variables or {}}, headers=auth)


def data(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


def page(http: httpx.Client, bk: FakeBuildkite, **variables: Any) -> dict[str, Any]:
    return data(post(http, bk, SCHEDULED_PAGE, variables))["organization"]["jobs"]


def test_job_query_returns_the_command_job_with_upper_case_state_and_env_lines(
    bk_http: httpx.Client,
    fake_buildkite: FakeBuildkite,
) -> None:
    uuid = fake_buildkite.add_job(
        command="make test",
        plugins=[{"kubernetes": {"podSpec": {}}}],
        priority=5,
        step_key="test",
        label="Test",
    )

    job = data(post(bk_http, fake_buildkite, f'{{ job(uuid: "{uuid}") {{ {JOB_FIELDS} }} }}'))["job"]

    assert base64.b64decode(job["id"]).decode() == f"Job---{uuid}"
    assert job["uuid"] == uuid and job["state"] == "SCHEDULED"
    assert job["agentQueryRules"] == ["queue=kubernetes"]
    plugins = '[{"github.com/buildkite-plugins/kubernetes-buildkite-plugin":{"podSpec":{}}}]'
    assert f"BUILDKITE_PLUGINS={plugins}" in job["env"]
    assert job["command"] == "make test" and job["priority"] == {"number": 5} and job["label"] == "Test"
    assert job["step"] == {"key": "test"} and job["pipeline"] == {"slug": "pipeline"}
    assert job["build"] == {"number": 1, "branch": "main", "pipeline": {"slug": "pipeline"}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", job["scheduledAt"])
    assert job["exitStatus"] is None


def test_aliases_confirm_many_jobs_in_one_query_and_unknown_ones_are_null(
    bk_http: httpx.Client,
    fake_buildkite: FakeBuildkite,
) -> None:
    uuids = [fake_buildkite.add_job() for _ in range(3)]
    fake_buildkite.cancel(uuids[1])
    aliased = " ".join(
        f'j{i}: job(uuid: "{u}") {{ ... on JobTypeCommand {{ uuid state }} }}' for i, u in enumerate(uuids)
    )

    result = data(post(bk_http, fake_buildkite, f'{{ {aliased} gone: job(uuid: "nope") {{ __typename }} }}'))

    assert result == {
        "j0": {"uuid": uuids[0], "state": "SCHEDULED"},
        "j1": {"uuid": uuids[1], "state": "CANCELED"},
        "j2": {"uuid": uuids[2], "state": "SCHEDULED"},
        "gone": None,
    }


@pytest.mark.parametrize(
    "query",
    [
        '{ job(uuid: "x") { ... on JobTypeCommand { plugins } } }',
        '{ job(uuid: "x") { uuid } }',  # `Job` is a union: fields need a fragment
        '{ organization(slug: "acme") { jobs(state: [NOT_A_STATE]) { count } } }',
        "{ job { __typename } }",
    ],
    ids=["field-missing-from-schema", "field-on-union", "bad-enum", "missing-required-arg"],
)
def test_queries_invalid_against_the_real_schema_fail_validation(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, query: str
) -> None:
    response = post(bk_http, fake_buildkite, query)

    body = response.json()
    assert response.status_code == 200
    assert "data" not in body and body["errors"][0]["locations"]


def test_syntax_errors_are_graphql_errors(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    body = post(bk_http, fake_buildkite, "{ job(uuid: ").json()
    assert "Syntax Error" in body["errors"][0]["message"]


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'{"query": 42}', b'{"query": "{ viewer { id } }", "variables": [1]}'],
    ids=["not-json", "array", "query-not-string", "variables-not-object"],
)
def test_malformed_request_bodies_get_400_with_a_reason(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, content: bytes
) -> None:
    response = bk_http.post(
        fake_buildkite.graphql_url,
        content=content,
        headers={"Authorization": f"Bearer {fake_buildkite.api_token}"},
    )
    assert response.status_code == 400 and response.json()["errors"][0]["message"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Token {'bkua_fake_api_token'}", "Bearer"])
def test_bad_or_missing_tokens_get_401_json_errors(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = bk_http.post(fake_buildkite.graphql_url, json={"query": "{ viewer { id } }"}, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "No valid API Access Token provided"}]}


def test_scheduled_jobs_page_newest_first_with_opaque_cursors(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuids = [fake_buildkite.add_job() for _ in range(5)]
    fake_buildkite.set_state(uuids[2], "running")
    newest_first = [uuids[4], uuids[3], uuids[1], uuids[0]]

    first = page(bk_http, fake_buildkite, first=3)
    second = page(bk_http, fake_buildkite, first=3, after=first["pageInfo"]["endCursor"])

    assert first["count"] == 4
    assert [e["node"]["uuid"] for e in first["edges"]] == newest_first[:3]
    assert first["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["uuid"] for e in second["edges"]] == newest_first[3:]
    assert second["pageInfo"]["hasNextPage"] is False
    assert uuids[0] not in base64.b64decode(first["pageInfo"]["endCursor"]).decode()


def test_paging_backwards_with_last_and_before_reads_oldest_first(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuids = [fake_buildkite.add_job() for _ in range(5)]

    oldest = page(bk_http, fake_buildkite, last=2)
    older_than_that = page(bk_http, fake_buildkite, last=2, before=oldest["pageInfo"]["startCursor"])

    assert [e["node"]["uuid"] for e in oldest["edges"]] == [uuids[1], uuids[0]]
    assert oldest["pageInfo"]["hasPreviousPage"] is True
    assert [e["node"]["uuid"] for e in older_than_that["edges"]] == [uuids[3], uuids[2]]


def test_cursors_survive_jobs_leaving_the_list_between_pages(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuids = [fake_buildkite.add_job() for _ in range(4)]
    first = page(bk_http, fake_buildkite, first=2)
    fake_buildkite.cancel(uuids[3])

    second = page(bk_http, fake_buildkite, first=2, after=first["pageInfo"]["endCursor"])

    assert [e["node"]["uuid"] for e in second["edges"]] == [uuids[1], uuids[0]]


def test_agent_query_rules_filter_requires_every_rule(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    both = fake_buildkite.add_job(agents={"queue": "kubernetes", "os": "linux"})
    fake_buildkite.add_job(agents={"queue": "kubernetes"})
    fake_buildkite.add_job(agents={"queue": "other", "os": "linux"})

    result = page(bk_http, fake_buildkite, rules=["queue=kubernetes", "os=linux"], first=10)

    assert [e["node"]["uuid"] for e in result["edges"]] == [both]


def test_unclustered_jobs_are_listed_only_with_clustered_false(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    clustered = fake_buildkite.add_job()
    loose = fake_buildkite.add_job(clustered=False)
    query = (
        '{ organization(slug: "acme") { jobs(state: [SCHEDULED], clustered: %s) {'
        " edges { node { ... on JobTypeCommand { uuid } } } } } }"
    )

    def listed(flag: str) -> list[str]:
        edges = data(post(bk_http, fake_buildkite, query % flag))["organization"]["jobs"]["edges"]
        return [e["node"]["uuid"] for e in edges]

    assert listed("true") == [clustered]
    assert listed("false") == [loose]


def test_unknown_organization_is_null_and_bad_cursor_is_an_error(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    assert data(post(bk_http, fake_buildkite, '{ organization(slug: "other") { id } }')) == {
        "organization": None
    }
    body = post(bk_http, fake_buildkite, SCHEDULED_PAGE, {"first": 1, "after": "garbage!"}).json()
    assert "Invalid cursor" in body["errors"][0]["message"]


def test_negative_page_sizes_are_errors(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    body = post(bk_http, fake_buildkite, SCHEDULED_PAGE, {"first": -1}).json()
    assert "non-negative" in body["errors"][0]["message"]


def test_cancel_mutation_accepts_the_graphql_id_and_the_plain_uuid(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    by_id, by_uuid = fake_buildkite.add_job(), fake_buildkite.add_job()
    mutation = """mutation($input: JobTypeCommandCancelInput!) {
      jobTypeCommandCancel(input: $input) { clientMutationId jobTypeCommand { uuid state } } }"""
    graphql_id = base64.b64encode(f"Job---{by_id}".encode()).decode()

    first = data(
        post(bk_http, fake_buildkite, mutation, {"input": {"id": graphql_id, "clientMutationId": "m1"}})
    )
    second = data(post(bk_http, fake_buildkite, mutation, {"input": {"id": by_uuid}}))

    assert first["jobTypeCommandCancel"] == {
        "clientMutationId": "m1",
        "jobTypeCommand": {"uuid": by_id, "state": "CANCELED"},
    }
    assert second["jobTypeCommandCancel"]["jobTypeCommand"]["state"] == "CANCELED"
    again = post(bk_http, fake_buildkite, mutation, {"input": {"id": by_uuid}}).json()
    assert again["data"] == {"jobTypeCommandCancel": None}
    assert again["errors"][0]["message"] == "Job can't be canceled while it is canceled"


def test_events_show_stack_errors_with_their_detail(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    fake_buildkite.store.add_event(uuid, "STACK_ERRORED", detail="image pull failed")
    query = """query($u: ID!) { job(uuid: $u) { ... on JobTypeCommand { events(last: 10) { edges { node {
      type ... on JobEventStackError { errorDetail } } } } } } }"""

    edges = data(post(bk_http, fake_buildkite, query, {"u": uuid}))["job"]["events"]["edges"]

    assert [e["node"] for e in edges] == [
        {"type": "STACK_ERRORED", "errorDetail": "image pull failed"},
        {"type": "SCHEDULED"},
    ]


def test_every_answer_carries_rate_limit_headers_and_optional_stats(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    query = f'{{ job(uuid: "{uuid}") {{ ... on JobTypeCommand {{ uuid priority {{ number }} }} }} }}'

    response = post(bk_http, fake_buildkite, query, **{"Buildkite-Include-Query-Stats": "true"})

    assert response.json()["stats"] == {"requestedComplexity": 2, "actualComplexity": 2}
    assert response.headers["RateLimit-Limit"] == "20000"
    assert response.headers["RateLimit-Remaining"] == "19998"
    assert 0 < int(response.headers["RateLimit-Reset"]) <= 300


def test_a_query_over_the_complexity_cap_is_refused_with_http_200(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    body = post(
        bk_http, fake_buildkite, SCHEDULED_PAGE.replace("$first: Int", "$first: Int = 60000"), {}
    ).json()
    assert re.fullmatch(
        r"Query has complexity of \d+, which exceeds max complexity of 50000", body["errors"][0]["message"]
    )


def test_spent_points_answer_429_with_retry_after_until_the_window_resets(
    bk_http: httpx.Client,
    make_fake_buildkite: Callable[..., FakeBuildkite],
) -> None:
    clock = ManualClock()
    bk = make_fake_buildkite(clock=clock, points_limit=5, points_window_seconds=300)
    uuid = bk.add_job()
    query = f'{{ job(uuid: "{uuid}") {{ ... on JobTypeCommand {{ uuid priority {{ number }} }} }} }}'
    for _ in range(3):
        assert post(bk_http, bk, query).status_code == 200
    clock.advance(100)

    limited = post(bk_http, bk, query)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "200" and limited.headers["RateLimit-Remaining"] == "0"
    assert limited.json() == {
        "errors": [
            {
                "message": "Your organization has exceeded the limit of 5 complexity points. "
                "Please try again in 200 seconds."
            }
        ]
    }
    clock.advance(200)
    assert post(bk_http, bk, query).status_code == 200


def test_injected_429_serves_retry_after_then_recovers(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    fake_buildkite.inject("graphql", status=429, retry_after=2, count=1)

    limited = post(bk_http, fake_buildkite, "{ viewer { id } }")
    recovered = post(bk_http, fake_buildkite, '{ organization(slug: "acme") { slug } }')

    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert "Please try again in 2 seconds." in limited.json()["errors"][0]["message"]
    assert recovered.json() == {"data": {"organization": {"slug": "acme"}}}
    assert [c.status for c in fake_buildkite.calls_to("/v1")] == [429, 200]


def test_injected_graphql_errors_come_with_http_200(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    fake_buildkite.inject("graphql", errors=[{"message": "Something went wrong"}], count=2)
    query = '{ organization(slug: "acme") { slug } }'

    answers = [post(bk_http, fake_buildkite, query) for _ in range(3)]

    injected = {"data": None, "errors": [{"message": "Something went wrong"}]}
    assert [(a.status_code, a.json()) for a in answers[:2]] == [(200, injected), (200, injected)]
    assert answers[2].json() == {"data": {"organization": {"slug": "acme"}}}


def test_injected_5xx_and_latency_apply_only_to_their_surface(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    fake_buildkite.inject("graphql", status=502, latency_seconds=0.2)
    fake_buildkite.inject("agent", status=503)

    started = time.monotonic()
    response = post(bk_http, fake_buildkite, "{ viewer { id } }")

    assert time.monotonic() - started >= 0.2
    assert (
        response.status_code == 502 and response.json()["errors"][0]["message"] == "Injected fault: HTTP 502"
    )
    call = fake_buildkite.calls_to("/v1")[0]
    assert call.status == 502 and call.json()["query"] == "{ viewer { id } }"
    assert bk_http.get(f"{fake_buildkite.agent_endpoint}/ping").json() == {
        "message": "Injected fault: HTTP 503"
    }


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"surface": "nowhere"}, "surface"),
        ({"surface": "graphql", "status": 200}, "status"),
        ({"surface": "agent", "errors": [{"message": "x"}]}, "graphql surface"),
        ({"surface": "graphql", "count": 0}, "count"),
    ],
)
def test_impossible_faults_are_refused(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, kwargs: dict[str, Any], reason: str
) -> None:
    surface = kwargs.pop("surface")
    with pytest.raises(ValueError, match=reason):
        fake_buildkite.inject(surface, **kwargs)


def test_operation_name_picks_one_of_several_operations(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    document = f"""
      query Org {{ organization(slug: "acme") {{ slug }} }}
      query One {{ job(uuid: "{uuid}") {{ ... on JobTypeCommand {{ state }} }} }}
    """
    headers = {"Authorization": f"Bearer {fake_buildkite.api_token}"}

    chosen = bk_http.post(
        fake_buildkite.graphql_url, json={"query": document, "operationName": "One"}, headers=headers
    )
    ambiguous = bk_http.post(fake_buildkite.graphql_url, json={"query": document}, headers=headers)

    assert chosen.json() == {"data": {"job": {"state": "SCHEDULED"}}}
    assert ambiguous.json() == {"errors": [{"message": "No single operation to run"}]}


def test_node_finds_a_job_by_its_graphql_id(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    uuid = fake_buildkite.add_job()
    node_id = base64.b64encode(f"Job---{uuid}".encode()).decode()

    result = data(
        post(bk_http, fake_buildkite, f'{{ node(id: "{node_id}") {{ ... on JobTypeCommand {{ uuid }} }} }}')
    )

    assert result == {"node": {"uuid": uuid}}


# --- two clusters with the same queue name (issue 9: cluster scoping) ---------------------------------

OTHER_CLUSTER = "5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"


def _sent(http: httpx.Client, bk: FakeBuildkite, document: Any) -> dict[str, Any]:
    """Post one of the controller's own documents (app.buildkite.queries) as it would send it."""
    auth = {"Authorization": f"Bearer {bk.api_token}"}
    return data(http.post(bk.graphql_url, json=document.body(), headers=auth))


def test_the_controllers_scheduled_query_lists_only_its_clusters_jobs(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    from app.buildkite.queries import build_scheduled_jobs, parse_scheduled_jobs

    ours = fake_buildkite.add_job(agents={"queue": "kubernetes"})
    theirs = fake_buildkite.add_job(agents={"queue": "kubernetes"}, cluster_id=OTHER_CLUSTER)

    def listed(cluster: str | None) -> list[tuple[str, str | None]]:
        document = build_scheduled_jobs(
            org="acme",
            agent_query_rules=["queue=kubernetes"],
            page_size=10,
            cursor=None,
            cluster_uuid=cluster,
        )
        page = parse_scheduled_jobs(_sent(bk_http, fake_buildkite, document))
        return [(job.uuid, job.cluster_uuid) for job in page.jobs]

    mine = fake_buildkite.org.cluster_uuid
    assert listed(mine) == [(ours, mine)]
    assert listed(OTHER_CLUSTER) == [(theirs, OTHER_CLUSTER)]
    # Without a cluster: today's query, both clusters' jobs of the queue name.
    assert sorted(uuid for uuid, _ in listed(None)) == sorted([ours, theirs])


def test_the_controllers_confirm_query_reports_each_jobs_cluster(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    from app.buildkite.queries import build_confirm_jobs, cluster_mismatch, parse_confirm_jobs

    ours = fake_buildkite.add_job()
    theirs = fake_buildkite.add_job(cluster_id=OTHER_CLUSTER)
    loose = fake_buildkite.add_job(clustered=False)
    uuids = [ours, theirs, loose]

    records = parse_confirm_jobs(
        _sent(bk_http, fake_buildkite, build_confirm_jobs(uuids, with_cluster=True)), uuids
    )

    mine = fake_buildkite.org.cluster_uuid
    kept = [uuid for uuid, record in records.items() if record and cluster_mismatch(record, mine) is None]
    assert kept == [ours]
    assert records[loose] is not None and records[loose].has_cluster and records[loose].cluster_uuid is None


def test_a_cluster_filter_that_is_not_a_cluster_id_matches_nothing(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    fake_buildkite.add_job()
    query = (
        '{ organization(slug: "acme") { jobs(state: [SCHEDULED], cluster: "not-a-cluster") {'
        " edges { node { ... on JobTypeCommand { uuid } } } } } }"
    )
    assert data(post(bk_http, fake_buildkite, query))["organization"]["jobs"]["edges"] == []
