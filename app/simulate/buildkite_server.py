"""`FakeBuildkite`: Buildkite's GraphQL and agent APIs in one loopback server, for tests.

Start it (`with FakeBuildkite() as bk:` or `bk.start()`), point the controller at `bk.graphql_url` and
`bk.agent_endpoint`, and drive Buildkite's side in-process (`add_job`, `cancel`, `set_state`, `inject`)
or over HTTP under `/_test/...` (see `buildkite_control_api`). Every request is recorded (`calls`).
Given a `WebhookSender`, job transitions emit `job.scheduled` / `job.started` / `job.finished`
webhooks as Buildkite does: a sync sender delivers them inline, in the thread that made the change; an
async one queues them until `await flush_webhooks()`. Spec: reference/buildkite-api.md §7.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from app.simulate.buildkite_agent_api import AgentAPI, AgentRegistry
from app.simulate.buildkite_clock import Clock, ManualClock, SystemClock
from app.simulate.buildkite_control_api import control_routes
from app.simulate.buildkite_faults import CallLog, Fault, FaultBook, PointsBudget, RecordedCall
from app.simulate.buildkite_graphql import GraphQLEndpoint, GraphQLSettings
from app.simulate.buildkite_graphql_nodes import GraphQLRoot
from app.simulate.buildkite_jobs import FakeJob, FakeOrganization, agent_query_rules, step_env
from app.simulate.buildkite_middleware import RecordAndFaultMiddleware
from app.simulate.buildkite_store import JobStore, NewJob
from app.simulate.buildkite_thread import LoopbackServer
from app.simulate.started import Started
from app.simulate.webhook_sender import Delivery, WebhookSender

DEFAULT_API_TOKEN = "bkua_fake_api_token"
DEFAULT_AGENT_TOKEN = "bkct_fake_agent_token"


class FakeBuildkite(Started):
    """An in-memory Buildkite served over HTTP on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        api_tokens: Iterable[str] = (DEFAULT_API_TOKEN,),
        agent_tokens: Iterable[str] = (DEFAULT_AGENT_TOKEN,),
        org: FakeOrganization | None = None,
        clock: Clock | None = None,
        sender: WebhookSender | None = None,
        points_limit: int = 20_000,
        points_window_seconds: float = 300.0,
    ) -> None:
        api_tokens, agent_tokens = tuple(api_tokens), tuple(agent_tokens)
        if not api_tokens or not agent_tokens:
            raise ValueError("FakeBuildkite needs at least one API token and one agent token")
        self.org = org or FakeOrganization()
        self.clock = clock or SystemClock()
        self.api_token, self.agent_token = api_tokens[0], agent_tokens[0]
        self.store = JobStore(self.clock)
        self.call_log = CallLog()
        self.faults = FaultBook()
        self.budget = PointsBudget(self.clock, limit=points_limit, window_seconds=points_window_seconds)
        self.registry = AgentRegistry(frozenset(agent_tokens))
        self.graphql_settings = GraphQLSettings(api_tokens=frozenset(api_tokens))
        self.sender = sender
        self._points_limit = points_limit
        self.webhook_outbox: list[tuple[str, FakeJob]] = []
        self.store.subscribe(self._emit_webhook)
        self.app = self._build_app()
        self._server = LoopbackServer(self.app, name="fake-buildkite")
        self.url: str | None = None

    def _build_app(self) -> Starlette:
        graphql = GraphQLEndpoint(GraphQLRoot(self.store, self.org), self.budget, self.graphql_settings)
        agent = AgentAPI(self.store, self.registry, self.clock, cluster_id=self.org.cluster_uuid)
        routes = [
            Route("/v1", graphql.handle, methods=["POST"]),
            *agent.routes(),
            *control_routes(self),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(
            RecordAndFaultMiddleware,
            calls=self.call_log,
            faults=self.faults,
            budget=self.budget,
            clock=self.clock,
        )
        return app

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a fresh loopback port; returns the base URL (also in `url`)."""
        self.url = self._server.start()
        return self.url

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Back to a fresh state (no jobs, calls, faults, sender or spent points), keeping the server.

        Starting a server costs ~0.2 s, mostly uvicorn's shutdown polling; tests share one and reset it.
        """
        self.store.clear()
        self.call_log.clear()
        self.faults.clear()
        self.budget.reset(limit=self._points_limit)
        self.sender = None
        self.webhook_outbox.clear()

    @property
    def graphql_url(self) -> str:
        return f"{self._require_url()}/v1"

    @property
    def agent_endpoint(self) -> str:
        """What BUILDKITE_AGENT_ENDPOINT (and the controller's agent client) should point at."""
        return f"{self._require_url()}/v3"

    def _require_url(self) -> str:
        if self.url is None:
            raise RuntimeError("FakeBuildkite is not started; call start() or use it as a context manager")
        return self.url

    # -- Buildkite's side: jobs -------------------------------------------------------------------

    def add_job(
        self,
        *,
        command: str = "echo hello",
        agents: dict[str, str] | None = None,
        rules: list[str] | None = None,
        plugins: list[dict[str, Any] | str] | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        priority: int = 0,
        state: str = "scheduled",
        step_key: str | None = None,
        label: str | None = None,
        pipeline_slug: str = "pipeline",
        build_number: int = 1,
        branch: str = "main",
        clustered: bool = True,
        cluster_id: str | None = None,
        uuid: str | None = None,
    ) -> str:
        """Create a command job as a pipeline step would; returns its UUID.

        `agents` is the step's `agents:` map (default `{"queue": "kubernetes"}`), or give raw `rules`.
        `plugins` is the step's `plugins:` list (`[{"kubernetes": {...}}]`); `image` its `image:`.
        `env` entries are laid over the derived environment. Jobs belong to the organisation's cluster
        (`org.cluster_uuid`, or `cluster_id`) unless `clustered=False`; GraphQL's `Organization.jobs`
        lists only clustered jobs unless asked for `clustered: false`, as Buildkite's schema defaults.
        """
        job_uuid = uuid or str(uuid_module.uuid4())
        job_env = step_env(
            uuid=job_uuid,
            command=command,
            plugins=plugins,
            image=image,
            step_key=step_key,
            pipeline_slug=pipeline_slug,
            build_number=build_number,
            branch=branch,
            org_slug=self.org.slug,
        ) | (env or {})
        new = NewJob(
            uuid=job_uuid,
            command=command,
            agent_query_rules=rules if rules is not None else agent_query_rules(agents),
            env=job_env,
            priority=priority,
            state=state,
            label=label,
            step_key=step_key,
            pipeline_slug=pipeline_slug,
            build_number=build_number,
            branch=branch,
            cluster_id=(cluster_id or self.org.cluster_uuid) if clustered else None,
        )
        return self.store.add(new).uuid

    def cancel(self, job_uuid: str) -> str:
        """Cancel from the UI (§7.1 row 17); returns the new state (`canceled` or `canceling`)."""
        return self.store.cancel(job_uuid).state

    def set_state(self, job_uuid: str, state: str) -> None:
        self.store.set_state(job_uuid, state)

    def job(self, job_uuid: str) -> FakeJob:
        """A copy of the job as it is now."""
        return self.store.get(job_uuid)

    def jobs(self) -> list[FakeJob]:
        return self.store.all()

    def log(self, job_uuid: str) -> bytes:
        return bytes(self.store.get(job_uuid).log)

    # -- faults, limits, clock ------------------------------------------------------------------

    def inject(
        self,
        surface: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
        latency_seconds: float = 0.0,
        count: int | None = 1,
        path: str | None = None,
    ) -> Fault:
        """Make the next `count` calls to `surface` ("graphql", "agent", "any") misbehave."""
        fault = Fault(surface, status, retry_after, errors, latency_seconds, count, path)
        return self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_points(self, *, limit: int | None = None, used: int | None = None) -> None:
        """Shrink or pre-spend the organisation's GraphQL points to reach a 429 quickly."""
        self.budget.set(limit=limit, used=used)

    def advance_clock(self, seconds: float) -> float:
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance_clock needs FakeBuildkite(clock=ManualClock())")
        return self.clock.advance(seconds)

    # -- what the controller did ------------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        return self.call_log.snapshot()

    def calls_to(self, path_contains: str, *, method: str | None = None) -> list[RecordedCall]:
        return [
            call
            for call in self.call_log.snapshot()
            if path_contains in call.path and (method is None or call.method == method)
        ]

    def finish_calls(self, job_uuid: str) -> int:
        """How many agent-API finish requests (accepted or not) named this job."""
        return len(self.calls_to(f"/v3/jobs/{job_uuid}/finish", method="PUT"))

    # -- webhooks ---------------------------------------------------------------------------------

    def _emit_webhook(self, event: str, job: FakeJob) -> None:
        if self.sender is None:
            return
        if self.sender.is_async:
            # An async client belongs to the caller's event loop; the caller flushes from there.
            self.webhook_outbox.append((event, job))
        else:
            self.sender.send_job_event(event, job)

    async def flush_webhooks(self) -> list[Delivery]:
        """Send the webhooks queued for an async sender, in order."""
        assert self.sender is not None, "FakeBuildkite has no webhook sender"
        deliveries: list[Delivery] = []
        while self.webhook_outbox:
            event, job = self.webhook_outbox.pop(0)
            deliveries += await self.sender.asend_job_event(event, job)
        return deliveries
