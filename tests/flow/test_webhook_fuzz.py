"""Property test of ``POST /webhooks/buildkite`` on a running controller: hostile input never gets in.

One stack (fake apiserver, fake Buildkite, the real controller under uvicorn) serves every example.
Each example is a request with a random body (JSON-ish, binary, a real job's payload, or over the size
limit) and random headers (signature formats, tokens, event names, huge or odd values). Most are
unsigned or wrongly signed: they must get a 4xx — never a 5xx, never a 2xx — and must cause nothing: no
pod, and no Buildkite call about their job. A few are signed correctly for a fresh job; those must
still be accepted (202) and get their pod, so the test would notice a controller that refused
everything.

"Bait" jobs are real jobs in the fake Buildkite, held back (``limited``) so no sweep lists them, whose
job.scheduled payloads the hostile requests carry. A request that slipped past the signature check
would show three ways: a 2xx answer, a GraphQL confirm naming a bait job, and (had the job become
scheduled) a pod.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.simulate.webhook_sender import sign
from tests.flow.harness import WEBHOOK_SECRET, Stack, running_stack, wait_until

URL_PATH = "/webhooks/buildkite"
MAX_BODY = 1024 * 1024  # the controller's default webhook.max_body_bytes
SKEW = 300  # the controller's default webhook.max_skew_seconds
EVENTS = ["job.scheduled", "job.finished", "job.started", "ping", "build.running", "", "JOB.SCHEDULED"]


@dataclass
class Fuzz:
    stack: Stack
    bait: list[str]
    bait_bodies: list[bytes]
    valid: list[str] = field(default_factory=list)
    hostile: int = 0


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    flags = {"max-in-flight": 0}
    with running_stack(Path(tmp_path_factory.mktemp("fuzz")), flags=flags) as stack:
        bait = [stack.buildkite.add_job(command=f"echo bait {i}", state="limited") for i in range(4)]
        yield Fuzz(stack, bait, [scheduled_body(stack, uuid) for uuid in bait])


def scheduled_body(stack: Stack, uuid: str) -> bytes:
    """The job.scheduled payload Buildkite would send for ``uuid`` once it is scheduled."""
    payload = json.loads(stack.sender.job_body("job.scheduled", stack.buildkite.job(uuid)))
    payload["job"]["state"] = "scheduled"
    return json.dumps(payload).encode()


# --- strategies -----------------------------------------------------------------------------------------

# Header values travel as latin-1 bytes: printable ASCII plus obs-text, as HTTP allows.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=64,
)
odd_text = st.one_of(
    header_text,
    st.text(alphabet="=,; \t0123456789abcdefABCDEFtimestampsignature", max_size=200),
    st.integers(1, 12_000).map(lambda n: "x" * n),  # far over the 1,024-character header limit
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    payload = draw(json_values)
    if draw(st.booleans()):  # an object with the fields a parser looks at, possibly wrong-typed
        payload = {"event": draw(st.sampled_from(EVENTS) | json_values), "job": draw(json_values)}
    return json.dumps(payload).encode()


def bodies(bait_bodies: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(bait_bodies),  # a real scheduled job: the most tempting thing to forge
        json_bodies(),
        st.binary(max_size=512),
        st.sampled_from([b"", b"{", b"null", b"[]", b'{"event":"ping"}', b"\xff\xfe\x00"]),
        st.integers(MAX_BODY + 1, MAX_BODY + 4096).map(lambda n: b"{" + b" " * (n - 2) + b"}"),
    )


@st.composite
def bad_signatures(draw: st.DrawFn, body: bytes) -> list[tuple[str, str]]:
    """``X-Buildkite-Signature`` headers that must all be refused for ``body``."""
    now = int(time.time())
    good = sign(WEBHOOK_SECRET, now, body)
    random_hex = draw(st.binary(min_size=32, max_size=32)).hex()
    wrong_secret = draw(st.text(min_size=1, max_size=40).filter(lambda s: s != WEBHOOK_SECRET))
    skew = draw(st.integers(SKEW + 5, 10**6)) * draw(st.sampled_from([-1, 1]))
    kind = draw(st.integers(0, 9))
    value = [
        None,
        draw(odd_text),
        f"timestamp={now},signature={random_hex}",
        sign(wrong_secret, now, body),
        sign(WEBHOOK_SECRET, now, body + b" "),
        sign(WEBHOOK_SECRET, now + skew, body),
        f"{good},signature={random_hex}",
        f"timestamp={now}",
        good + "," + "x" * 1100,
        "DUPLICATE",
    ][kind]
    if value is None:
        return []
    if value == "DUPLICATE":  # the right signature, plus a second header Buildkite never sends
        return [("X-Buildkite-Signature", good), ("X-Buildkite-Signature", f"timestamp={now},signature=0")]
    return [("X-Buildkite-Signature", value)]


@st.composite
def hostile_requests(draw: st.DrawFn, bait_bodies: list[bytes]) -> tuple[bytes, list[tuple[str, str]]]:
    body = draw(bodies(bait_bodies))
    headers = draw(bad_signatures(body))
    if draw(st.booleans()):
        headers.append(("X-Buildkite-Event", draw(st.sampled_from(EVENTS) | odd_text)))
    if draw(st.booleans()):
        headers.append(("X-Buildkite-Token", draw(st.sampled_from([WEBHOOK_SECRET, ""]) | odd_text)))
    if draw(st.booleans()):
        headers.append(
            ("Content-Type", draw(st.sampled_from(["application/json", "text/plain"]) | header_text))
        )
    return body, headers


# --- the test -------------------------------------------------------------------------------------------


def post(stack: Stack, body: bytes, headers: list[tuple[str, str]]) -> int:
    # HTTP strips the whitespace around a header value; h11 refuses to send it, so do not try.
    encoded = [(name.encode(), value.strip(" \t").encode("latin-1")) for name, value in headers]
    return stack.http.post(stack.controller.url + URL_PATH, content=body, headers=encoded).status_code


def send_valid(fuzz: Fuzz) -> None:
    stack = fuzz.stack
    uuid = stack.buildkite.add_job(command="echo valid")
    body = stack.sender.job_body("job.scheduled", stack.buildkite.job(uuid))
    headers = [
        ("X-Buildkite-Event", "job.scheduled"),
        ("X-Buildkite-Signature", sign(WEBHOOK_SECRET, int(time.time()), body)),
        ("Content-Type", "application/json"),
    ]
    encoded = [(name.encode(), value.encode("latin-1")) for name, value in headers]
    response = stack.http.post(stack.controller.url + URL_PATH, content=body, headers=encoded)
    # Accepted; or already known because a sweep listed the job a moment before its webhook arrived
    # (the job exists in Buildkite first, as in life) — either way it must get its pod, checked below.
    assert response.status_code == 202 or (
        response.status_code == 200 and response.json().get("result") == "duplicate"
    ), (response.status_code, response.text)
    fuzz.valid.append(uuid)


def uuids_asked_about(fuzz: Fuzz) -> set[str]:
    """Job UUIDs named in every Buildkite call except the sweep's own (which names none)."""
    named: set[str] = set()
    graphql_path = urlsplit(fuzz.stack.buildkite.graphql_url).path
    for call in fuzz.stack.buildkite.calls:
        if call.path == graphql_path:
            body = call.json()
            if body.get("operationName") == "ScheduledJobs":
                continue
            named.update(str(v) for v in (body.get("variables") or {}).values())
        else:
            named.add(call.path)
    return named


def test_hostile_webhooks_are_refused_without_side_effects_and_valid_ones_still_work(fuzz: Fuzz) -> None:
    @settings(
        max_examples=600,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        if fuzz.hostile % 25 == 0:
            send_valid(fuzz)
        body, headers = data.draw(hostile_requests(fuzz.bait_bodies), label="request")
        status = post(fuzz.stack, body, headers)
        assert 400 <= status < 500, f"hostile request answered {status}"
        fuzz.hostile += 1

    one_request()
    stack = fuzz.stack
    assert fuzz.valid and fuzz.hostile > 400
    wait_until(lambda: all(stack.pod_for(u) for u in fuzz.valid), timeout=10, what="the valid jobs' pods")
    pod_jobs = {pod["metadata"]["labels"]["buildkite.com/job-uuid"] for pod in stack.pods()}
    assert pod_jobs == set(fuzz.valid)
    asked = uuids_asked_about(fuzz)
    assert not any(bait in entry for bait in fuzz.bait for entry in asked)
    assert {entry for entry in asked if entry not in fuzz.valid} == set(), "Buildkite was asked about junk"
    status = stack.get("/healthz")
    assert status.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="unsigned"),
        pytest.param([("X-Buildkite-Signature", "timestamp=,signature=")], id="empty-parts"),
        pytest.param([("X-Buildkite-Signature", "timestamp=1e9,signature=" + "0" * 64)], id="float-time"),
        pytest.param([("X-Buildkite-Token", WEBHOOK_SECRET)], id="secret-sent-as-token"),
    ],
)
def test_a_bait_job_with_a_bad_signature_is_401_and_gets_no_pod(
    fuzz: Fuzz, headers: list[tuple[str, str]]
) -> None:
    status = post(fuzz.stack, fuzz.bait_bodies[0], [("X-Buildkite-Event", "job.scheduled"), *headers])
    assert status == 401
    assert fuzz.stack.pod_for(fuzz.bait[0]) is None


def test_a_header_too_large_for_the_http_server_is_a_4xx(fuzz: Fuzz) -> None:
    headers = [("X-Buildkite-Signature", "x" * 20_000)]
    assert 400 <= post(fuzz.stack, fuzz.bait_bodies[0], headers) < 500
