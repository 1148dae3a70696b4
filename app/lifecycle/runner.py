"""The lifecycle loop: keeps ``decide`` applied to every pod of ours, and carries out what it says.

Input: changed pods from the pod watch (``on_pod``, a ``PodWatch`` listener), cancellations from the
``job.finished`` webhook (``cancel``), the clock, and Buildkite job states from the batched check in
``app.lifecycle.job_states``. Output: actions run by ``app.lifecycle.actions`` (fail the job, mark the pod,
delete the pod) and the lifecycle metrics.

One pass (``step``) decides every pod that changed, whose timer is due (``Keep(recheck_at)``) or whose
job state just arrived, then starts the state check if it is due. Bounds, with the defaults:

* a finished pod is deleted at its retention (its timer), a failing pod is handled when its grace
  ends; a failure needing the job state waits for one GraphQL round, started at once;
* a pending pod of a cancelled job is deleted on the ``job.finished`` webhook, else at the next state
  check, at most ``cancel_check_interval_seconds`` later.

Facts that must survive a restart live on the pod (annotations); until a marker we wrote shows up in a
watch event it is remembered here and laid over the view, so a second event cannot repeat the call.
Only the leader acts; followers keep their view and re-decide everything when they take over. ``run``
waits on an event with a timeout equal to the next due timer: no fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from app.jobs import JobBook, Stage
from app.kube import KubeGateway
from app.lifecycle.actions import AGENT_HOLDS, POD_MAY_GO, JobFailing, LifecycleActions
from app.lifecycle.deadlines import Deadlines
from app.lifecycle.decide import (
    CANCELLED_STATES,
    CheckJobState,
    Delete,
    FailJob,
    Keep,
    LifecyclePolicy,
    Notify,
    decide,
)
from app.lifecycle.job_states import JobStateCheck, JobStateSource
from app.lifecycle.pod_logs import LogLimits, PodLogReader
from app.metrics import Metrics
from app.podview import PodView
from app.settings import LifecycleSettings
from app.waiting import wait_set
from app.watch import PodWatch

log = logging.getLogger(__name__)

# A follower has no event telling it that it became leader, so it looks this often.
FOLLOWER_RECHECK_SECONDS = 1.0
# Longest idle wait; a safety net only, every real deadline is a timer.
MAX_IDLE_SECONDS = 30.0
# Retries after a failed Kubernetes or Buildkite call, by attempt; the bound stays short because the
# cluster and Buildkite disagree meanwhile.
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
# Recovery on a big cluster may find hundreds of finished pods: the Kubernetes client's rate limiter
# spaces the calls, this caps how many wait in it at once.
MAX_CONCURRENT_ACTIONS = 32
GAUGE_INTERVAL_SECONDS = 1.0
MAX_EARLY_CANCELS = 1024
# An early cancel bridges a create already sent and its pod's first watch event (seconds). Past this no
# pod is coming (and the Pending-pod state poll would still find the cancel): it is dropped, so a
# replica that took cancels for jobs it never had a pod for returns to holding none.
EARLY_CANCEL_SECONDS = 600.0


@dataclass(slots=True)
class PodRecord:
    """Everything the runner keeps about one pod (kopf's per-object memory), by pod name.

    A new pod under the same name (another uid) starts a fresh record: markers, attempts and the
    failure's detection time belong to the pod, not to the name.
    """

    view: PodView  # the latest seen (a deleted pod stays until its last decision settles)
    # Annotations we wrote that no watch event has shown yet, laid over the view so a second event
    # cannot repeat the call: "reported" / "notified" -> reason.
    markers: dict[str, str] = field(default_factory=dict)
    delete_sent: bool = False  # our delete is on its way
    attempts: int = 0  # failed tries of the current action
    not_before: float = -math.inf  # end of the retry back-off
    detected_at: float | None = None  # when its failure was first seen
    busy: asyncio.Task[None] | None = None  # its running action
    noted_until: float | None = None  # the last "kept until" written to the job's trail

    def seen(self, view: PodView) -> None:
        if view.uid != self.view.uid:
            self.markers.clear()
            self.delete_sent, self.attempts, self.not_before, self.detected_at = False, 0, -math.inf, None
        self.view = view
        if self.markers and _shows(view, self.markers):
            self.markers.clear()  # the cluster has the facts now; memory is no longer needed

    def decided_view(self) -> PodView:
        if not self.markers:
            return self.view
        return replace(
            self.view,
            failure_reported=self.view.failure_reported or self.markers.get("reported"),
            failure_notified=self.view.failure_notified or self.markers.get("notified"),
        )


@dataclass(slots=True)
class JobPods:
    """Per job: its pods' names, and when we learned it was cancelled (for the cancel metric)."""

    names: set[str] = field(default_factory=set)
    cancelled_at: float | None = None


class LifecycleRunner:
    def __init__(
        self,
        *,
        kube: KubeGateway,
        watch: PodWatch,
        graphql: JobStateSource,
        failer: JobFailing,
        policy: LifecyclePolicy,
        settings: LifecycleSettings,
        metrics: Metrics,
        is_leader: Callable[[], bool] = lambda: True,
        book: JobBook | None = None,
        clock: Callable[[], float] = time.time,
        redact: Iterable[str | None] = (),
    ) -> None:
        self._watch = watch
        self._book = book
        self._policy = policy
        self._metrics = metrics
        self._is_leader = is_leader
        self._clock = clock
        self._actions = LifecycleActions(
            kube=kube,
            failer=failer,
            metrics=metrics,
            abort_grace_seconds=policy.abort_grace_seconds,
            clock=clock,
            # ``redact``: the controller's own tokens, kept out of the container logs we attach.
            logs=PodLogReader(kube, limits=pod_log_limits(settings), secrets=redact),
            book=book,
        )
        self.check = JobStateCheck(graphql, interval_seconds=settings.cancel_check_interval_seconds)
        self._pods: dict[str, PodRecord] = {}  # by pod name
        self._jobs: dict[str, JobPods] = {}  # lower-case job uuid -> its pods
        # Cancels for jobs we have no pod for yet (the webhook raced the pod create); bounded, because
        # most cancelled jobs in an org never had a pod here.
        self._early_cancels: dict[str, float] = {}
        # Scheduling, not state: which pods to decide now, and when the others are due again.
        self._dirty: set[str] = set()
        self._timers: Deadlines[str] = Deadlines()
        self._check_task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_ACTIONS)
        self._wake = asyncio.Event()
        self._was_leader = False
        self._gauges_at = -math.inf

    # --- inputs -------------------------------------------------------------------------------------

    def on_pod(self, view: PodView) -> None:
        """Watch listener: remember the pod's current view and wake the loop. Never blocks."""
        record = self._pods.get(view.name)
        if view.deleted and not self._is_leader():
            # A follower has nothing left to do for a gone pod; keeping it would grow without bound
            # and make a takeover re-decide every pod this replica ever saw.
            if record is not None:
                self._forget(view.name, record)
            return
        if record is None:
            record = self._pods[view.name] = PodRecord(view)
        record.seen(view)
        if view.job_uuid:
            job = self._jobs.setdefault(view.job_uuid.lower(), JobPods())
            job.names.add(view.name)
            cancelled_at = self._early_cancels.pop(view.job_uuid.lower(), None)
            if cancelled_at is not None:
                self.check.record(view.job_uuid, "canceled", now=cancelled_at)
                if job.cancelled_at is None:
                    job.cancelled_at = cancelled_at
        self._dirty.add(view.name)
        self._wake.set()

    def cancel(self, uuid: str) -> None:
        """The job was cancelled (``job.finished`` webhook): its pending pod goes at the next pass."""
        now = self._clock()
        job = self._jobs.get(uuid.lower())
        if job is None or not job.names:
            self._early_cancels.pop(uuid.lower(), None)  # re-added last: the dict stays oldest first
            self._early_cancels[uuid.lower()] = now
            self._forget_early_cancels(now)
            return
        self.check.record(uuid, "canceled", now=now)
        if job.cancelled_at is None:
            job.cancelled_at = now
        self._dirty.update(job.names)
        self._wake.set()

    def wake(self) -> None:
        """Run a pass soon (e.g. leadership was just won)."""
        self._wake.set()

    # --- the loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Recover from the cluster's state, then keep every pod decided until cancelled."""
        await self.recover()
        try:
            while True:
                self._wake.clear()
                await self.step()
                await wait_set(self._wake, self._idle_seconds())
        finally:
            await self._stop_tasks()

    async def recover(self) -> None:
        """After the watch's first list: decide every pod (orphans past retention, ended jobs …)."""
        await self._watch.synced.wait()
        for name, view in self._watch.pods.items():
            if name not in self._pods:
                self._pods[name] = PodRecord(view)
                if view.job_uuid:
                    self._jobs.setdefault(view.job_uuid.lower(), JobPods()).names.add(name)
        self._dirty.update(self._pods)
        self._wake.set()

    async def step(self) -> None:
        """One pass: decide changed and due pods, start their actions and, if due, the state check."""
        now = self._clock()
        self._forget_early_cancels(now)  # on followers too: they take cancel webhooks as well
        if not self._is_leader():
            self._was_leader = False
            return
        if not self._was_leader:  # just took over: our view may hide work the old leader left
            self._was_leader = True
            self._dirty.update(self._pods)
        self._dirty.update(self._timers.pop_due(now))
        for name in list(self._dirty):
            record = self._pods.get(name)
            if record is None:
                self._dirty.discard(name)
            elif record.busy is None and record.not_before <= now:
                self._dirty.discard(name)
                record.not_before = -math.inf
                self._decide(name, record, now)
        self._start_check(now)
        self._update_gauges(now)

    async def settle(self, *, max_passes: int = 100) -> None:
        """Run passes and wait for their actions until nothing is left to do now (used by tests)."""
        for _ in range(max_passes):
            await self.step()
            tasks = self._running_tasks()
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)
        raise RuntimeError(f"lifecycle did not settle in {max_passes} passes")

    # --- deciding -----------------------------------------------------------------------------------

    def _decide(self, name: str, record: PodRecord, now: float) -> None:
        view = record.view
        uuid = view.job_uuid
        if uuid is None:
            self._forget(name, record)  # not a job pod: the selector should not have sent it
            return
        view = record.decided_view()
        action = decide(view, job_state=self.check.state(uuid, now=now), now=now, policy=self._policy)
        self._timers.cancel(name)
        if isinstance(action, CheckJobState | FailJob | Notify):
            # Whom a failure concerns is read from a state learned after it was seen: a ``scheduled``
            # from the last poll could hide an agent that has acquired the job since.
            if record.detected_at is None:
                record.detected_at = now
            if isinstance(action, CheckJobState) or not self.check.is_fresh(uuid, since=record.detected_at):
                self.check.want(uuid, since=record.detected_at)
                return
        else:
            record.detected_at = None
        match action:
            case Keep(recheck_at=recheck_at, poll_job_state=poll):
                self._keep(name, record, recheck_at, poll=poll)
            case Delete() if record.delete_sent:
                pass  # our delete is on its way; the watch has not shown it yet
            case FailJob() | Notify() | Delete():
                self.check.drop(uuid)
                self._launch(name, record, view, action)

    def _keep(self, name: str, record: PodRecord, recheck_at: float | None, *, poll: bool) -> None:
        uuid = record.view.job_uuid or ""
        if poll:
            self.check.want(uuid)
        else:
            self.check.drop(uuid)
        if recheck_at is not None:
            self._timers.set(name, recheck_at)
            if self._book is not None and uuid and record.noted_until != recheck_at:
                record.noted_until = recheck_at
                when = time.strftime("%H:%M:%S", time.gmtime(recheck_at))
                self._book.note(uuid, "decision", f"kept until {when} UTC ({record.view.phase or 'Pending'})")
        elif record.view.deleted:
            self._forget(name, record)

    def _forget(self, name: str, record: PodRecord) -> None:
        if self._pods.get(name) is record:
            del self._pods[name]
        self._timers.cancel(name)
        self._dirty.discard(name)
        key = (record.view.job_uuid or "").lower()
        job = self._jobs.get(key)
        if job is not None:
            job.names.discard(name)
            if not job.names:
                del self._jobs[key]
                self.check.forget(key)

    # --- acting -------------------------------------------------------------------------------------

    def _launch(self, name: str, record: PodRecord, view: PodView, action: FailJob | Notify | Delete) -> None:
        if self._book is not None and view.job_uuid:
            if isinstance(action, Delete) and action.reason == "cancelled":
                self._book.cancel(view.job_uuid, "lifecycle")  # learned from the state check, not a webhook
            self._book.note(view.job_uuid, "decision", _describe(action))
        record.busy = asyncio.create_task(self._act(name, record, view, action), name=f"lifecycle {name}")

    async def _act(
        self, name: str, record: PodRecord, view: PodView, action: FailJob | Notify | Delete
    ) -> None:
        try:
            async with self._slots:
                result = await self._execute(view, action)
        except Exception:  # a bug in one action must not stop the lifecycle of every other pod
            log.exception("lifecycle action %r on %s crashed", action, name)
            result = None
        finally:
            record.busy = None
        if result is not None:
            self._settled(record, view, action, result)
        else:
            self._retry_later(name, record)
        self._dirty.add(name)  # decide again on the latest view (at once, or after the back-off)
        self._wake.set()

    async def _execute(self, view: PodView, action: FailJob | Notify | Delete) -> str | None:
        """The action's settled outcome, or None to try again later."""
        match action:
            case FailJob():
                return await self._actions.fail(view, action)
            case Notify():
                return "notified" if await self._actions.notify(view, action) else None
            case Delete():
                return "deleted" if await self._actions.delete(view, action) else None
        raise AssertionError(f"not an action to execute: {action!r}")

    def _settled(
        self, record: PodRecord, view: PodView, action: FailJob | Notify | Delete, outcome: str
    ) -> None:
        now = self._clock()
        record.attempts = 0
        uuid = view.job_uuid or ""
        if isinstance(action, FailJob) and outcome in AGENT_HOLDS:
            # Buildkite refused the acquire: an agent holds the job now (perhaps this pod's), so it is
            # the agent's to finish, not ours to fail or delete.
            if self._book is not None and uuid:
                self._book.note(uuid, "buildkite", f"not failed: {outcome}")
            # The refused acquire is the evidence; the routine poll replaces it with the real state.
            self.check.record(uuid, "assigned", now=now)
        elif isinstance(action, FailJob):
            if self._book is not None and uuid and outcome != "failed":
                self._book.note(uuid, "buildkite", f"not failed: {outcome}")
            elif self._book is not None and uuid:
                self._book.end(
                    uuid, Stage.FAILED, "buildkite", action.message, outcome=f"failed: {action.reason}"
                )
            record.markers["reported"] = action.reason
            detected_at = record.detected_at if record.detected_at is not None else now
            record.detected_at = None
            self._metrics.failure_report_seconds.observe(max(0.0, now - detected_at))
            if action.then_delete and outcome in POD_MAY_GO:
                record.delete_sent = True
        elif isinstance(action, Notify):
            record.markers["notified"] = action.reason
        else:
            record.delete_sent = True
            job = self._jobs.get(uuid.lower())
            if action.reason == "cancelled" and job is not None and job.cancelled_at is not None:
                self._metrics.cancel_delete_seconds.observe(max(0.0, now - job.cancelled_at))
                job.cancelled_at = None

    def _retry_later(self, name: str, record: PodRecord) -> None:
        attempt = record.attempts
        record.attempts = attempt + 1
        record.not_before = self._clock() + RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
        self._timers.set(name, record.not_before)

    # --- the state check ----------------------------------------------------------------------------

    def _start_check(self, now: float) -> None:
        due = self.check.due_at()
        if self._check_task is None and due is not None and due <= now:
            self._check_task = asyncio.create_task(self._run_check(now), name="lifecycle job state check")

    async def _run_check(self, now: float) -> None:
        try:
            learned = await self.check.run(now=now)
        except Exception:
            log.exception("job state check crashed")
            learned = {}
        finally:
            self._check_task = None
        seen = self._clock()
        for uuid, state in learned.items():
            job = self._jobs.get(uuid)
            if job is None:
                continue
            if state in CANCELLED_STATES and job.cancelled_at is None:
                job.cancelled_at = seen
            self._dirty.update(job.names)
        self._wake.set()

    # --- housekeeping -------------------------------------------------------------------------------

    def _forget_early_cancels(self, now: float) -> None:
        cancels = self._early_cancels
        while cancels:
            uuid, at = next(iter(cancels.items()))
            if len(cancels) <= MAX_EARLY_CANCELS and now - at <= EARLY_CANCEL_SECONDS:
                break
            del cancels[uuid]

    def _idle_seconds(self) -> float:
        if not self._is_leader():
            return FOLLOWER_RECHECK_SECONDS
        next_timer = self._timers.next_at()
        due = [] if next_timer is None else [next_timer]
        check_due = self.check.due_at()
        if check_due is not None and self._check_task is None:
            due.append(check_due)
        if not due:
            return MAX_IDLE_SECONDS
        return min(MAX_IDLE_SECONDS, max(0.0, min(due) - self._clock()))

    def _update_gauges(self, now: float) -> None:
        if now - self._gauges_at < GAUGE_INTERVAL_SECONDS:
            return  # a pass per watch event would make this O(pods) per event
        self._gauges_at = now
        pending = [
            r.view.created_at
            for r in self._pods.values()
            if r.view.phase == "Pending" and not r.view.deleted and r.view.created_at
        ]
        self._metrics.oldest_pending_seconds.set(max(0.0, now - min(pending)) if pending else 0.0)

    def sizes(self) -> dict[str, int]:
        """How much the runner holds (a memory test reads it)."""
        return {"pods": len(self._pods), "jobs": len(self._jobs), "early_cancels": len(self._early_cancels)}

    def _running_tasks(self) -> list[asyncio.Task[None]]:
        tasks = [r.busy for r in self._pods.values() if r.busy is not None]
        return tasks + ([self._check_task] if self._check_task else [])

    async def _stop_tasks(self) -> None:
        tasks = self._running_tasks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def pod_log_limits(settings: LifecycleSettings) -> LogLimits:
    return LogLimits(
        lines=settings.pod_log_lines,
        max_bytes=settings.pod_log_kib * 1024,
        timeout_seconds=settings.pod_log_timeout_seconds,
    )


def _describe(action: FailJob | Notify | Delete) -> str:
    match action:
        case FailJob():
            return f"fail the job ({action.reason}): {action.message[:300]}"
        case Notify():
            return f"agent holds the job; noted ({action.reason}): {action.message[:300]}"
        case Delete():
            return f"delete the pod ({action.reason})"
    return repr(action)


def _shows(view: PodView, markers: dict[str, str]) -> bool:
    return ("reported" not in markers or view.failure_reported is not None) and (
        "notified" not in markers or view.failure_notified is not None
    )
