"""``parse_event`` hands pydantic only the job fields ``WebhookJob`` reads; nothing it reads may be lost.
Its fast paths (a UUID as Buildkite sends it, the body straight from ASGI) accept and refuse what the
general ones do."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from app.buildkite.webhook import _JOB_FIELDS, WebhookJob, parse_event
from app.errors import WebhookRejected
from app.webhook import receive_body

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


@pytest.mark.parametrize(
    "sent",
    [UUID, UUID.upper(), "{" + UUID + "}", "urn:uuid:" + UUID, UUID.replace("-", "")],
    ids=["canonical", "upper-case", "braces", "urn", "no hyphens"],
)
def test_every_form_of_a_uuid_becomes_the_canonical_one(sent: str) -> None:
    job = {"id": sent, "cluster_id": sent}
    event = parse_event(None, json.dumps({"event": "job.scheduled", "job": job}).encode(), max_bytes=10**6)
    assert event.job is not None
    assert (event.job.id, event.job.cluster_id, event.job.has_cluster) == (UUID, UUID, True)


@pytest.mark.parametrize(
    "sent", [UUID + "\n", " " + UUID, UUID[:-1] + "g", UUID + "0", UUID.replace("-", "_")]
)
def test_near_uuids_are_refused(sent: str) -> None:
    body = json.dumps({"event": "job.scheduled", "job": {"id": sent}}).encode()
    with pytest.raises(WebhookRejected) as caught:
        parse_event(None, body, max_bytes=10**6)
    assert caught.value.status == 400


def chunks(*parts: bytes, disconnect: bool = False) -> Receive:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1 or disconnect}
        for index, part in enumerate(parts)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def test_a_body_in_chunks_is_joined() -> None:
    assert asyncio.run(receive_body(chunks(b"ab", b"", b"cd"), limit=4, declared="4")) == b"abcd"


def test_a_body_is_refused_once_it_passes_the_limit_whatever_it_declared() -> None:
    for declared in (None, "3", "999999999999", "-1", "x"):
        with pytest.raises(WebhookRejected) as caught:
            asyncio.run(receive_body(chunks(b"ab", b"cd", b"ef"), limit=3, declared=declared))
        assert caught.value.status == 413


def test_a_client_that_goes_away_mid_body_is_a_disconnect_not_a_body() -> None:
    with pytest.raises(ClientDisconnect):
        asyncio.run(receive_body(chunks(b"ab", disconnect=True), limit=10, declared=None))
