"""The fake Buildkite's agent REST API over real HTTP: register, acquire, start, chunks, finish."""

from __future__ import annotations

import gzip
import threading

import httpx
import pytest

from app.simulate.buildkite_server import FakeBuildkite

pytest_plugins = ["app.simulate.buildkite_fixtures"]


def register(http: httpx.Client, bk: FakeBuildkite, name: str = "controller") -> dict[str, str]:
    """Register an agent with the agent token; returns headers carrying its access token."""
    response = http.post(
        f"{bk.agent_endpoint}/register",
        json={"name": name},
        headers={"Authorization": f"Token {bk.agent_token}"},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Token {response.json()['access_token']}"}


def fail_job(http: httpx.Client, bk: FakeBuildkite, uuid: str, auth: dict[str, str], log: bytes) -> list[int]:
    """The controller's way to fail a job it cannot run; returns each step's status."""
    base = f"{bk.agent_endpoint}/jobs/{uuid}"
    acquire_headers = auth | {"X-Buildkite-Lock-Acquire-Job": "1"}
    gzip_headers = auth | {"Content-Type": "text/plain", "Content-Encoding": "gzip"}
    return [
        http.put(f"{base}/acquire", headers=acquire_headers).status_code,
        http.put(f"{base}/start", json={"started_at": "2026-01-01T00:00:00Z"}, headers=auth).status_code,
        http.post(
            f"{base}/chunks?sequence=1&offset=0", content=gzip.compress(log), headers=gzip_headers
        ).status_code,
        http.put(
            f"{base}/finish", json={"exit_status": "-1", "signal_reason": "stack_error"}, headers=auth
        ).status_code,
    ]


# An unclosed loopback socket of the shared fake is sometimes collected during this test (GC timing).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_failing_a_job_through_the_agent_api_finishes_it_with_the_log(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()

    statuses = fail_job(
        bk_http, fake_buildkite, uuid, register(bk_http, fake_buildkite), b"pod failed: ImagePullBackOff\n"
    )

    job = fake_buildkite.job(uuid)
    assert statuses == [200, 200, 201, 200]
    assert job.state == "finished" and job.exit_status == "-1" and job.signal_reason == "stack_error"
    assert fake_buildkite.log(uuid) == b"pod failed: ImagePullBackOff\n"
    assert fake_buildkite.finish_calls(uuid) == 1


def test_acquire_answers_the_job_with_env_and_a_job_token(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job(command="make", image="ruby:3")

    response = bk_http.put(
        f"{fake_buildkite.agent_endpoint}/jobs/{uuid}/acquire", headers=register(bk_http, fake_buildkite)
    )

    body = response.json()
    assert body["id"] == uuid and body["state"] == "accepted"
    assert body["env"]["BUILDKITE_IMAGE"] == "ruby:3" and body["env"]["BUILDKITE_JOB_ID"] == uuid
    assert body["token"] and body["chunks_max_size_bytes"] > 0
    assert body["endpoint"] == fake_buildkite.agent_endpoint


def test_two_concurrent_acquires_have_exactly_one_winner(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    agents = [register(bk_http, fake_buildkite, f"agent-{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def acquire(auth: dict[str, str]) -> None:
        with httpx.Client(headers=auth) as http:
            barrier.wait(timeout=5)
            statuses.append(http.put(f"{fake_buildkite.agent_endpoint}/jobs/{uuid}/acquire").status_code)

    threads = [threading.Thread(target=acquire, args=(auth,)) for auth in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(statuses) == [200, 422]


@pytest.mark.parametrize("state", ["waiting", "blocked", "limited", "limiting"])
def test_acquiring_a_waiting_job_is_locked_with_retry_after(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, state: str
) -> None:
    uuid = fake_buildkite.add_job(state=state)

    response = bk_http.put(
        f"{fake_buildkite.agent_endpoint}/jobs/{uuid}/acquire", headers=register(bk_http, fake_buildkite)
    )

    assert response.status_code == 423 and response.headers["Retry-After"] == "1"
    assert fake_buildkite.job(uuid).state == state


@pytest.mark.parametrize("state", ["canceled", "finished", "running", "accepted", "expired"])
def test_acquiring_a_job_past_scheduling_is_refused_with_422(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, state: str
) -> None:
    uuid = fake_buildkite.add_job(state=state)

    response = bk_http.put(
        f"{fake_buildkite.agent_endpoint}/jobs/{uuid}/acquire", headers=register(bk_http, fake_buildkite)
    )

    assert response.status_code == 422 and state in response.json()["message"]


def test_a_reserved_job_can_be_acquired(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    uuid = fake_buildkite.add_job(state="reserved")
    response = bk_http.put(
        f"{fake_buildkite.agent_endpoint}/jobs/{uuid}/acquire", headers=register(bk_http, fake_buildkite)
    )
    assert response.status_code == 200


def test_unknown_jobs_are_404_with_a_message(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    response = bk_http.put(
        f"{fake_buildkite.agent_endpoint}/jobs/nope/acquire", headers=register(bk_http, fake_buildkite)
    )
    assert response.status_code == 404 and response.json() == {"message": "No job found with uuid 'nope'"}


def test_a_second_finish_is_refused_and_counted(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    uuid = fake_buildkite.add_job()
    auth = register(bk_http, fake_buildkite)
    fail_job(bk_http, fake_buildkite, uuid, auth, b"x")

    again = bk_http.put(
        f"{fake_buildkite.agent_endpoint}/jobs/{uuid}/finish", json={"exit_status": "1"}, headers=auth
    )

    assert again.status_code == 422
    assert fake_buildkite.job(uuid).exit_status == "-1"
    assert fake_buildkite.finish_calls(uuid) == 2


def test_another_agent_cannot_start_or_finish_a_job_it_did_not_acquire(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    owner, intruder = (
        register(bk_http, fake_buildkite, "owner"),
        register(bk_http, fake_buildkite, "intruder"),
    )
    base = f"{fake_buildkite.agent_endpoint}/jobs/{uuid}"
    bk_http.put(f"{base}/acquire", headers=owner)

    assert bk_http.put(f"{base}/start", headers=intruder).status_code == 422
    assert bk_http.put(f"{base}/finish", json={"exit_status": "0"}, headers=intruder).status_code == 422
    assert fake_buildkite.job(uuid).state == "accepted"


def test_start_before_acquire_and_finish_before_start_are_refused(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    auth = register(bk_http, fake_buildkite)
    base = f"{fake_buildkite.agent_endpoint}/jobs/{uuid}"

    assert bk_http.put(f"{base}/start", headers=auth).status_code == 422
    bk_http.put(f"{base}/acquire", headers=auth)
    assert bk_http.put(f"{base}/finish", json={"exit_status": "0"}, headers=auth).status_code == 422


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'{"exit_status": null}', b'{"exit_status": true}'], ids=repr
)
def test_finish_without_a_usable_exit_status_is_refused(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, body: bytes
) -> None:
    uuid = fake_buildkite.add_job()
    auth = register(bk_http, fake_buildkite)
    base = f"{fake_buildkite.agent_endpoint}/jobs/{uuid}"
    bk_http.put(f"{base}/acquire", headers=auth)
    bk_http.put(f"{base}/start", headers=auth)

    response = bk_http.put(f"{base}/finish", content=body, headers=auth)

    assert response.status_code in {400, 422} and response.json()["message"]
    assert fake_buildkite.job(uuid).state == "running"


def test_chunks_are_gunzipped_and_appended_in_order(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    auth = register(bk_http, fake_buildkite)
    base = f"{fake_buildkite.agent_endpoint}/jobs/{uuid}"
    bk_http.put(f"{base}/acquire", headers=auth)
    bk_http.put(f"{base}/start", headers=auth)
    gz = auth | {"Content-Encoding": "gzip"}

    statuses = [
        bk_http.post(f"{base}/chunks", content=gzip.compress(part), headers=gz).status_code
        for part in (b"one\n", b"two\n")
    ]
    broken = bk_http.post(f"{base}/chunks", content=b"\x1f\x8b not gzip", headers=gz)

    assert statuses == [201, 201]
    assert broken.status_code == 400 and "gzip" in broken.json()["message"]
    assert fake_buildkite.log(uuid) == b"one\ntwo\n"


def test_a_ui_cancel_of_a_running_job_shows_canceling_until_the_agent_finishes(
    bk_http: httpx.Client,
    fake_buildkite: FakeBuildkite,
) -> None:
    uuid = fake_buildkite.add_job()
    auth = register(bk_http, fake_buildkite)
    base = f"{fake_buildkite.agent_endpoint}/jobs/{uuid}"
    bk_http.put(f"{base}/acquire", headers=auth)
    bk_http.put(f"{base}/start", headers=auth)

    assert fake_buildkite.cancel(uuid) == "canceling"
    assert bk_http.get(base, headers=auth).json() == {"state": "canceling"}
    finish = bk_http.put(
        f"{base}/finish", json={"exit_status": "-1", "signal_reason": "cancel"}, headers=auth
    )

    assert finish.json()["state"] == "canceled"
    assert fake_buildkite.job(uuid).signal_reason == "cancel"


@pytest.mark.parametrize("authorization", [None, "Token wrong", "Bearer bkct_fake_agent_token", "Token"])
def test_registration_needs_the_agent_token(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = bk_http.post(f"{fake_buildkite.agent_endpoint}/register", json={}, headers=headers)
    assert response.status_code == 401 and response.json()["message"]


def test_job_calls_need_an_access_token_not_the_agent_token(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    uuid = fake_buildkite.add_job()
    raw = {"Authorization": f"Token {fake_buildkite.agent_token}"}

    response = bk_http.put(f"{fake_buildkite.agent_endpoint}/jobs/{uuid}/acquire", headers=raw)

    assert response.status_code == 401
    assert fake_buildkite.job(uuid).state == "scheduled"


def test_registration_rejects_a_malformed_body(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    headers = {"Authorization": f"Token {fake_buildkite.agent_token}"}
    response = bk_http.post(f"{fake_buildkite.agent_endpoint}/register", content=b"{oops", headers=headers)
    assert response.status_code == 400 and "JSON" in response.json()["message"]


def test_idle_agent_calls_answer_like_buildkite(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    auth = register(bk_http, fake_buildkite)
    with httpx.Client(base_url=fake_buildkite.agent_endpoint, headers=auth) as http:
        assert http.post("/connect").json()["connection_state"] == "connected"
        beat = http.post("/heartbeat", json={"sent_at": "2026-01-01T00:00:00Z"}).json()
        assert beat["sent_at"] == "2026-01-01T00:00:00Z" and beat["received_at"]
        assert http.get("/ping").json() == {}
        assert http.post("/disconnect").json()["connection_state"] == "disconnected"


def test_agent_faults_can_target_one_path(bk_http: httpx.Client, fake_buildkite: FakeBuildkite) -> None:
    uuid = fake_buildkite.add_job()
    auth = register(bk_http, fake_buildkite)
    fake_buildkite.inject("agent", status=503, retry_after=1, path="/finish")

    statuses = fail_job(bk_http, fake_buildkite, uuid, auth, b"x")

    assert statuses == [200, 200, 201, 503]
    assert fake_buildkite.job(uuid).state == "running"


def test_an_agent_cannot_acquire_a_job_of_another_cluster(
    bk_http: httpx.Client, fake_buildkite: FakeBuildkite
) -> None:
    # The failure a controller without cluster scoping causes: its pod's agent is refused the job.
    theirs = fake_buildkite.add_job(cluster_id="5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b")
    ours = fake_buildkite.add_job()
    auth = register(bk_http, fake_buildkite)

    refused = bk_http.put(f"{fake_buildkite.agent_endpoint}/jobs/{theirs}/acquire", headers=auth)
    taken = bk_http.put(f"{fake_buildkite.agent_endpoint}/jobs/{ours}/acquire", headers=auth)

    assert refused.status_code == 422 and "cluster" in refused.json()["message"]
    assert fake_buildkite.job(theirs).state == "scheduled"
    assert taken.status_code == 200 and fake_buildkite.job(ours).state == "accepted"
