"""Carrying out one lifecycle action on one pod: the I/O half of ``app.lifecycle``.

Input: a ``PodView`` and the ``FailJob``/``Notify``/``Delete`` that ``decide`` returned for it, from
``app.lifecycle.runner``. Output: calls to Kubernetes (annotate, list events, delete) and Buildkite
(``JobFailer``), metrics, one INFO/WARNING line per action with the job UUID and pod name, and a
yes/no answer: ``True`` when the action is settled, ``False`` when it should be tried again later.

Order matters for "fail at most once": the ``failure-reported`` annotation is written *before* the
job is finished, so a controller killed between the two never finishes the job twice (the price is
a job left unfailed, which the sweep recreates a pod for). A pod already gone cannot carry it; the
runner remembers the fact in memory instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from app.errors import KubeError, NotFound
from app.jobs import JobBook
from app.kube import KubeGateway
from app.lifecycle.decide import Delete, FailJob, Notify
from app.lifecycle.messages import compose_detail
from app.lifecycle.pod_logs import LOGS_HEADLINE, PodLogReader, PodLogs
from app.logs import job_log
from app.metrics import Metrics
from app.podview import PodView
from podspec.metadata import FAILURE_NOTIFIED_ANNOTATION, FAILURE_REPORTED_ANNOTATION

log = logging.getLogger(__name__)

# How ``JobFailer.fail`` ended, by ``FailOutcome`` value (test fakes answer the same strings). Only when
# we failed the job, or it had ended anyway, may its pod go: after HELD_BY_ANOTHER an agent — maybe
# this pod's own — has the job. RETRY settles nothing.
POD_MAY_GO = frozenset({"failed", "ended"})
AGENT_HOLDS = frozenset({"held_by_another"})
SETTLED_OUTCOMES = POD_MAY_GO | AGENT_HOLDS


def _outcome_name(outcome: str) -> str:
    """``JobFailer.fail`` answers with a ``FailOutcome``, a StrEnum: compared by its value here."""
    return outcome.lower()


class JobFailing(Protocol):
    """What we need from ``app.fail.JobFailer``."""

    async def fail(
        self, uuid: str, *, reason: str, message: str, detected_at: float | None = None
    ) -> str: ...


class LifecycleActions:
    def __init__(
        self,
        *,
        kube: KubeGateway,
        failer: JobFailing,
        metrics: Metrics,
        abort_grace_seconds: int,
        clock: Callable[[], float] = time.time,
        logs: PodLogReader | None = None,
        book: JobBook | None = None,
    ) -> None:
        self._kube = kube
        self._logs = logs
        self._book = book
        self._failer = failer
        self._metrics = metrics
        self._abort_grace = abort_grace_seconds
        self._clock = clock

    async def fail(self, pod: PodView, action: FailJob) -> str | None:
        """Annotate, fail the job with the message and the pod's events, then delete if asked.

        Returns the failer's outcome once settled (``failed``: the job is failed; anything else: someone
        else holds or ended it), or None to try again later. The pod is deleted only when *we* failed
        the job: an acquire refused means an agent — maybe this pod's own — may have the job now.
        """
        uuid = pod.job_uuid or ""
        jlog = job_log(log, uuid, stage="lifecycle", pod=pod.name)
        if not pod.deleted and not await self._annotate(pod, FAILURE_REPORTED_ANNOTATION, action.reason):
            return None
        events, logs = await asyncio.gather(self._events(pod), self._read_logs(pod))
        detail = compose_detail(action.message, events, now=self._clock(), logs=logs)
        if logs is not None:
            self._note_logs(uuid, logs, detail)
        outcome = _outcome_name(await self._failer.fail(uuid, reason=action.reason, message=detail))
        if outcome not in SETTLED_OUTCOMES:
            jlog.warning(
                "could not report the %s failure to Buildkite (%s); will retry", action.reason, outcome
            )
            if not pod.deleted:
                # Take the marker back, or the pod would be cleaned up as if the job had been failed.
                await self._annotate(pod, FAILURE_REPORTED_ANNOTATION, None)
            return None
        self._metrics.lifecycle_failures.labels(action.reason).inc()
        jlog.info("pod failure %s reported to Buildkite: job %s", action.reason, outcome)
        if outcome in AGENT_HOLDS and not pod.deleted:
            # Not ours to fail after all (an agent acquired it meanwhile): the pod must not look as if
            # we had failed its job, or it would be deleted under a running agent.
            await self._annotate(pod, FAILURE_REPORTED_ANNOTATION, None)
        if outcome in POD_MAY_GO and action.then_delete and not pod.deleted:
            await self.delete(pod, Delete(action.reason, self._abort_grace))
        return outcome

    async def notify(self, pod: PodView, action: Notify) -> bool:
        """The agent owns the job, so it is not failed: mark the pod and say why in the log."""
        jlog = job_log(log, pod.job_uuid or "", stage="lifecycle", pod=pod.name)
        if not pod.deleted and not await self._annotate(pod, FAILURE_NOTIFIED_ANNOTATION, action.reason):
            return False
        self._metrics.lifecycle_failures.labels(action.reason).inc()
        jlog.warning("pod problem while the agent holds the job (%s): %s", action.reason, action.message)
        return True

    async def delete(self, pod: PodView, action: Delete) -> bool:
        """Delete the pod (guarded by its uid, so a newer pod of the same name survives)."""
        jlog = job_log(log, pod.job_uuid or "", stage="lifecycle", pod=pod.name)
        try:
            deleted = await self._kube.delete_pod(
                pod.name, uid=pod.uid or None, grace_seconds=action.grace_seconds
            )
        except KubeError as exc:
            jlog.warning("deleting the pod (%s) failed: %s; will retry", action.reason, exc)
            return False
        if deleted:
            self._metrics.pods_deleted.labels(action.reason).inc()
            jlog.info("pod deleted (%s)", action.reason)
        else:
            jlog.debug("pod already gone (%s)", action.reason)
        return True

    async def _annotate(self, pod: PodView, key: str, value: str | None) -> bool:
        """True when the annotation is written, or cannot ever be: go on without it.

        A gone pod has nothing left to mark. A refusal that retrying cannot cure (RBAC, a pod the
        apiserver now finds invalid) must not hold the job hostage: the runner's memory and
        Buildkite's acquire-once rule still keep the failure single.
        """
        jlog = job_log(log, pod.job_uuid or "", stage="lifecycle", pod=pod.name)
        try:
            await self._kube.annotate_pod(pod.name, {key: value})
        except NotFound:
            return True
        except KubeError as exc:
            if not exc.is_retryable:
                jlog.warning("cannot annotate the pod with %s: %s; going on without it", key, exc)
                return True
            jlog.warning("annotating the pod with %s failed: %s; will retry", key, exc)
            return False
        return True

    async def _read_logs(self, pod: PodView) -> PodLogs | None:
        """The failed containers' output; bounded by the reader's deadline, never an error."""
        if self._logs is None:
            return None
        try:
            return await self._logs.read(pod)
        except Exception:  # a bug reading logs must not stop the job from being failed
            log.exception("reading the logs of %s crashed; failing the job without them", pod.name)
            return None

    def _note_logs(self, uuid: str, logs: PodLogs, detail: str) -> None:
        if self._book is None or not uuid or (not logs.logs and not logs.note):
            return
        _, found, section = detail.partition(LOGS_HEADLINE)
        attached = len((found + section).encode())
        read = [f"{e.target.name}: {e.unavailable or f'{e.bytes_read} bytes'}" for e in logs.logs]
        summary = "; ".join(read + ([logs.note] if logs.note else []))
        self._book.note(uuid, "logs", f"read {logs.bytes_read} bytes, attached {attached} bytes ({summary})")

    async def _events(self, pod: PodView) -> list[dict[str, object]]:
        """The pod's recent events for the failure message; a report is never held up by them."""
        try:
            return list(await self._kube.list_events(pod.name))
        except KubeError as exc:
            log.debug("events of %s unavailable: %s", pod.name, exc)
            return []
