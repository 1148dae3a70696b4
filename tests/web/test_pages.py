"""The status page, the decision trail and the "Reconcile now" form, against a controller stand-in.

Requests go through httpx's ASGI transport, so a test can be any client address (loopback or not).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from app.jobs import Stage
from app.sweep import SweepSummary
from tests.web.stand_ins import app_for, controller

UUID = "0190a1b2-0000-4000-8000-000000000001"
OTHER = "0190a1b2-0000-4000-8000-000000000002"
BASE = "http://controller.test"
HOSTILE_REASON = "<script>alert('reason')</script>"
HOSTILE_DETAIL = '"><img src=x onerror=alert(1)>'


def call(
    stand_in: Any,
    method: str,
    path: str,
    *,
    client: tuple[str, int] = ("127.0.0.1", 40000),
    **kwargs: Any,
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_for(stand_in), client=client)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def tick(stand_in: Any, seconds: float) -> None:
    stand_in.clock.now += seconds


def failed_job(stand_in: Any, uuid: str = UUID, *, reason: str = "image pull: not found") -> None:
    book = stand_in.jobs
    book.sighted(uuid, source="webhook")
    tick(stand_in, 0.01)
    book.move(uuid, Stage.CONFIRMING, "confirm", "batch of 1")
    tick(stand_in, 0.2)
    book.move(uuid, Stage.QUEUED, "confirmed", "scheduled, priority 0")
    book.move(uuid, Stage.CREATING, "create", "in flight 0")
    tick(stand_in, 0.1)
    book.move(uuid, Stage.CREATED, "created", f"buildkite-{uuid}")
    book.pod_seen(uuid, phase="Pending", deleted=False)
    tick(stand_in, 3)
    book.note(uuid, "decision", HOSTILE_DETAIL)
    book.end(uuid, Stage.FAILED, "buildkite", reason, outcome="failed: image_pull")


# --- the decision trail -------------------------------------------------------------------------------


def test_trail_as_json_lists_every_step_in_order_with_its_time_and_replica() -> None:
    stand_in = controller()
    failed_job(stand_in)
    response = call(stand_in, "GET", f"/jobs/{UUID}", headers={"Accept": "application/json"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    job = response.json()
    assert (job["stage"], job["outcome"], job["reason"]) == (
        "failed",
        "failed: image_pull",
        "image pull: not found",
    )
    whats = [step["what"] for step in job["trail"]]
    assert whats == ["webhook", "confirm", "confirmed", "create", "created", "pod", "decision", "buildkite"]
    times = [step["at"] for step in job["trail"]]
    assert times == sorted(times) and times[-1] - times[0] == pytest.approx(3.31)
    assert job["trail"][2]["offset_seconds"] == pytest.approx(0.21)
    assert job["trail"][0]["time"] == "2023-11-14T22:13:20.000+00:00"
    assert {step["replica"] for step in job["trail"]} == {"replica-a"}


def test_trail_for_a_browser_is_a_page_with_the_same_steps() -> None:
    stand_in = controller()
    failed_job(stand_in)
    response = call(stand_in, "GET", f"/jobs/{UUID}", headers={"Accept": "text/html,application/json;q=0.9"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    rows = re.findall(r'<td class="what">([^<]*)</td>', response.text)
    assert rows == ["webhook", "confirm", "confirmed", "create", "created", "pod", "decision", "buildkite"]
    assert 'data-refresh="/jobs/' + UUID + '?fragment=1"' in response.text


def test_trail_of_an_uppercase_uuid_is_the_same_job() -> None:
    stand_in = controller()
    failed_job(stand_in)
    response = call(stand_in, "GET", f"/jobs/{UUID.upper()}", headers={"Accept": "application/json"})
    assert response.status_code == 200 and response.json()["uuid"] == UUID


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_a_job_never_seen_is_404(accept: str) -> None:
    stand_in = controller()
    failed_job(stand_in)
    response = call(stand_in, "GET", f"/jobs/{OTHER}", headers={"Accept": accept})
    assert response.status_code == 404
    assert "has not seen this job" in response.text


@pytest.mark.parametrize(
    "path",
    ["/jobs/not-a-uuid", "/jobs/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/jobs/" + "a" * 5000, "/jobs/%00"],
    ids=["words", "script", "huge", "nul"],
)
def test_a_malformed_job_uuid_is_400_and_not_echoed(path: str) -> None:
    response = call(controller(), "GET", path, headers={"Accept": "text/html"})
    # 404 when the decoded path is no longer one segment (%2F): the route itself does not match.
    assert response.status_code == (404 if "%2F" in path else 400)
    assert "<script>alert" not in response.text and "a" * 100 not in response.text


def test_hostile_job_data_is_escaped_on_every_page() -> None:
    stand_in = controller()
    failed_job(stand_in, reason=HOSTILE_REASON)
    pages = [
        call(stand_in, "GET", f"/jobs/{UUID}").text,
        call(stand_in, "GET", f"/jobs/{UUID}?fragment=1").text,
        call(stand_in, "GET", "/").text,
        call(stand_in, "GET", "/?fragment=1").text,
    ]
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt;" in pages[0]
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in pages[0]
    assert "&lt;script&gt;alert" in pages[2]  # the reason of a recent outcome
    # JSON carries the text as it is: escaping is the renderer's job, and JSON is not HTML.
    json_reason = call(stand_in, "GET", f"/jobs/{UUID}", headers={"Accept": "application/json"}).json()[
        "reason"
    ]
    assert json_reason == HOSTILE_REASON


def test_pages_forbid_inline_script_and_foreign_sources() -> None:
    response = call(controller(), "GET", "/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy


# --- the status page -----------------------------------------------------------------------------------


def test_status_page_shows_role_capacity_budget_sweep_jobs_in_flight_and_outcomes() -> None:
    stand_in = controller()
    failed_job(stand_in)
    stand_in.jobs.sighted(OTHER, source="sweep")
    tick(stand_in, 2.5)
    stand_in.sweeper.last = SweepSummary(seen=7, queued=2, unannounced=1)
    stand_in.sweeper.last_at = stand_in.clock.now - 42
    page = call(stand_in, "GET", "/").text
    assert _text(page, "role") == "leader"
    assert _text(page, "leader").startswith("this replica")
    assert _text(page, "in-flight") == "2 of 10"
    assert _text(page, "budget") == "19000 of 20000 points left"
    assert _text(page, "last-sweep") == "found 7 scheduled, 2 new, 1 unannounced (42 s ago)"
    in_flight = _table(page, "in-flight-jobs")
    assert (
        [row[0] for row in in_flight] == [OTHER] and in_flight[0][1] == "seen" and in_flight[0][2] == "2.5 s"
    )
    recent = _table(page, "recent-jobs")
    assert recent[0][:3] == [UUID, "failed: image_pull", "image pull: not found"]
    assert f'href="/jobs/{UUID}"' in page


def test_a_follower_names_the_leader_it_read_from_the_lease() -> None:
    stand_in = controller()
    stand_in.elector.leading = False
    stand_in.elector.holder = "replica-b"
    page = call(stand_in, "GET", "/").text
    assert _text(page, "role") == "follower"
    assert _text(page, "leader").startswith("replica-b (http://10.0.0.7:8080)")


def test_a_failed_sweep_shows_its_error() -> None:
    stand_in = controller()
    stand_in.sweeper.last = SweepSummary(error="GraphQL: HTTP 502 <b>bad gateway</b>")
    page = call(stand_in, "GET", "/").text
    assert _text(page, "last-sweep") == "failed: GraphQL: HTTP 502 &lt;b&gt;bad gateway&lt;/b&gt;"


def test_the_fragment_is_only_the_part_the_script_replaces() -> None:
    fragment = call(controller(), "GET", "/?fragment=1").text
    assert "<html" not in fragment and 'id="role"' in fragment and "Reconcile now" not in fragment


@pytest.mark.parametrize("recent", ["abc", "-1", "1" * 40])
def test_a_bad_recent_count_is_a_4xx_or_clamped(recent: str) -> None:
    response = call(controller(), "GET", f"/?recent={recent}")
    assert response.status_code in (200, 422)


def test_only_the_pages_own_static_files_are_served() -> None:
    stand_in = controller()
    script = call(stand_in, "GET", "/static/refresh.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert call(stand_in, "GET", "/static/..%2F__init__.py").status_code == 404
    assert call(stand_in, "GET", "/static/routes.py").status_code == 404


# --- "Reconcile now" -----------------------------------------------------------------------------------


def post_form(stand_in: Any, *, headers: dict[str, str], data: Any = None, **kwargs: Any) -> httpx.Response:
    return call(stand_in, "POST", "/status/reconcile", headers=headers, data=data or {}, **kwargs)


SAME_ORIGIN = {"Origin": BASE}


def test_reconcile_now_from_the_page_sweeps_and_returns_to_it() -> None:
    stand_in = controller()
    response = post_form(stand_in, headers=SAME_ORIGIN)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert stand_in.sweeper.triggers == ["status page"]


def test_a_referer_of_our_own_page_is_enough_without_origin() -> None:
    stand_in = controller()
    assert post_form(stand_in, headers={"Referer": f"{BASE}/"}).status_code == 303


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "https://evil.example"}, {"Origin": "null"}, {"Referer": "https://evil.example/x"},
     {"Origin": "http://controller.test.evil.example"}, {"Origin": "https://controller.test"}],
    ids=["none", "other-site", "null-origin", "other-referer", "suffix", "other-scheme"],
)  # fmt: skip
def test_reconcile_now_from_another_site_is_refused(headers: dict[str, str]) -> None:
    stand_in = controller()
    response = post_form(stand_in, headers=headers)
    assert response.status_code == 403
    assert stand_in.sweeper.triggers == []


def test_without_an_ops_token_only_loopback_clients_may_reconcile() -> None:
    stand_in = controller()
    response = post_form(stand_in, headers=SAME_ORIGIN, client=("10.1.2.3", 40000))
    assert response.status_code == 403 and "ops token" in response.text
    assert stand_in.sweeper.triggers == []


@pytest.mark.parametrize(
    ("form", "authorization", "status"),
    [
        ({}, None, 401),
        ({"ops_token": "wrong"}, None, 401),
        ({"ops_token": "s3cret"}, None, 303),
        ({}, "Bearer s3cret", 303),
        ({"ops_token": "wrong"}, "Bearer s3cret", 401),
        ({"ops_token": "ünïcode"}, None, 401),
    ],
    ids=["none", "wrong-field", "field", "header", "wrong-field-wins", "non-ascii"],
)
def test_with_an_ops_token_the_form_needs_it(
    form: dict[str, str], authorization: str | None, status: int
) -> None:
    stand_in = controller(ops_token="s3cret")
    headers = {**SAME_ORIGIN, **({"Authorization": authorization} if authorization else {})}
    response = post_form(stand_in, headers=headers, data=form, client=("10.1.2.3", 40000))
    assert response.status_code == status
    assert stand_in.sweeper.triggers == (["status page"] if status == 303 else [])


def test_the_page_asks_for_the_token_only_when_one_is_configured() -> None:
    assert 'name="ops_token"' in call(controller(ops_token="s3cret"), "GET", "/").text
    assert 'name="ops_token"' not in call(controller(), "GET", "/").text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("&".join(f"f{i}=x" for i in range(50)), "application/x-www-form-urlencoded"),
        ("ops_token=" + "x" * 10_000, "application/x-www-form-urlencoded"),
        ("--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\nx\r\n--b--\r\n",
         "multipart/form-data; boundary=b"),
    ],
    ids=["many-fields", "huge-field", "file"],
)  # fmt: skip
def test_a_hostile_form_is_a_4xx_and_sweeps_nothing(body: str, content_type: str) -> None:
    stand_in = controller()
    response = post_form(stand_in, headers={**SAME_ORIGIN, "Content-Type": content_type}, content=body)
    assert 400 <= response.status_code < 500
    assert stand_in.sweeper.triggers == []


# --- helpers -------------------------------------------------------------------------------------------


def _text(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</dd>', page, re.S)
    assert match, f"no #{element_id} on the page"
    return " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split())


def _table(page: str, table_id: str) -> list[list[str]]:
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert match, f"no #{table_id} on the page"
    rows = re.findall(r"<tr data-job[^>]*>(.*?)</tr>", match.group(1), re.S)
    return [[_plain(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def _plain(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", html).split())
