"""Parsing webhook bodies into WebhookEvent: good payloads, unknown events, and hostile bodies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.buildkite.webhook import WebhookEvent, parse_event
from app.errors import WebhookRejected

JOB_ID = "0190C5E8-1D2B-4F6A-9C3E-7A1B2C3D4E5F"
LIMIT = 64 * 1024


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def job_payload(**job: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": JOB_ID,
        "state": "scheduled",
        "type": "script",
        "agent_query_rules": ["queue=kubernetes", "os=linux"],
        "priority": {"number": 5},
        "command": "make test",
        "env": {"SECRET": "x"},
    }
    base.update(job)
    return {
        "event": "job.scheduled",
        "job": base,
        "build": {"id": "b"},
        "pipeline": {},
        "sender": {"id": "u"},
    }


def test_a_job_scheduled_event_yields_the_job_fields_the_intake_needs() -> None:
    event = parse_event("job.scheduled", body(job_payload()), max_bytes=LIMIT)
    assert event.event == "job.scheduled"
    assert event.is_job_event
    assert event.job is not None
    assert event.job.id == JOB_ID.lower()
    assert event.job.state == "scheduled"
    assert event.job.type == "script"
    assert event.job.agent_query_rules == ("queue=kubernetes", "os=linux")
    assert event.job.priority == 5


def test_the_result_is_frozen() -> None:
    event = parse_event(None, body(job_payload()), max_bytes=LIMIT)
    with pytest.raises(ValueError, match="frozen"):
        event.event = "job.finished"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"priority": 7}, {"priority": 7}),
        ({"priority": None}, {"priority": None}),
        ({"priority": {"number": None}}, {"priority": None}),
        ({"agent_query_rules": []}, {"agent_query_rules": ()}),
        ({"state": "SCHEDULED"}, {"state": "scheduled"}),
        ({"state": None, "type": None}, {"state": None, "type": None}),
    ],
    ids=[
        "bare priority",
        "null priority",
        "null priority number",
        "no rules",
        "upper-case state",
        "null state",
    ],
)
def test_lenient_job_fields_are_normalised(job: dict[str, object], expected: dict[str, object]) -> None:
    event = parse_event(None, body(job_payload(**job)), max_bytes=LIMIT)
    assert event.job is not None
    for name, value in expected.items():
        assert getattr(event.job, name) == value


@pytest.mark.parametrize(
    ("header", "payload", "name"),
    [
        ("ping", {"event": "ping", "service": {}, "organization": {}}, "ping"),
        ("build.finished", {"event": "build.finished", "build": {}}, "build.finished"),
        ("agent.blocked", {"event": "agent.blocked", "job": "not even an object"}, "agent.blocked"),
        ("some.future_event", {"event": "some.future_event"}, "some.future_event"),
        ("job.promised_exit_status", {"job": {"id": JOB_ID}}, "job.promised_exit_status"),
    ],
    ids=["ping", "build event", "non-job event ignores job", "unknown event", "name only in header"],
)
def test_other_and_unknown_events_parse_without_a_job(
    header: str, payload: dict[str, object], name: str
) -> None:
    event = parse_event(header, body(payload), max_bytes=LIMIT)
    assert event.event == name
    assert (event.job is not None) == name.startswith("job.")


HOSTILE = {
    "not json": (b"{not json", 400, "not valid JSON"),
    "empty body": (b"", 400, "not valid JSON"),
    "invalid utf-8": (b'{"event": "\xff\xfe"}', 400, "not valid JSON"),
    "json array": (b"[1, 2]", 400, "JSON object"),
    "json string": (b'"job.scheduled"', 400, "JSON object"),
    "deeply nested": (b"[" * 30_000 + b"]" * 30_000, 400, "not valid JSON"),
    "no event anywhere": (body({"job": {"id": JOB_ID}}), 400, "no event name"),
    "event not a string": (body({"event": 5}), 400, "event: must be a string"),
    "event with odd characters": (body({"event": "job.scheduled; DROP"}), 400, "event"),
    "job event without job": (body({"event": "job.scheduled"}), 400, "needs a job"),
    "job not an object": (body({"event": "job.scheduled", "job": [1]}), 400, "job"),
    "job id missing": (body(job_payload(id=None)), 400, "job.id"),
    "job id not a uuid": (body(job_payload(id="../../etc/passwd")), 400, "job.id: must be a job UUID"),
    "job id a number": (body(job_payload(id=12)), 400, "job.id"),
    "job id huge": (body(job_payload(id="a" * 10_000)), 400, "job.id"),
    "rules not a list": (body(job_payload(agent_query_rules="queue=x")), 400, "agent_query_rules"),
    "rule not a string": (body(job_payload(agent_query_rules=[{"queue": "x"}])), 400, "agent_query_rules"),
    "priority not a number": (body(job_payload(priority={"number": "high"})), 400, "priority"),
    "too large": (b" " * (LIMIT + 1), 413, "limit"),
}


@pytest.mark.parametrize(("raw", "status", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_bodies_are_rejected_with_a_4xx_and_a_reason(raw: bytes, status: int, reason: str) -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse_event(None, raw, max_bytes=LIMIT)
    assert caught.value.status == status
    assert reason in caught.value.reason
    assert len(caught.value.reason) <= 300


def test_an_event_header_that_disagrees_with_the_signed_body_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="disagrees") as caught:
        parse_event("job.finished", body(job_payload()), max_bytes=LIMIT)
    assert caught.value.status == 400


def test_reasons_do_not_echo_the_offending_value() -> None:
    with pytest.raises(WebhookRejected) as caught:
        parse_event(None, body(job_payload(id="attacker-controlled-text")), max_bytes=LIMIT)
    assert "attacker-controlled-text" not in caught.value.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["job.scheduled", "ping", "job.finished", ""]) | st.text(max_size=20),
        "job": json_values | st.fixed_dictionaries({}, optional={"id": json_values, "priority": json_values}),
    },
)


@settings(max_examples=300, deadline=None)
@given(header=st.one_of(st.none(), st.text(max_size=30)), payload=payloads)
def test_random_payloads_never_raise_anything_but_webhook_rejected(
    header: str | None, payload: object
) -> None:
    try:
        event = parse_event(header, body(payload), max_bytes=LIMIT)
    except WebhookRejected as rejected:
        assert rejected.status == 400
    else:
        assert isinstance(event, WebhookEvent)
