"""``parse_event`` hands pydantic only the job fields ``WebhookJob`` reads; nothing it reads may be lost."""

from __future__ import annotations

import json

from app.buildkite.webhook import _JOB_FIELDS, WebhookJob, parse_event

UUID = "0b9e2a6c-8a3e-4c52-9d54-0a4c2f0e2f1d"


def test_every_field_the_model_reads_from_the_payload_is_passed_on() -> None:
    assert set(_JOB_FIELDS) == set(WebhookJob.model_fields) - {"has_cluster"}


def test_fields_survive_the_trim_and_the_rest_is_ignored() -> None:
    job = {
        "id": UUID.upper(),
        "state": "SCHEDULED",
        "type": "script",
        "agent_query_rules": ["queue=kubernetes"],
        "priority": {"number": 3},
        "cluster_id": None,
        "has_cluster": False,  # derived, never taken from the payload
        "command": "x" * 1000,
    }
    event = parse_event(
        "job.scheduled", json.dumps({"event": "job.scheduled", "job": job}).encode(), max_bytes=10**6
    )
    assert event.job is not None
    assert event.job.model_dump() == {
        "id": UUID,
        "state": "scheduled",
        "type": "script",
        "agent_query_rules": ("queue=kubernetes",),
        "priority": 3,
        "cluster_id": None,
        "has_cluster": True,
    }


def test_a_payload_claiming_has_cluster_without_cluster_id_decides_nothing() -> None:
    body = json.dumps({"event": "job.scheduled", "job": {"id": UUID, "has_cluster": True}}).encode()
    event = parse_event("job.scheduled", body, max_bytes=10**6)
    assert event.job is not None and event.job.has_cluster is False
