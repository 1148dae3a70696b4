"""FakeBuildkite's own controls: job creation from step-like input, cancel rules, `/_test` mirror, clock."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from app.simulate.buildkite_clock import ManualClock, iso8601
from app.simulate.buildkite_jobs import expand_plugin_source, plugins_json
from app.simulate.buildkite_server import FakeBuildkite
from app.simulate.buildkite_store import JobConflict, JobNotFound

pytest_plugins = ["app.simulate.buildkite_fixtures"]


@pytest.mark.parametrize(
    ("name", "expanded"),
    [
        ("kubernetes", "github.com/buildkite-plugins/kubernetes-buildkite-plugin"),
        ("docker#v5.9.0", "github.com/buildkite-plugins/docker-buildkite-plugin#v5.9.0"),
        ("github.com/acme/thing#v1", "github.com/acme/thing#v1"),
    ],
    ids=["short-name", "versioned", "already-expanded"],
)
def test_plugin_names_expand_like_buildkite(name: str, expanded: str) -> None:
    assert expand_plugin_source(name) == expanded


def test_plugins_json_keeps_order_and_config_and_rejects_multi_key_entries() -> None:
    rendered = json.loads(plugins_json([{"kubernetes": {"podSpec": {}}}, "docker#v5"]))
    assert rendered == [
        {"github.com/buildkite-plugins/kubernetes-buildkite-plugin": {"podSpec": {}}},
        {"github.com/buildkite-plugins/docker-buildkite-plugin#v5": None},
    ]
    with pytest.raises(ValueError, match="exactly one key"):
        plugins_json([{"a": {}, "b": {}}])


def test_add_job_derives_env_rules_and_schedule_from_the_step(fake_buildkite: FakeBuildkite) -> None:
    uuid = fake_buildkite.add_job(
        command="make",
        agents={"queue": "build", "os": "linux"},
        plugins=[{"kubernetes": {"checkout": {"skip": True}}}],
        image="golang:1.22",
        env={"EXTRA": "1"},
        step_key="compile",
        pipeline_slug="app",
        build_number=42,
    )

    job = fake_buildkite.job(uuid)
    assert job.state == "scheduled" and job.scheduled_at is not None
    assert job.agent_query_rules == ["queue=build", "os=linux"] and job.queue == "build"
    assert job.env["BUILDKITE_IMAGE"] == "golang:1.22" and job.env["EXTRA"] == "1"
    assert job.env["BUILDKITE_STEP_KEY"] == "compile" and job.env["BUILDKITE_PIPELINE_SLUG"] == "app"
    assert job.env["BUILDKITE_BUILD_URL"] == "https://buildkite.com/acme/app/builds/42"
    assert json.loads(job.env["BUILDKITE_PLUGINS"]) == [
        {"github.com/buildkite-plugins/kubernetes-buildkite-plugin": {"checkout": {"skip": True}}}
    ]


def test_add_job_refuses_unknown_states_and_duplicate_uuids(fake_buildkite: FakeBuildkite) -> None:
    with pytest.raises(ValueError, match="unknown job state"):
        fake_buildkite.add_job(state="sleeping")
    fake_buildkite.add_job(uuid="same")
    with pytest.raises(JobConflict, match="already exists"):
        fake_buildkite.add_job(uuid="same")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("scheduled", "canceled"),
        ("reserved", "canceled"),
        ("waiting", "canceled"),
        ("blocked", "canceled"),
        ("limited", "canceled"),
        ("limiting", "canceled"),
        ("pending", "canceled"),
        ("assigned", "canceling"),
        ("accepted", "canceling"),
        ("running", "canceling"),
    ],
)
def test_cancel_follows_buildkites_rules(fake_buildkite: FakeBuildkite, before: str, after: str) -> None:
    uuid = fake_buildkite.add_job(state=before)
    assert fake_buildkite.cancel(uuid) == after
    assert fake_buildkite.job(uuid).state == after


@pytest.mark.parametrize("state", ["finished", "canceled", "expired", "skipped"])
def test_cancelling_a_finished_job_is_refused(fake_buildkite: FakeBuildkite, state: str) -> None:
    uuid = fake_buildkite.add_job(state=state)
    with pytest.raises(JobConflict, match="can't be canceled"):
        fake_buildkite.cancel(uuid)


def test_unknown_jobs_raise_not_found(fake_buildkite: FakeBuildkite) -> None:
    with pytest.raises(JobNotFound):
        fake_buildkite.cancel("missing")


def test_control_api_mirrors_the_in_process_methods(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    base = f"{fake_buildkite.url}/_test"

    created = bk_http.post(f"{base}/jobs", json={"command": "ls", "agents": {"queue": "q"}, "priority": 3})
    uuid = created.json()["id"]
    listed = bk_http.get(f"{base}/jobs").json()
    moved = bk_http.post(f"{base}/jobs/{uuid}/state", json={"state": "running"})
    canceled = bk_http.post(f"{base}/jobs/{uuid}/cancel")
    shown = bk_http.get(f"{base}/jobs/{uuid}").json()

    assert created.status_code == 201
    assert [(j["id"], j["priority"], j["agent_query_rules"]) for j in listed] == [(uuid, 3, ["queue=q"])]
    assert moved.json() == {"state": "running"} and canceled.json() == {"state": "canceling"}
    assert shown["state"] == "canceling" and "CANCELATION" in [e["type"] for e in shown["events"]]
    recorded = bk_http.get(f"{base}/calls").json()
    assert [(c["method"], c["path"]) for c in recorded][:2] == [
        ("POST", "/_test/jobs"),
        ("GET", "/_test/jobs"),
    ]
    assert json.loads(recorded[0]["body"])["command"] == "ls"


def test_control_api_arms_and_clears_faults(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    base = f"{fake_buildkite.url}/_test"

    armed = bk_http.post(f"{base}/faults", json={"surface": "agent", "status": 500, "count": None})
    failing = bk_http.get(f"{fake_buildkite.agent_endpoint}/ping")
    cleared = bk_http.delete(f"{base}/faults")
    after = bk_http.get(f"{fake_buildkite.agent_endpoint}/ping")

    assert armed.status_code == 201 and failing.status_code == 500
    assert cleared.status_code == 204 and after.status_code == 401  # the real answer: no access token


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/_test/jobs", b"[1]", 422),
        ("POST", "/_test/jobs", b"{bad json", 422),
        ("POST", "/_test/jobs", b'{"no_such_field": 1}', 422),
        ("POST", "/_test/jobs", b'{"state": "sleeping"}', 422),
        ("POST", "/_test/jobs", b'{"agents": "queue=x"}', 422),
        ("POST", "/_test/jobs", b'{"priority": "high"}', 422),
        ("POST", "/_test/jobs/missing/cancel", b"", 404),
        ("POST", "/_test/jobs/missing/state", b'{"state": "running"}', 404),
        ("POST", "/_test/faults", b'{"surface": "moon"}', 422),
        ("POST", "/_test/clock/advance", b'{"seconds": 5}', 422),
    ],
    ids=[
        "array",
        "bad-json",
        "unknown-field",
        "unknown-state",
        "agents-not-a-map",
        "priority-not-int",
        "cancel-missing",
        "state-missing",
        "bad-surface",
        "no-manual-clock",
    ],
)
def test_control_api_answers_bad_input_with_4xx_and_a_message(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, method: str, path: str, body: bytes, status: int
) -> None:
    response = bk_http.request(method, f"{fake_buildkite.url}{path}", content=body)
    assert response.status_code == status and response.json()["message"]


def test_a_manual_clock_drives_timestamps_and_can_be_advanced_over_http(
    bk_http: httpx.Client, make_fake_buildkite: Callable[..., FakeBuildkite]
) -> None:
    clock = ManualClock(start=1_800_000_000)
    bk = make_fake_buildkite(clock=clock)
    first = bk.add_job()

    advanced = bk_http.post(f"{bk.url}/_test/clock/advance", json={"seconds": 90})
    second = bk.add_job()

    assert advanced.json() == {"now": 1_800_000_090}
    assert bk.job(first).scheduled_at == 1_800_000_000 and bk.job(second).scheduled_at == 1_800_000_090
    assert iso8601(1_800_000_090.5) == "2027-01-15T08:01:30.500Z"
    with pytest.raises(ValueError, match="backward"):
        clock.advance(-1)


def test_reset_forgets_jobs_calls_faults_and_spent_points(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    fake_buildkite.add_job()
    fake_buildkite.inject("graphql", status=500, count=None)
    fake_buildkite.set_points(used=19_000)
    bk_http.get(f"{fake_buildkite.url}/_test/jobs")

    fake_buildkite.reset()

    assert fake_buildkite.jobs() == [] and fake_buildkite.calls == []
    assert fake_buildkite.budget.remaining() == 20_000
    response = bk_http.post(fake_buildkite.graphql_url, json={"query": "{ viewer { id } }"})
    assert response.status_code == 401  # no fault left: the real auth check answered


def test_an_unstarted_fake_says_how_to_start_it() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeBuildkite().graphql_url


def test_a_crash_inside_the_fake_answers_500_json_naming_the_error(
    bk_http: httpx.Client, make_fake_buildkite: Callable[..., FakeBuildkite]
) -> None:
    bk = make_fake_buildkite()

    def broken_listener(event: str, job: object) -> None:
        raise RuntimeError(f"listener broke on {event}")

    uuid = bk.add_job()
    bk.store.subscribe(broken_listener)

    response = bk_http.post(f"{bk.url}/_test/jobs/{uuid}/cancel")

    assert response.status_code == 500
    assert response.json() == {
        "message": "Fake Buildkite error: RuntimeError: listener broke on job.finished"
    }
