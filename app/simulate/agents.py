"""`SimulatedAgents`: what Buildkite sees of the buildkite-agent inside each agent pod.

The real agent container runs with ``BUILDKITE_AGENT_ACQUIRE_JOB=<uuid>``: once it runs it acquires
the job (one winner; a second pod's agent is refused), starts it, and finishes it with the command's
exit status when it is done. The simulated kubelet only moves container states, so without this the
fake Buildkite would keep every job ``scheduled`` forever, and a sweep would find jobs whose pods have
long run — a world no controller lives in.

It follows the fake apiserver's pods in-process (a store watcher) and drives the fake Buildkite's job
store directly, so the controller's own agent-API calls (``/_test/finish-counts``) stay apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from app.simulate.buildkite_store import JobConflict, JobNotFound, JobStore
from app.simulate.kube_store import Store, StoredEvent, Watcher

log = logging.getLogger(__name__)

JOB_UUID_LABEL = "buildkite.com/job-uuid"
AGENT_CONTAINER = "agent"


class SimulatedAgents:
    def __init__(self, pods: Store, jobs: JobStore) -> None:
        self._pods = pods
        self._jobs = jobs
        self._acquired: dict[str, str] = {}  # pod uid -> job uuid it acquired
        self._done: set[str] = set()  # pod uids whose agent has exited
        self.acquired_by: dict[str, str] = {}  # job uuid -> pod name that won it (for tests)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simulated-agents", daemon=True)
        self._watcher: Watcher | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._subscribe(), self._loop).result(5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._unsubscribe(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()  # else its self-pipe sockets leak (ResourceWarning, an error under pytest)

    async def _subscribe(self) -> None:
        self._watcher = Watcher("pods", None, self._loop)
        self._pods.subscribe_current(self._watcher)
        self._task = asyncio.create_task(self._follow(self._watcher))

    async def _unsubscribe(self) -> None:
        if self._watcher is not None:
            self._pods.unsubscribe(self._watcher)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, watcher: Watcher) -> None:
        while True:
            event: StoredEvent | None = await watcher.queue.get()
            if event is None:
                return
            with contextlib.suppress(Exception):
                self.observe(event.obj, deleted=event.type == "DELETED")

    def observe(self, pod: dict[str, Any], *, deleted: bool = False) -> None:
        """Act as the pod's agent would on its current status."""
        metadata = pod.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        job = (metadata.get("labels") or {}).get(JOB_UUID_LABEL)
        if not job or not uid or uid in self._done:
            return
        state = _agent_state(pod)
        if uid not in self._acquired and ("running" in state or "terminated" in state):
            self._acquire(uid, str(job), str(metadata.get("name") or uid))
        if uid in self._acquired and ("terminated" in state or deleted):
            self._done.add(uid)
            code = (state.get("terminated") or {}).get("exitCode", -1)
            with contextlib.suppress(JobConflict):
                self._jobs.finish(
                    self._acquired[uid],
                    agent_id=uid,
                    exit_status=str(code),
                    signal=None,
                    signal_reason=None if not deleted else "agent_stop",
                )
        elif deleted:
            self._done.add(uid)

    def _acquire(self, uid: str, job: str, pod_name: str) -> None:
        try:
            self._jobs.acquire(job, agent_id=uid)
            self._jobs.start(job, agent_id=uid)
        except JobConflict as exc:  # the real agent exits non-zero: the job is not this pod's
            log.info("simulated agent in %s could not acquire %s: %s", pod_name, job, exc)
            self._done.add(uid)
            return
        except JobNotFound:
            self._done.add(uid)
            return
        self._acquired[uid] = job
        self.acquired_by[job] = pod_name


def _agent_state(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if isinstance(status, dict) and status.get("name") == AGENT_CONTAINER:
            state = status.get("state")
            return state if isinstance(state, dict) else {}
    return {}
