"""The fake Buildkite's stacks API over real HTTP (reference/buildkite-api.md §3, §7.1 rows 2-10)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from app.simulate.buildkite_clock import ManualClock
from app.simulate.buildkite_server import FakeBuildkite

pytest_plugins = ["app.simulate.buildkite_fixtures"]

STACK = {"key": "k8s", "type": "kubernetes", "queue_key": "kubernetes", "metadata": {}}


def stacks_client(bk: FakeBuildkite) -> httpx.Client:
    return httpx.Client(base_url=bk.agent_endpoint, headers={"Authorization": f"Token {bk.agent_token}"})


@contextmanager
def registered(bk: FakeBuildkite, **overrides: Any) -> Iterator[httpx.Client]:
    """A stacks client whose stack (STACK with `overrides`) is registered."""
    with stacks_client(bk) as http:
        assert http.post("/stacks/register", json=STACK | overrides).status_code in {200, 201}
        yield http


def test_token_identity_names_the_cluster(fake_buildkite: FakeBuildkite) -> None:
    with stacks_client(fake_buildkite) as http:
        identity = http.get("/token").json()
        refused = http.get("/token", headers={"Authorization": "Token wrong"})

    assert identity["cluster_uuid"] == fake_buildkite.org.cluster_uuid
    assert identity["organization_slug"] == "acme"
    assert refused.status_code == 401


def test_register_creates_then_updates_and_deregister_hides_the_stack(fake_buildkite: FakeBuildkite) -> None:
    with stacks_client(fake_buildkite) as http:
        created = http.post("/stacks/register", json=STACK)
        updated = http.post("/stacks/register", json=STACK | {"metadata": {"v": "2"}})
        gone = http.post("/stacks/k8s/deregister")
        after = http.get("/stacks/k8s/scheduled-jobs", params={"queue_key": "kubernetes"})

    assert created.status_code == 201 and updated.status_code == 200
    assert updated.json()["cluster_queue_key"] == "kubernetes" and updated.json()["metadata"] == {"v": "2"}
    assert gone.status_code == 204 and after.status_code == 404


@pytest.mark.parametrize(
    "change",
    [{"key": "bad key!"}, {"key": "x" * 81}, {"type": "lambda"}, {"queue_key": ""}, {"metadata": {"a": 1}}],
    ids=["key-chars", "key-length", "type", "queue", "metadata"],
)
def test_register_validates_every_field(fake_buildkite: FakeBuildkite, change: dict[str, Any]) -> None:
    with stacks_client(fake_buildkite) as http:
        response = http.post("/stacks/register", json=STACK | change)
    assert response.status_code == 422 and response.json()["message"]


def test_scheduled_jobs_lists_the_queue_oldest_first_in_pages(
    make_fake_buildkite: Callable[..., FakeBuildkite],
) -> None:
    clock = ManualClock()
    bk = make_fake_buildkite(clock=clock)
    jobs = []
    for _ in range(3):
        jobs.append(bk.add_job(step_key="s"))
        clock.advance(1)
    bk.add_job(agents={"queue": "other"})
    default_queue = bk.add_job(agents={})
    bk.pause_queue("kubernetes")

    with registered(bk) as http:
        first = http.get("/stacks/k8s/scheduled-jobs", params={"queue_key": "kubernetes", "limit": 2}).json()
        cursor = first["page_info"]["end_cursor"]
        second = http.get(
            "/stacks/k8s/scheduled-jobs", params={"queue_key": "kubernetes", "after": cursor}
        ).json()
        default = http.get("/stacks/k8s/scheduled-jobs", params={"queue_key": "_default"}).json()

    assert [j["id"] for j in first["jobs"]] == jobs[:2] and first["page_info"]["has_next_page"] is True
    assert [j["id"] for j in second["jobs"]] == jobs[2:] and second["page_info"]["has_next_page"] is False
    assert first["jobs"][0]["step"] == {"key": "s"} and set(first["jobs"][0]["build"]) == {
        "uuid",
        "number",
        "branch",
    }
    assert first["cluster_queue"]["dispatch_paused"] is True and first["cluster_queue"]["paused"] is True
    assert [j["id"] for j in default["jobs"]] == [default_queue]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"queue_key": "kubernetes", "limit": "0"},
        {"queue_key": "kubernetes", "limit": "1001"},
        {"queue_key": "kubernetes", "limit": "x"},
        {"queue_key": "kubernetes", "after": "%%%"},
    ],
    ids=["no-queue", "zero-limit", "big-limit", "text-limit", "bad-cursor"],
)
def test_scheduled_jobs_rejects_bad_parameters_with_400(
    fake_buildkite: FakeBuildkite, params: dict[str, str]
) -> None:
    with registered(fake_buildkite) as http:
        response = http.get("/stacks/k8s/scheduled-jobs", params=params)
    assert response.status_code == 400


def test_batch_reserve_reserves_once_and_reservations_expire(
    make_fake_buildkite: Callable[..., FakeBuildkite],
) -> None:
    clock = ManualClock()
    bk = make_fake_buildkite(clock=clock)
    free, running = bk.add_job(), bk.add_job(state="running")

    with registered(bk) as http, registered(bk, key="other") as rival:
        mine = http.put(
            "/stacks/k8s/scheduled-jobs/batch-reserve",
            json={"job_uuids": [free, running, "nope"], "reservation_expiry_seconds": 60},
        ).json()
        theirs = rival.put("/stacks/other/scheduled-jobs/batch-reserve", json={"job_uuids": [free]}).json()
        listed = http.get("/stacks/k8s/scheduled-jobs", params={"queue_key": "kubernetes"}).json()
        clock.advance(61)
        states = http.post("/stacks/k8s/jobs/get-states", json={"job_uuids": [free, running, "nope"]}).json()

    assert mine == {"reserved": [free], "not_reserved": [running, "nope"]}
    assert theirs == {"reserved": [], "not_reserved": [free]}
    assert listed["jobs"] == []
    assert states == {"states": {free: "scheduled", running: "running"}}


def test_stack_finish_fails_a_reserved_job_once_with_a_stack_error_event(
    fake_buildkite: FakeBuildkite,
) -> None:
    uuid = fake_buildkite.add_job()
    with registered(fake_buildkite) as http:
        http.put("/stacks/k8s/scheduled-jobs/batch-reserve", json={"job_uuids": [uuid]})
        shown = http.get(f"/stacks/k8s/jobs/{uuid}").json()
        first = http.post(f"/stacks/k8s/jobs/{uuid}/finish", json={"detail": "bad podSpec"})
        second = http.post(f"/stacks/k8s/jobs/{uuid}/finish", json={"detail": "again"})
        too_long = http.post(
            f"/stacks/k8s/jobs/{fake_buildkite.add_job()}/finish", json={"detail": "x" * 5000}
        )

    job = fake_buildkite.job(uuid)
    assert shown["id"] == uuid and shown["env"]["BUILDKITE_JOB_ID"] == uuid
    assert first.status_code == 200 and first.json() == {}
    assert second.status_code == 422 and too_long.status_code == 422
    assert (job.state, job.exit_status, job.signal_reason) == ("finished", "-1", "stack_error")
    assert ("STACK_ERRORED", "bad podSpec") in [(e.type, e.detail) for e in job.events]
    assert fake_buildkite.finish_calls(uuid) == 2


def test_notifications_store_valid_items_and_report_the_rest(fake_buildkite: FakeBuildkite) -> None:
    uuid = fake_buildkite.add_job()
    items = [
        {"job_uuid": uuid, "detail": "pod created"},
        {"job_uuid": uuid, "detail": ""},
        {"job_uuid": uuid, "detail": "x" * 257},
        {"job_uuid": "nope", "detail": "hi"},
        "not an object",
    ]
    with registered(fake_buildkite) as http:
        answer = http.post("/stacks/k8s/notifications", json={"notifications": items}).json()

    assert answer["errors"] == [
        {"error": "detail must be 1-256 characters", "indexes": [1, 2]},
        {"error": "job not found", "indexes": [3]},
        {"error": "job_uuid is required", "indexes": [4]},
    ]
    notes = [e.detail for e in fake_buildkite.job(uuid).events if e.type == "STACK_NOTIFICATION"]
    assert notes == ["pod created"]


@pytest.mark.parametrize("body", [b"not json", b'{"job_uuids": "x"}', b'{"job_uuids": [1]}'], ids=repr)
def test_get_states_rejects_malformed_bodies(fake_buildkite: FakeBuildkite, body: bytes) -> None:
    with registered(fake_buildkite) as http:
        response = http.post("/stacks/k8s/jobs/get-states", content=body)
    assert response.status_code in {400, 422} and response.json()["message"]


def test_scheduled_jobs_lists_only_the_tokens_cluster(
    make_fake_buildkite: Callable[..., FakeBuildkite],
) -> None:
    bk = make_fake_buildkite()
    ours = bk.add_job(agents={"queue": "kubernetes"})
    bk.add_job(agents={"queue": "kubernetes"}, cluster_id="5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b")
    with registered(bk) as http:
        listed = http.get("/stacks/k8s/scheduled-jobs", params={"queue_key": "kubernetes"}).json()
    assert [job["id"] for job in listed["jobs"]] == [ours]
