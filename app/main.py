"""``create_app(settings)``: the stages built back to front, each given the next, under one FastAPI app.

    POST /webhooks/buildkite ─► webhook ─► intake ─► confirm ─► admit ─► create ─► Pod
    timer / POST /reconcile  ─► sweep ───┘                        ▲
    Kubernetes pod watch ─────────────────────────────────────────┴─► lifecycle (retention, failures, cancel)

Every piece of state the controller needs after a restart lives in the cluster (pod labels and
annotations) or in Buildkite; what is in memory is a cache rebuilt by the first list and sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from app.admit import Admitter
from app.buildkite.agent_api import AgentAPI
from app.buildkite.graphql import GraphQLClient
from app.confirm import Confirmer
from app.create import Creator
from app.fail import JobFailer
from app.intake import MAX_PENDING, Intake
from app.jobs import JobBook
from app.kube import KubeAPI, KubeGateway, TokenBucket, open_kube_api
from app.leader import LeaderElector
from app.lifecycle import LifecyclePolicy
from app.lifecycle.runner import LifecycleRunner
from app.metrics import Metrics
from app.ops import router as ops_router
from app.podview import container_summary
from app.relay import Relay, RelayReceiver
from app.relay import router as relay_router
from app.settings import Settings
from app.sweep import Sweeper
from app.tags import ControllerTags
from app.waiting import within
from app.watch import PodWatch
from app.web import router as web_router
from app.webhook import PATH as WEBHOOK_PATH
from app.webhook import WebhookIntake

log = logging.getLogger(__name__)

# Bookkeeping of finished/dropped jobs is trimmed this often.
HOUSEKEEPING_SECONDS = 30.0
# Giving the Lease back at shutdown may take this long; after that a follower waits out its expiry.
LEASE_RELEASE_SECONDS = 3.0
# A crashed stage loop restarts after these pauses (the last one repeats).
RESTART_BACKOFF_SECONDS = (0.1, 1.0, 5.0, 30.0)
# Creates already sent get this long to finish at shutdown; well inside the pod's 30 s grace period.
SHUTDOWN_DRAIN_SECONDS = 10.0
# Every other shutdown step (stopping the stage loops, closing each client) gets at most this long.
SHUTDOWN_STEP_SECONDS = 2.0


@dataclass
class Controller:
    """Every stage of one running controller; built by ``build_controller``, started by ``start``."""

    settings: Settings
    metrics: Metrics
    kube: KubeGateway
    graphql: GraphQLClient
    jobs: JobBook
    watch: PodWatch
    intake: Intake
    confirmer: Confirmer
    admitter: Admitter
    creator: Creator
    sweeper: Sweeper
    lifecycle: LifecycleRunner
    webhooks: WebhookIntake
    relay_receiver: RelayReceiver
    elector: LeaderElector
    accepting: bool = True
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def is_leader(self) -> bool:
        return self.elector.is_leader()

    async def start(self) -> None:
        for name, loop in (
            ("watch", self.watch.run),
            ("intake", self.intake.run),
            ("admit", self.admitter.run),
            ("lifecycle", self.lifecycle.run),
            ("sweep", self._sweep_when_synced),
            ("housekeeping", self._housekeeping),
            ("leader", self.elector.run),
        ):
            self.tasks.append(asyncio.create_task(supervised(name, loop), name=name))

    async def stop(self) -> None:
        """Readiness goes false, creates already sent finish, then the Lease is given up.

        Every phase is bounded, so the whole stays inside the pod's grace period however slow the
        apiserver is; what a phase leaves undone is safe to drop (see ``Admitter.drain``)."""
        self.accepting = False
        took: dict[str, float] = {}
        started = time.monotonic()
        await self.admitter.drain(timeout=SHUTDOWN_DRAIN_SECONDS)
        took["drain"] = time.monotonic() - started
        for task in self.tasks:
            task.cancel()
        _, stuck = await asyncio.wait(self.tasks, timeout=SHUTDOWN_STEP_SECONDS)
        for task in stuck:
            log.warning(
                "stage loop %s did not stop when cancelled; left waiting at:%s",
                task.get_name(),
                "".join(f"\n  {where}" for where in await_chain(task)),
            )
        took["loops"] = time.monotonic() - started - sum(took.values())
        # After the elector's loop is gone, so it cannot take the Lease back while we release it. Bounded:
        # an overloaded apiserver must not push us past the grace period (the Lease then just expires).
        await _bounded(self.elector.release(), LEASE_RELEASE_SECONDS)
        took["lease"] = time.monotonic() - started - sum(took.values())
        for close in self.closers:
            await _bounded(close(), SHUTDOWN_STEP_SECONDS)
        took["close"] = time.monotonic() - started - sum(took.values())
        log.info(
            "stopped in %.1f s (%s)",
            time.monotonic() - started,
            ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in took.items()),
        )

    def is_ready(self) -> dict[str, bool]:
        """Ready means "this replica can take a webhook now": a follower relays it to the leader, so
        Buildkite's reachability is not a condition (a follower may not call GraphQL for hours). A
        Lease that RBAC refuses is: then no replica can ever lead, and nothing would be created."""
        return {
            "accepting": self.accepting,
            "pod_watch_synced": self.watch.synced.is_set(),
            "intake_not_full": self.intake.pending() < MAX_PENDING,
            "lease_allowed": self.elector.status().forbidden is None,
        }

    def readiness_detail(self) -> dict[str, object]:
        """What an operator reads beside the checks: who leads, and why a check fails."""
        status = self.elector.status()
        answered = self.graphql.last_success_at
        return {
            "replica": status.identity,
            "leader": status.holder,
            "is_leader": status.is_leader,
            "lease": status.lease,
            "lease_problem": status.forbidden.message() if status.forbidden else status.last_error,
            "intake_pending": self.intake.pending(),
            "graphql_answered_seconds_ago": None if answered is None else round(time.time() - answered, 1),
        }

    def leadership_changed(self, leading: bool) -> None:
        """The one place a change of leadership fans out from."""
        self.metrics.is_leader.set(1 if leading else 0)
        self.admitter.leadership_changed(leading)
        self.intake.retry_now()  # jobs waiting out a relay back-off go to their new destination now
        if leading:
            self.sweeper.trigger()  # a new leader sweeps at once: the old one may have died mid-burst
            self.lifecycle.wake()  # and acts on the pods it has only been watching

    async def _sweep_when_synced(self) -> None:
        # The first sweep must see the pods that already exist, or it would create duplicates' work.
        await self.watch.synced.wait()
        await self.sweeper.run()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.jobs.forget_old()


def build_controller(settings: Settings, *, kube: KubeGateway, http: httpx.AsyncClient) -> Controller:
    """The stages, built back to front, each given the next; nothing here carries logic."""
    metrics = Metrics()
    tags = ControllerTags.from_settings(queues=settings.intake.queues, tags=settings.intake.tags)
    bk = settings.buildkite
    identity = settings.leader.identity or _default_identity()
    graphql = GraphQLClient(http, url=bk.graphql_endpoint, token=_secret(bk.token) or "")
    # serve refuses to start without an agent token: without one no job that cannot run could be failed.
    agent_api = AgentAPI(http, endpoint=bk.agent_endpoint, agent_token=_secret(bk.agent_token) or "")
    failer = JobFailer(agent_api, metrics=metrics)
    book = JobBook(replica=identity, timer=metrics, max_ended=settings.server.job_trails)
    controller: Controller | None = None

    def leadership_changed(leading: bool) -> None:
        if controller is not None:
            controller.leadership_changed(leading)

    elector = LeaderElector(
        kube=kube,
        name=settings.leader.lease_name,
        identity=identity,
        advertise_url=advertise_url(settings),
        lease_duration_seconds=settings.leader.lease_duration_seconds,
        renew_interval_seconds=settings.leader.renew_interval_seconds,
        renew_deadline_seconds=settings.leader.renew_deadline_seconds,
        on_change=leadership_changed,
        metrics=metrics,
    )
    watch = PodWatch(kube=kube, controller_id=settings.pod.id, metrics=metrics)
    lifecycle = LifecycleRunner(
        kube=kube,
        watch=watch,
        graphql=graphql,
        failer=failer,
        metrics=metrics,
        settings=settings.lifecycle,
        policy=_policy(settings),
        is_leader=elector.is_leader,
        book=book,
        redact=_own_secrets(settings),
    )
    creator = Creator(kube=kube, pod_config=settings.pod, metrics=metrics)
    admitter = Admitter(
        book=book,
        creator=creator,
        recheck=_Recheck(lambda: confirmer),
        failer=failer,
        live_pods=watch.live_count,
        max_in_flight=settings.admit.max_in_flight,
        concurrency=settings.admit.create_concurrency,
        quota_deadline_seconds=settings.lifecycle.pending_timeout_seconds,
        metrics=metrics,
        is_leader=elector.is_leader,
        backlog=settings.intake.batch_size,  # one confirm batch ready ahead of the creates
        hand_over=lambda uuids: intake.take_back(uuids),
    )
    cluster_uuid = settings.intake.cluster_uuid
    confirmer = Confirmer(
        graphql=graphql, tags=tags, book=book, admitter=admitter, metrics=metrics, cluster_uuid=cluster_uuid
    )
    relay_key = _secret(settings.webhook.secret) or _secret(settings.webhook.token)
    relay = Relay(http=http, leader_url=lambda: elector.leader_url, key=relay_key, book=book, metrics=metrics)
    intake = Intake(
        book=book,
        confirmer=confirmer,
        relay=relay,
        is_leader=elector.is_leader,
        batch_size=settings.intake.batch_size,
        metrics=metrics,
    )
    sweeper = Sweeper(
        graphql=graphql,
        org=bk.org,
        tags=tags,
        intake=intake,
        book=book,
        settings=settings.sweep,
        metrics=metrics,
        is_leader=elector.is_leader,
        capacity_full=admitter.is_full,
        cluster_uuid=cluster_uuid,
    )

    def on_cancel(uuid: str) -> None:
        book.cancel(uuid)
        lifecycle.cancel(uuid)

    def on_cancel_webhook(uuid: str) -> None:
        on_cancel(uuid)
        if not elector.is_leader():  # only the leader deletes pods: tell it now, not at its next poll
            task = asyncio.get_running_loop().create_task(relay.forward_cancel(uuid))
            background.add(task)
            task.add_done_callback(background.discard)

    background: set[asyncio.Task[bool]] = set()

    controller = Controller(
        elector=elector,
        settings=settings,
        metrics=metrics,
        kube=kube,
        graphql=graphql,
        jobs=book,
        watch=watch,
        intake=intake,
        confirmer=confirmer,
        admitter=admitter,
        creator=creator,
        sweeper=sweeper,
        lifecycle=lifecycle,
        webhooks=WebhookIntake(
            settings=settings.webhook,
            tags=tags,
            intake=intake,
            on_cancel=on_cancel_webhook,
            metrics=metrics,
            is_accepting=lambda: controller is not None and controller.accepting,
            cluster_uuid=cluster_uuid,
        ),
        relay_receiver=RelayReceiver(
            key=relay_key,
            allow_unsigned=settings.webhook.allow_unsigned,
            submit=lambda uuid: intake.submit(uuid, source="relay"),
            cancel=on_cancel,
            is_leader=elector.is_leader,
            max_skew_seconds=settings.webhook.max_skew_seconds,
        ),
    )
    # The book first: every later listener reads a record that already knows the pod.
    watch.subscribe(
        lambda view: (
            book.pod_seen(
                view.job_uuid,
                phase=view.phase,
                deleted=view.deleted,
                containers=container_summary(view),
            )
            if view.job_uuid
            else None
        )
    )
    watch.subscribe(lifecycle.on_pod)
    watch.subscribe(lambda view: admitter.pod_changed(view.job_uuid))
    return controller


class _Recheck:
    """Admission's re-check goes to the confirmer, which is built after the admitter it feeds."""

    def __init__(self, confirmer: Callable[[], Confirmer]) -> None:
        self._confirmer = confirmer

    async def recheck(self, uuids: list[str]) -> dict[str, str]:
        return await self._confirmer().recheck(uuids)


def advertise_url(settings: Settings) -> str:
    """Where followers reach this replica when it leads: the pod's IP (downward API ``POD_IP``)."""
    if settings.server.advertise_url:
        return settings.server.advertise_url
    host = os.environ.get("POD_IP") or (
        settings.server.host if settings.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    )
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


class ControllerApp(FastAPI):
    """The controller's routes, with the webhook served before FastAPI's layers (see ``app.webhook``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH:
            controller: Controller = self.state.controller  # set by the lifespan before any request
            await controller.webhooks(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, *, kube: KubeGateway | None = None, http: httpx.AsyncClient | None = None
) -> FastAPI:
    """The FastAPI app; the controller starts with the app's lifespan and stops with it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        closers: list[Callable[[], Awaitable[None]]] = []
        client = http
        if client is None:
            client = httpx.AsyncClient(timeout=settings.buildkite.http_timeout_seconds)
            closers.append(client.aclose)
        gateway = kube
        if gateway is None:
            owned = await _kube_api(settings)
            closers.append(owned.close)
            gateway = owned
        controller = build_controller(settings, kube=gateway, http=client)
        controller.closers.extend(closers)
        app.state.controller = controller
        await controller.start()
        try:
            yield
        finally:
            await controller.stop()

    app = ControllerApp(title="buildkite-controller", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(relay_router())
    app.include_router(ops_router())
    app.include_router(web_router())
    return app


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a task is waiting, outermost first: its coroutine and each one it awaits in turn
    (``Task.get_stack`` shows only the outermost frame of a suspended coroutine)."""
    chain: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            chain.append(repr(awaited)[:200])  # a future, or a C-level awaitable: the end of the chain
            break
        chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return chain


async def _bounded(step: Awaitable[object], seconds: float) -> None:
    """Await ``step`` for at most ``seconds`` (it is cancelled after that); shutdown goes on regardless."""
    try:
        await within(step, seconds)
    except TimeoutError:
        log.warning("a shutdown step took longer than %.0f s and was abandoned", seconds)


async def _kube_api(settings: Settings) -> KubeAPI:
    return await open_kube_api(
        kubeconfig=settings.kube.kubeconfig,
        namespace=settings.pod.namespace,
        lease_namespace=settings.leader.lease_namespace or None,
        limiter=TokenBucket(settings.kube.qps, settings.kube.burst),
    )


def _policy(settings: Settings) -> LifecyclePolicy:
    lc = settings.lifecycle
    return LifecyclePolicy(
        succeeded_retention_seconds=lc.succeeded_retention_seconds,
        failed_retention_seconds=lc.failed_retention_seconds,
        image_pull_grace_seconds=lc.image_pull_grace_seconds,
        pending_timeout_seconds=lc.pending_timeout_seconds,
        agent_done_grace_seconds=lc.agent_done_grace_seconds,
    )


def _default_identity() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _own_secrets(settings: Settings) -> list[str | None]:
    """The controller's credentials, redacted from container logs it copies into job logs."""
    return [
        _secret(value)
        for value in (
            settings.buildkite.token,
            settings.buildkite.agent_token,
            settings.webhook.secret,
            settings.webhook.token,
            settings.server.ops_token,
        )
    ]


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


async def supervised(
    name: str, loop: Callable[[], Awaitable[None]], *, backoff: tuple[float, ...] = RESTART_BACKOFF_SECONDS
) -> None:
    """Run a stage's loop forever: a crash (a bug, an error no adapter translated) is logged and the
    loop restarted after a back-off, so one bad event cannot silently stop the watch or the sweep."""
    crashes = 0
    while True:
        try:
            await loop()
            return
        except Exception:
            delay = backoff[min(crashes, len(backoff) - 1)]
            crashes += 1
            log.exception("background task %s crashed; restarting it in %.1f s", name, delay)
            await asyncio.sleep(delay)
