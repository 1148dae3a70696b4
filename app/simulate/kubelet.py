"""`SimulatedKubelet`: a node (plus the default scheduler) that drives pods through the fake apiserver.

It talks to the apiserver over HTTP only, as a real kubelet does: it lists pods, binds unscheduled ones
that fit its labels (or marks them Unschedulable), and moves its own pods along their `PodPlan` —
Pending → Running → Succeeded/Failed, with image-pull, config, init, OOM and eviction failures — writing
`pods/status` and posting Events. A pod being deleted gets its containers stopped on the next step and
its object removed on the one after. Each `step()` advances every pod by one tick; `start()` runs steps
in the background every `tick_seconds` for end-to-end tests.

    kubelet = SimulatedKubelet(kube.url, node_name="node-1")
    kubelet.step_until(lambda: kube.get("pods", "job")["status"]["phase"] == "Succeeded")
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from app.simulate.kube_faults import KUBELET_USER_AGENT
from app.simulate.kube_store import rfc3339
from app.simulate.kubelet_events import KubeEvent, event_body, scheduling_events, transition_events
from app.simulate.kubelet_plan import PodPlan, plan_pod
from app.simulate.kubelet_scheduling import fits_node
from app.simulate.kubelet_script import (
    DEFAULT_RULES,
    DEFAULT_SCRIPT,
    ContainerScript,
    ImageRule,
    ScriptError,
    script_for,
)
from app.simulate.kubelet_status import Moment, render_status

log = logging.getLogger(__name__)
Json = dict[str, Any]


@dataclass
class PodRun:
    """The kubelet's memory of one pod: its plan and the time of each tick so far."""

    plan: PodPlan
    pod_ip: str
    namespace: str
    name: str
    started: float  # clock() when first seen: activeDeadlineSeconds counts from here (status.startTime)
    times: list[str] = field(default_factory=list)
    deleted_at: int | None = None
    deadline_at: int | None = None

    @property
    def tick(self) -> int:
        return len(self.times) - 1


def _is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class SimulatedKubelet:
    """One simulated node; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        node_name: str = "node-1",
        node_labels: Mapping[str, str] | None = None,
        namespace: str | None = None,
        clock: Callable[[], float] = time.time,
        rules: Sequence[ImageRule] = DEFAULT_RULES,
        default_script: ContainerScript = DEFAULT_SCRIPT,
        present_images: Collection[str] = (),
        schedule: bool = True,
        tick_seconds: float = 0.05,
    ) -> None:
        self.node_name = node_name
        self.node_labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **(node_labels or {}),
        }
        self.namespace = namespace
        self.clock = clock
        self.rules, self.default_script, self.present_images = rules, default_script, present_images
        self.schedule = schedule
        self.tick_seconds = tick_seconds
        self.errors: deque[str] = deque(maxlen=100)  # recent API failures, for test diagnostics
        self._http = httpx.Client(
            base_url=url, timeout=10.0, headers={"user-agent": f"{KUBELET_USER_AGENT}/{node_name}"}
        )
        self._runs: dict[str, PodRun] = {}
        self._next_ip = 2
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # ---- driving ----------------------------------------------------------------------------------

    def step(self) -> None:
        """List pods once and advance every pod this node is responsible for by one tick."""
        with self._lock:
            pods = self._list_pods()
            alive = set()
            for pod in pods:
                alive.add(pod["metadata"]["uid"])
                self._handle(pod)
            for uid in set(self._runs) - alive:
                run = self._runs.pop(uid)
                if run.deleted_at is not None:
                    # Stopped last step (so now terminal, and no longer listed): finish the deletion.
                    self._remove(run.namespace, run.name, uid)

    def step_until(self, condition: Callable[[], bool], *, max_steps: int = 50) -> int:
        """Step until `condition()` holds; returns the steps taken (AssertionError after `max_steps`)."""
        for steps in range(max_steps + 1):
            if condition():
                return steps
            self.step()
        raise AssertionError(
            f"condition not reached after {max_steps} kubelet steps; errors: {list(self.errors)}"
        )

    def start(self) -> None:
        """Step in the background every `tick_seconds` until `stop()`."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name=f"kubelet-{self.node_name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop background stepping; re-raises a crash of the background loop."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=10)
            self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError("the simulated kubelet's background loop crashed") from failure

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._http.close()

    def __enter__(self) -> SimulatedKubelet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _loop(self) -> None:
        # Event.wait is the tick rate here, not a wait for some condition.
        while not self._stopping.wait(self.tick_seconds):
            try:
                self.step()
            except Exception as error:  # a bug in the simulation: surface it from stop(), keep ticking
                log.exception("simulated kubelet step failed")
                self.errors.append(f"step: {error!r}")
                if self._failure is None:
                    self._failure = error

    # ---- per pod ----------------------------------------------------------------------------------

    def _handle(self, pod: Json) -> None:
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node:
            if self.schedule and spec.get("schedulerName", "default-scheduler") == "default-scheduler":
                self._schedule(pod)
            return
        if node != self.node_name:
            return
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        run = self._runs.get(pod["metadata"]["uid"])
        if run is None:
            if _is_terminal(pod) and not deleting:
                return  # finished before this kubelet saw it
            run = self._runs[pod["metadata"]["uid"]] = self._new_run(pod)
        elif _is_terminal(pod) and not deleting:
            return  # nothing moves any more
        self._advance(pod, run, deleting=deleting)

    def _advance(self, pod: Json, run: PodRun, *, deleting: bool) -> None:
        clock = self.clock()
        now = rfc3339(clock)
        run.times.append(now)
        if deleting and run.deleted_at is None:
            run.deleted_at = run.tick
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None and run.deadline_at is None and clock - run.started >= deadline:
            run.deadline_at = run.tick
        if run.deleted_at is not None and run.tick > run.deleted_at:
            self._remove(run.namespace, run.name, pod["metadata"]["uid"])
            return
        moment = Moment(run.tick, run.times, run.deleted_at, run.deadline_at)
        status = render_status(pod, run.plan, moment, pod_ip=run.pod_ip, host_ip="10.0.0.1")
        previous = pod.get("status") or {}
        changed = any(previous.get(k) != v for k, v in status.items())
        if changed and not self._patch_status(pod, status):
            return  # the next step retries from the stored state
        self._post_events(pod, transition_events(previous, status, deleting=deleting), now)

    def _new_run(self, pod: Json) -> PodRun:
        try:
            script = script_for(pod, rules=self.rules, default=self.default_script)
        except ScriptError as error:
            self._post_events(
                pod, [KubeEvent("SimulationScriptInvalid", str(error), "Warning")], rfc3339(self.clock())
            )
            script = script_for(
                {"spec": pod.get("spec") or {}}, rules=self.rules, default=self.default_script
            )
        plan = plan_pod(
            pod,
            script,
            present_images=self.present_images,
            exists=lambda kind, name: self._exists(pod["metadata"]["namespace"], kind, name),
        )
        ip, self._next_ip = f"10.244.0.{self._next_ip % 250 + 2}", self._next_ip + 1
        meta = pod["metadata"]
        return PodRun(plan, ip, meta["namespace"], meta["name"], self.clock())

    def _schedule(self, pod: Json) -> None:
        meta = pod["metadata"]
        now = rfc3339(self.clock())
        if fits_node(pod.get("spec") or {}, self.node_labels):
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
            }
            if self._call("POST", f"{self._pod_path(pod)}/binding", json=binding) is not None:
                self._post_events(
                    pod, scheduling_events(pod, self.node_name, scheduled=True, nodes=[self.node_name]), now
                )
            return
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions):
            return  # already reported; the real scheduler only retries on cluster changes
        message = scheduling_events(pod, self.node_name, scheduled=False, nodes=[self.node_name])[0].message
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": now,
        }
        if self._patch_status(pod, {"conditions": [condition]}):
            self._post_events(
                pod, scheduling_events(pod, self.node_name, scheduled=False, nodes=[self.node_name]), now
            )

    # ---- HTTP -------------------------------------------------------------------------------------

    def _pod_path(self, pod: Json) -> str:
        return f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One API request; failures are recorded and answered with None (the next step retries)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            self.errors.append(f"{method} {path}: {error}")
            return None
        if response.is_success:
            return response
        self.errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        log.debug("kubelet %s %s -> %s", method, path, response.status_code)
        return None

    def _list_pods(self) -> list[Json]:
        path = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        # Finished pods need nothing more from a kubelet (the apiserver deletes them at once), and
        # leaving them out keeps each step cheap when thousands of jobs have run.
        params = {"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"}
        response = self._call("GET", path, params=params)
        return response.json().get("items", []) if response is not None else []

    def _exists(self, namespace: str, kind: str, name: str) -> bool:
        plural = {"secret": "secrets", "configmap": "configmaps"}[kind]
        try:
            response = self._http.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except httpx.HTTPError:
            return True  # unknown: do not invent a config error
        return response.status_code != 404

    def _patch_status(self, pod: Json, status: Json) -> bool:
        headers = {"content-type": "application/merge-patch+json"}
        body = {"metadata": {"uid": pod["metadata"]["uid"]}, "status": status}
        return self._call("PATCH", f"{self._pod_path(pod)}/status", json=body, headers=headers) is not None

    def _remove(self, namespace: str, name: str, uid: str) -> None:
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", json=options)
        self._runs.pop(uid, None)

    def _post_events(self, pod: Json, events: Sequence[KubeEvent], now: str) -> None:
        for event in events:
            body = event_body(pod, event, node_name=self.node_name, now=now)
            self._call("POST", f"/api/v1/namespaces/{pod['metadata']['namespace']}/events", json=body)
