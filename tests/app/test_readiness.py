"""Readiness means "this replica can take a webhook now" (issue 8), seen on a whole controller.

Each test builds the real controller with ``app.main.create_app`` and runs its lifespan in-process: the
cluster is ``FakeGateway`` (its Lease calls can be refused), Buildkite and the leader's relay route are
an ``httpx.MockTransport`` that records every request, and ``/readyz`` and ``/metrics`` are read over
``httpx.ASGITransport``. Two situations from the issue's "Why":

* a follower that has not called GraphQL for hours stays Ready (readiness used to need a GraphQL answer
  in the last 300 s, and a follower only calls GraphQL for its own webhooks), and still takes a webhook;
* a Lease RBAC refuses makes the replica NotReady, with the missing rule in ``/readyz`` detail, the
  ``leader_lease_forbidden`` metric and one error log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.buildkite.signature import sign
from app.errors import Forbidden
from app.leader import LEADER_URL_ANNOTATION
from app.main import Controller, create_app
from app.relay import RELAY_PATH
from app.settings import BuildkiteSettings, IntakeSettings, LeaderSettings, Settings, WebhookSettings
from tests.app.fake_gateway import FakeGateway
from tests.support import eventually

WEBHOOK_SECRET = "readiness-webhook-secret"
LEASE = "buildkite-controller-leader"
OTHER_LEADER_URL = "http://10.0.0.7:8080"
JOB = "0199a1b2-c3d4-7e5f-8a9b-00000000beef"
FOUR_HOURS = 4 * 3600.0


def settings(identity: str) -> Settings:
    return Settings(
        webhook=WebhookSettings(secret=SecretStr(WEBHOOK_SECRET)),
        buildkite=BuildkiteSettings(
            token=SecretStr("graphql-token"),
            org="acme",
            agent_token=SecretStr("agent-token"),
            graphql_endpoint="https://graphql.buildkite.test/v1",
            agent_endpoint="https://agent.buildkite.test/v3",
        ),
        intake=IntakeSettings(queues=("kubernetes",)),
        leader=LeaderSettings(lease_name=LEASE, identity=identity),
    )


def lease_held_by(holder: str) -> dict[str, Any]:
    """A Lease another replica holds and renewed just now, for an hour: this replica stays a follower."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE, "annotations": {LEADER_URL_ANNOTATION: OTHER_LEADER_URL}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600, "renewTime": stamp},
    }


class Outside:
    """Buildkite and the other replicas, as the controller's HTTP client reaches them."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if request.url.path == RELAY_PATH:
            return httpx.Response(202, json={"accepted": 1, "duplicates": 0})
        return httpx.Response(503, text="not expected in this test")

    def to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]


class LeasesForbidden(FakeGateway):
    """A cluster whose RBAC gives this replica no rule on Leases: every Lease call is a 403."""

    def _refuse(self, verb: str) -> Forbidden:
        return Forbidden(
            403,
            "Forbidden",
            f'leases.coordination.k8s.io "{LEASE}" is forbidden: User '
            f'"system:serviceaccount:buildkite:buildkite-controller" cannot {verb} resource "leases"',
            is_quota=False,
        )

    async def get_lease(self, name: str) -> dict[str, Any] | None:
        self._enter("get_lease", name)
        raise self._refuse("get")

    async def create_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._enter("create_lease", lease["metadata"]["name"])
        raise self._refuse("create")

    async def replace_lease(self, name: str, lease: dict[str, Any]) -> dict[str, Any]:
        self._enter("replace_lease", name)
        raise self._refuse("update")


Scenario = Callable[[Controller, httpx.AsyncClient, Outside], Awaitable[None]]


async def running(kube: FakeGateway, identity: str, scenario: Scenario) -> None:
    outside = Outside()
    async with httpx.AsyncClient(transport=httpx.MockTransport(outside.handle)) as http:
        app = create_app(settings(identity), kube=kube, http=http)
        async with app.router.lifespan_context(app), controller_client(app) as client:
            controller: Controller = app.state.controller
            await eventually(controller.watch.synced.is_set, "pod watch synced", timeout=20)
            await scenario(controller, client, outside)


@contextlib.asynccontextmanager
async def controller_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://controller") as client:
        yield client


def scheduled_webhook(uuid: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "event": "job.scheduled",
            "job": {
                "id": uuid,
                "type": "script",
                "state": "scheduled",
                "agent_query_rules": ["queue=kubernetes"],
            },
        }
    ).encode()
    signature = sign(body, secret=WEBHOOK_SECRET, timestamp=int(time.time()))
    return body, {
        "content-type": "application/json",
        "x-buildkite-event": "job.scheduled",
        "x-buildkite-signature": signature,
    }


def test_a_follower_without_graphql_for_hours_stays_ready_and_takes_webhooks() -> None:
    kube = FakeGateway()
    kube.leases[LEASE] = lease_held_by("replica-a")

    async def scenario(controller: Controller, client: httpx.AsyncClient, outside: Outside) -> None:
        await eventually(
            lambda: controller.elector.status().holder == "replica-a", "the Lease read", timeout=20
        )
        assert not controller.is_leader()

        # Never asked GraphQL, then last answered four hours ago: Ready both times.
        for last_answer in (None, time.time() - FOUR_HOURS):
            controller.graphql.last_success_at = last_answer
            assert controller.is_ready() == {
                "accepting": True,
                "pod_watch_synced": True,
                "intake_not_full": True,
                "lease_allowed": True,
            }
            response = await client.get("/readyz")
            assert response.status_code == 200, response.text
            detail = response.json()["detail"]
            assert detail["leader"] == "replica-a" and detail["is_leader"] is False
            assert detail["lease_problem"] is None
        assert detail["graphql_answered_seconds_ago"] >= FOUR_HOURS

        # Ready means it can take a webhook now: it accepts one and hands it to the leader.
        body, headers = scheduled_webhook(JOB)
        response = await client.post("/webhooks/buildkite", content=body, headers=headers)
        assert response.status_code == 202, response.text
        relayed = await eventually(
            lambda: outside.to("10.0.0.7"), "the job relayed to the leader", timeout=20
        )
        assert json.loads(relayed[0].content)["jobs"] == [JOB]
        assert outside.to("graphql.buildkite.test") == []  # the follower never needed GraphQL

    asyncio.run(running(kube, "replica-b", scenario))


def test_a_lease_rbac_refuses_makes_the_replica_not_ready_and_names_the_missing_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(controller: Controller, client: httpx.AsyncClient, outside: Outside) -> None:
        await eventually(
            lambda: not controller.is_ready()["lease_allowed"], "the Lease refusal noticed", timeout=20
        )
        checks = controller.is_ready()
        assert checks == {
            "accepting": True,
            "pod_watch_synced": True,
            "intake_not_full": True,
            "lease_allowed": False,
        }
        problem = controller.readiness_detail()["lease_problem"]
        assert isinstance(problem, str)
        for words in (
            'Kubernetes forbids "get" on leases.coordination.k8s.io',
            f'"{LEASE}"',
            'namespace "buildkite"',
            'apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get"]',
            f'resourceNames: ["{LEASE}"]',
        ):
            assert words in problem, (words, problem)

        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["lease_allowed"] is False
        assert response.json()["detail"]["lease_problem"] == problem

        metrics = (await client.get("/metrics")).text
        assert 'buildkite_controller_leader_lease_forbidden{verb="get"} 1.0' in metrics
        assert not controller.is_leader()

    with caplog.at_level(logging.ERROR, logger="app.leader"):
        asyncio.run(running(LeasesForbidden(), "replica-b", scenario))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "app.leader"]
    assert len(errors) == 1, errors  # once, naming the rule; not once per election round
    assert 'verbs: ["get"]' in errors[0] and "cannot get resource" in errors[0]
