"""The simulated kubelet drives pods through the fake apiserver the way a real node would."""

from __future__ import annotations

import kubernetes.client
import pytest
from kubernetes import watch

from app.simulate.kube_api import FakeKubeAPI
from app.simulate.kubelet import SimulatedKubelet
from app.simulate.kubelet_script import ContainerScript, ImageRule
from app.simulate.pytest_plugin import make_pod


def _phase(kube: FakeKubeAPI, name: str = "job") -> str | None:
    pod = kube.get("pods", name)
    return None if pod is None else pod["status"].get("phase")


def _state(kube: FakeKubeAPI, container: str, name: str = "job") -> tuple[str, dict]:
    """(state kind, detail) of a container; ("", {}) before the kubelet has reported it."""
    status = kube.get("pods", name)["status"]
    for item in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
        if item["name"] == container:
            return next(iter(item["state"].items()))
    return "", {}


def _reasons(kube: FakeKubeAPI, name: str = "job") -> set[str]:
    return {e["reason"] for e in kube.list("events") if e["involvedObject"]["name"] == name}


def _create(kube: FakeKubeAPI, name: str = "job", *, annotations: dict | None = None, **spec) -> None:
    manifest = make_pod(name, **spec)
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    kube.create("pods", manifest)


def test_a_pod_is_scheduled_started_and_succeeds(fake_kube, kubelet):
    _create(fake_kube)
    kubelet.step()
    assert fake_kube.get("pods", "job")["spec"]["nodeName"] == "node-1"
    kubelet.step_until(lambda: _phase(fake_kube) == "Running")
    running = fake_kube.get("pods", "job")["status"]
    assert running["startTime"] and running["podIP"].startswith("10.244.")
    assert {c["type"]: c["status"] for c in running["conditions"]}["Ready"] == "True"
    kubelet.step_until(lambda: _phase(fake_kube) == "Succeeded")
    kind, detail = _state(fake_kube, "main")
    assert kind == "terminated" and (detail["exitCode"], detail["reason"]) == (0, "Completed")
    assert detail["startedAt"] <= detail["finishedAt"]
    assert {"Scheduled", "Pulling", "Pulled", "Created", "Started"} <= _reasons(fake_kube)


def test_the_events_are_visible_to_the_official_client_by_field_selector(fake_kube, kubelet, core_v1):
    _create(fake_kube)
    kubelet.step_until(lambda: _phase(fake_kube) == "Running")
    events = core_v1.list_namespaced_event(
        "default", field_selector="involvedObject.name=job,involvedObject.kind=Pod"
    )
    scheduled = [e for e in events.items if e.reason == "Scheduled"]
    assert scheduled[0].message == "Successfully assigned default/job to node-1"
    assert scheduled[0].source.component == "default-scheduler"


def test_an_exit_code_from_the_annotation_fails_the_pod(fake_kube, kubelet):
    _create(fake_kube, annotations={"kubelet.simulate/container.main": "exit=3 ticks=1"})
    kubelet.step_until(lambda: _phase(fake_kube) == "Failed")
    kind, detail = _state(fake_kube, "main")
    assert (kind, detail["exitCode"], detail["reason"]) == ("terminated", 3, "Error")


def test_a_failed_pull_alternates_err_image_pull_and_back_off(fake_kube, kubelet):
    _create(fake_kube, image="registry.example/does-not-exist:1")
    kubelet.step_until(lambda: _state(fake_kube, "main")[1].get("reason") == "ErrImagePull")
    kubelet.step()
    kind, detail = _state(fake_kube, "main")
    assert (kind, detail["reason"]) == ("waiting", "ImagePullBackOff")
    assert detail["message"] == 'Back-off pulling image "registry.example/does-not-exist:1"'
    kubelet.step()
    assert _state(fake_kube, "main")[1]["reason"] == "ErrImagePull"
    assert _phase(fake_kube) == "Pending"
    assert {"Failed", "BackOff"} <= _reasons(fake_kube)


def test_an_image_rule_can_make_every_matching_container_fail_to_pull(fake_kube):
    rules = [ImageRule("private.registry/*", ContainerScript(pull_fails=True))]
    with SimulatedKubelet(fake_kube.url, rules=rules) as node:
        _create(fake_kube, image="private.registry/app:1")
        node.step_until(lambda: _state(fake_kube, "main")[1].get("reason") == "ErrImagePull")


def test_an_unparsable_image_is_invalid_image_name(fake_kube, kubelet):
    _create(fake_kube, image="Alpine:Latest")
    kubelet.step_until(lambda: _state(fake_kube, "main")[1].get("reason") == "InvalidImageName")
    assert "invalid reference format" in _state(fake_kube, "main")[1]["message"]
    assert "InspectFailed" in _reasons(fake_kube)


def test_pull_policy_never_needs_the_image_on_the_node(fake_kube):
    manifest = make_pod("job")
    manifest["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    fake_kube.create("pods", manifest)
    with SimulatedKubelet(fake_kube.url) as node:
        node.step_until(lambda: _state(fake_kube, "main")[1].get("reason") == "ErrImageNeverPull")
    manifest["metadata"]["name"] = "cached"
    fake_kube.create("pods", manifest)
    with SimulatedKubelet(fake_kube.url, present_images={"alpine:3.20"}) as node:
        node.step_until(lambda: _phase(fake_kube, "cached") == "Succeeded")


def test_a_missing_secret_is_create_container_config_error(fake_kube, kubelet):
    manifest = make_pod("job")
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "agent-token", "key": "token"}}}
    ]
    fake_kube.create("pods", manifest)
    kubelet.step_until(lambda: _state(fake_kube, "main")[1].get("reason") == "CreateContainerConfigError")
    assert _state(fake_kube, "main")[1]["message"] == 'secret "agent-token" not found'
    fake_kube.create("secrets", {"metadata": {"name": "agent-token"}, "stringData": {"token": "x"}})
    manifest["metadata"]["name"] = "with-secret"
    fake_kube.create("pods", manifest)
    kubelet.step_until(lambda: _phase(fake_kube, "with-secret") == "Succeeded")


def test_a_failing_init_container_fails_the_pod_before_main_starts(fake_kube, kubelet):
    _create(
        fake_kube,
        annotations={"kubelet.simulate/container.copy-agent": "exit=1"},
        initContainers=[{"name": "copy-agent", "image": "buildkite/agent:3"}],
    )
    kubelet.step_until(lambda: _phase(fake_kube) == "Failed")
    assert _state(fake_kube, "copy-agent") == ("terminated", _state(fake_kube, "copy-agent")[1])
    assert _state(fake_kube, "copy-agent")[1]["exitCode"] == 1
    assert _state(fake_kube, "main") == ("waiting", {"reason": "PodInitializing"})
    initialized = {c["type"]: c for c in fake_kube.get("pods", "job")["status"]["conditions"]}["Initialized"]
    assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")
    assert initialized["message"] == "containers with incomplete status: [copy-agent]"


def test_a_native_sidecar_runs_beside_main_and_stops_when_it_ends(fake_kube, kubelet):
    _create(fake_kube, initContainers=[{"name": "cache", "image": "redis:7", "restartPolicy": "Always"}])
    kubelet.step_until(lambda: _phase(fake_kube) == "Running")
    assert _state(fake_kube, "cache")[0] == "running"
    assert _state(fake_kube, "main")[0] == "running"
    kubelet.step_until(lambda: _phase(fake_kube) == "Succeeded")
    assert _state(fake_kube, "cache")[0] == "terminated"


def test_an_oom_killed_container_reports_reason_and_exit_137(fake_kube, kubelet):
    _create(fake_kube, annotations={"kubelet.simulate/container.main": "oom"})
    kubelet.step_until(lambda: _phase(fake_kube) == "Failed")
    _, detail = _state(fake_kube, "main")
    assert (detail["reason"], detail["exitCode"]) == ("OOMKilled", 137)


def test_an_evicted_pod_fails_with_reason_evicted(fake_kube, kubelet):
    _create(
        fake_kube,
        annotations={"kubelet.simulate/container.main": "forever", "kubelet.simulate/evict-after-ticks": "3"},
    )
    kubelet.step_until(lambda: _phase(fake_kube) == "Failed")
    status = fake_kube.get("pods", "job")["status"]
    assert status["reason"] == "Evicted" and "low on resource: memory" in status["message"]
    disruption = {c["type"]: c for c in status["conditions"]}["DisruptionTarget"]
    assert (disruption["status"], disruption["reason"]) == ("True", "TerminationByKubelet")
    assert _state(fake_kube, "main")[1]["exitCode"] == 137
    assert "Evicted" in _reasons(fake_kube)


def test_a_deleted_running_pod_is_stopped_then_removed(fake_kube, kubelet, core_v1):
    _create(fake_kube, annotations={"kubelet.simulate/container.main": "forever"})
    kubelet.step_until(lambda: _phase(fake_kube) == "Running")
    deleting = core_v1.delete_namespaced_pod("job", "default")
    assert deleting.metadata.deletion_timestamp is not None
    kubelet.step()
    kind, detail = _state(fake_kube, "main")
    assert (kind, detail["exitCode"]) == ("terminated", 143)
    assert _phase(fake_kube) == "Failed"
    assert "Killing" in _reasons(fake_kube)
    kubelet.step()
    assert fake_kube.get("pods", "job") is None


def test_a_pod_whose_node_selector_cannot_match_stays_unschedulable(fake_kube, kubelet):
    _create(fake_kube, nodeSelector={"pool": "gpu"})
    kubelet.step()
    kubelet.step()
    pod = fake_kube.get("pods", "job")
    assert "nodeName" not in pod["spec"] and pod["status"]["phase"] == "Pending"
    [condition] = pod["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    assert "didn't match Pod's node affinity/selector" in condition["message"]
    assert [e["reason"] for e in fake_kube.list("events")] == ["FailedScheduling"]


def test_node_labels_and_required_affinity_decide_placement(fake_kube):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu", "tpu"]}]}
                ]
            }
        }
    }
    _create(fake_kube, nodeSelector={"kubernetes.io/os": "linux"}, affinity=affinity)
    with SimulatedKubelet(fake_kube.url, node_name="gpu-1", node_labels={"pool": "gpu"}) as node:
        node.step()
    assert fake_kube.get("pods", "job")["spec"]["nodeName"] == "gpu-1"


def test_pods_bound_to_another_node_are_left_alone(fake_kube, kubelet):
    _create(fake_kube)
    fake_kube.modify("pods", "job", lambda p: p["spec"].update(nodeName="elsewhere"))
    kubelet.step()
    kubelet.step()
    assert fake_kube.get("pods", "job")["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_a_malformed_simulation_annotation_is_reported_and_ignored(fake_kube, kubelet):
    _create(fake_kube, annotations={"kubelet.simulate/container.main": "explode=now"})
    kubelet.step_until(lambda: _phase(fake_kube) == "Succeeded")
    warnings = [e for e in fake_kube.list("events") if e["reason"] == "SimulationScriptInvalid"]
    assert warnings and warnings[0]["type"] == "Warning" and "explode=now" in warnings[0]["message"]


def test_the_kubelet_retries_a_status_write_the_apiserver_refused(fake_kube, kubelet):
    _create(fake_kube)
    kubelet.step()
    fake_kube.inject("patch", "pods/status", status=500)
    kubelet.step()
    assert "500" in kubelet.errors[-1]
    kubelet.step_until(lambda: _phase(fake_kube) == "Succeeded")


def test_kubelet_requests_are_counted_apart_from_the_clients(fake_kube, kubelet):
    _create(fake_kube)
    kubelet.step_until(lambda: _phase(fake_kube) == "Succeeded")
    assert fake_kube.request_count() == 0
    assert fake_kube.request_count("list", "pods", kubelet=True) >= 4
    assert fake_kube.request_count("create", "pods/binding", kubelet=True) == 1


def test_in_background_mode_a_watcher_sees_the_pod_finish(fake_kube, core_v1):
    version = core_v1.list_namespaced_pod("default").metadata.resource_version
    _create(fake_kube)
    phases = []
    with SimulatedKubelet(fake_kube.url, tick_seconds=0.02) as node:
        node.start()
        watcher = watch.Watch()
        for event in watcher.stream(
            core_v1.list_namespaced_pod, "default", resource_version=version, timeout_seconds=10
        ):
            pod: kubernetes.client.V1Pod = event["object"]
            phases.append(pod.status.phase)
            if pod.status.phase == "Succeeded":
                watcher.stop()
        node.stop()
    assert phases[0] == "Pending" and phases[-1] == "Succeeded" and "Running" in phases


def test_a_crash_of_the_background_loop_surfaces_on_stop(fake_kube):
    node = SimulatedKubelet(fake_kube.url, tick_seconds=0.01)
    node.step = lambda: 1 / 0  # type: ignore[method-assign]
    node.start()
    with pytest.raises(RuntimeError, match="crashed"):
        for _ in range(1000):
            node._stopping.wait(0.01)
            if node._failure is not None:
                break
        node.close()


def test_active_deadline_seconds_fails_the_pod_by_the_injected_clock(fake_kube):
    now = [1_700_000_000.0]
    _create(fake_kube, annotations={"kubelet.simulate/container.main": "forever"}, activeDeadlineSeconds=30)
    with SimulatedKubelet(fake_kube.url, clock=lambda: now[0]) as node:
        node.step_until(lambda: _phase(fake_kube) == "Running")
        assert fake_kube.get("pods", "job")["status"]["startTime"] == "2023-11-14T22:13:20Z"
        now[0] += 29
        node.step()
        assert _phase(fake_kube) == "Running"
        now[0] += 1
        node.step()
    status = fake_kube.get("pods", "job")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert status["message"] == "Pod was active on the node longer than the specified deadline"
    assert _state(fake_kube, "main")[1]["finishedAt"] == "2023-11-14T22:13:50Z"
