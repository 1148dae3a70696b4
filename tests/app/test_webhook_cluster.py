"""The webhook's cluster pre-filter: another cluster's job is dropped before it costs a GraphQL call;
a payload that cannot tell (no or a malformed ``cluster_id``) is left to the confirm's check."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.buildkite.webhook import is_other_cluster, parse_event
from app.metrics import Metrics
from app.settings import WebhookSettings
from app.tags import ControllerTags
from app.webhook import WebhookIntake

JOB_ID = "0190c5e8-1d2b-4f6a-9c3e-7a1b2c3d4e5f"
CLUSTER = "7b4f3c2a-1d5e-4f6a-9b8c-0d1e2f3a4b5c"
OTHER_CLUSTER = "5c1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
MISSING = object()


def payload(cluster_id: object = MISSING, **job: object) -> bytes:
    body: dict[str, object] = {
        "id": JOB_ID,
        "type": "script",
        "agent_query_rules": ["queue=kubernetes"],
        **job,
    }
    if cluster_id is not MISSING:
        body["cluster_id"] = cluster_id
    return json.dumps({"event": "job.scheduled", "job": body}).encode()


def parsed(cluster_id: object = MISSING, **job: object):  # type: ignore[no-untyped-def]
    job_event = parse_event("job.scheduled", payload(cluster_id, **job), max_bytes=1 << 20).job
    assert job_event is not None
    return job_event


@pytest.mark.parametrize(
    ("cluster_id", "configured", "other"),
    [
        (OTHER_CLUSTER, CLUSTER, True),
        (None, CLUSTER, True),  # an unclustered job is not our cluster's
        (CLUSTER, CLUSTER, False),
        (CLUSTER.upper(), CLUSTER, False),
        (base64.b64encode(f"Cluster---{OTHER_CLUSTER}".encode()).decode(), CLUSTER, True),  # a GraphQL id
        (OTHER_CLUSTER, None, False),  # no cluster configured: today's behaviour
        (MISSING, CLUSTER, False),  # the payload cannot tell: the confirm decides
        ("not-a-uuid", CLUSTER, False),
        (7, CLUSTER, False),
        ({"uuid": OTHER_CLUSTER}, CLUSTER, False),
        ("x" * 5000, CLUSTER, False),
        (base64.b64encode(b"\xff\xfe").decode(), CLUSTER, False),
    ],
    ids=[
        "other",
        "unclustered",
        "ours",
        "ours-upper-case",
        "other-graphql-id",
        "unscoped",
        "absent",
        "not-a-uuid",
        "number",
        "object",
        "huge",
        "binary-base64",
    ],
)
def test_only_a_payload_that_shows_another_cluster_is_dropped(
    cluster_id: object, configured: str | None, other: bool
) -> None:
    assert is_other_cluster(parsed(cluster_id), configured) is other


def test_a_payload_cannot_claim_to_know_its_cluster() -> None:
    job = parsed(MISSING, has_cluster=True)
    assert not job.has_cluster and not is_other_cluster(job, CLUSTER)


@given(st.one_of(st.none(), st.text(max_size=200), st.integers(), st.lists(st.text(max_size=5), max_size=3)))
def test_no_cluster_id_value_breaks_parsing(value: object) -> None:
    job = parsed(value)
    assert job.cluster_id is None or len(job.cluster_id) == 36


def post_all(bodies: list[bytes], *, cluster_uuid: str | None) -> tuple[list[tuple[int, str]], list[str]]:
    """Post each body to a WebhookIntake route; returns (status, result) per body and what reached intake."""
    submitted: list[str] = []

    class Intake:
        def submit(self, uuid: str, *, source: str = "webhook") -> bool:
            submitted.append(uuid)
            return True

    webhooks = WebhookIntake(
        settings=WebhookSettings(allow_unsigned=True),
        tags=ControllerTags.from_settings(queues=["kubernetes"], tags=[]),
        intake=Intake(),  # type: ignore[arg-type]
        on_cancel=lambda uuid: None,
        metrics=Metrics(),
        cluster_uuid=cluster_uuid,
    )
    async def main() -> list[tuple[int, str]]:
        transport = httpx.ASGITransport(app=webhooks)
        async with httpx.AsyncClient(transport=transport, base_url="http://controller") as http:
            answers = []
            for body in bodies:
                response = await http.post("/webhooks/buildkite", content=body)
                answers.append((response.status_code, response.json().get("result", "")))
            return answers

    return asyncio.run(main()), submitted


def test_the_route_drops_the_other_clusters_job_of_the_same_queue() -> None:
    ours, theirs = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    bodies = [payload(CLUSTER, id=ours), payload(OTHER_CLUSTER, id=theirs)]

    answers, submitted = post_all(bodies, cluster_uuid=CLUSTER)
    assert answers == [(202, "accepted"), (200, "not_our_cluster")]
    assert submitted == [ours]

    answers, submitted = post_all(bodies, cluster_uuid=None)
    assert answers == [(202, "accepted"), (202, "accepted")] and submitted == [ours, theirs]
