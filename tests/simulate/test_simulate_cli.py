"""`buildkite-controller simulate` as a real child process: its JSON line, both fakes over HTTP, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import kubernetes.config
import pytest

from app.cli import main
from app.simulate.process import SimulateProcess, read_line, terminate
from tests.flow.harness import wait_until


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulateProcess]:
    with SimulateProcess(tmp_path_factory.mktemp("simulate"), extra_args=["--jobs", "3"]) as process:
        yield process


@pytest.fixture(scope="module")
def core_v1(sim: SimulateProcess) -> Iterator[kubernetes.client.CoreV1Api]:
    client = kubernetes.config.new_client_from_config(config_file=sim.info["kubeconfig"])
    with client:
        yield kubernetes.client.CoreV1Api(client)


def pod_manifest(name: str, job_uuid: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"buildkite.com/job-uuid": job_uuid}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "agent", "image": "busybox"}]},
    }


def test_the_json_line_names_everything_a_controller_needs(sim: SimulateProcess) -> None:
    info = sim.info
    for key in ("kube_url", "kubeconfig", "buildkite_url", "graphql_endpoint", "agent_endpoint"):
        assert info[key], key
    assert (info["token"], info["org"], info["queue"], info["namespace"]) == (
        "bkua_fake_api_token",
        "acme",
        "kubernetes",
        "buildkite",
    )
    assert Path(info["kubeconfig"]).is_file()
    assert len(info["job_ids"]) == 3


def test_demo_jobs_are_scheduled_in_the_fake_buildkite(sim: SimulateProcess) -> None:
    states = {job["id"]: job["state"] for job in sim.jobs()}
    assert all(states[uuid] == "scheduled" for uuid in sim.info["job_ids"])


def test_graphql_answers_with_the_printed_token_only(sim: SimulateProcess) -> None:
    query = {"query": "{ viewer { user { name } } }"}
    good = sim.http.post(
        sim.info["graphql_endpoint"], json=query, headers={"Authorization": f"Bearer {sim.info['token']}"}
    )
    bad = sim.http.post(sim.info["graphql_endpoint"], json=query, headers={"Authorization": "Bearer nope"})
    assert good.status_code == 200 and "errors" not in good.json()
    assert bad.status_code == 401


def test_the_kubeconfig_reaches_the_fake_apiserver_and_pods_show_in_the_summary(
    sim: SimulateProcess, core_v1: kubernetes.client.CoreV1Api
) -> None:
    creates_before = sim.request_count("create", "pods")
    core_v1.create_namespaced_pod("buildkite", pod_manifest("summary-pod", "job-1"))
    summary = {pod["name"]: pod for pod in sim.pods()}
    assert summary["summary-pod"]["job_uuid"] == "job-1"
    assert summary["summary-pod"]["deleting"] is False
    assert sim.request_count("create", "pods") == creates_before + 1


def test_the_simulated_kubelet_runs_pods_to_completion(
    sim: SimulateProcess, core_v1: kubernetes.client.CoreV1Api
) -> None:
    assert sim.info["kubelet"] == "node-1"
    core_v1.create_namespaced_pod("buildkite", pod_manifest("runs-pod", "job-2"))
    wait_until(
        lambda: {p["name"]: p["phase"] for p in sim.pods()}.get("runs-pod") == "Succeeded",
        what="the kubelet to finish the pod",
    )


def test_without_the_kubelet_pods_stay_pending(tmp_path: Path) -> None:
    with SimulateProcess(tmp_path, extra_args=["--no-kubelet"]) as process:
        assert process.info["kubelet"] is None
        client = kubernetes.config.new_client_from_config(config_file=process.info["kubeconfig"])
        with client:
            kubernetes.client.CoreV1Api(client).create_namespaced_pod("buildkite", pod_manifest("p", "j"))
        assert [pod["phase"] for pod in process.pods()] == ["Pending"]


def test_bulk_jobs_and_their_webhook_bodies_come_back_in_order(sim: SimulateProcess) -> None:
    ids = sim.add_jobs(5, agents={"queue": "other"}, priority=3)
    bodies = [json.loads(body) for body in sim.webhook_bodies(ids)]
    assert [body["job"]["id"] for body in bodies] == ids
    assert {body["event"] for body in bodies} == {"job.scheduled"}
    assert {tuple(body["job"]["agent_query_rules"]) for body in bodies} == {("queue=other",)}


def test_finish_counts_start_empty_for_new_jobs(sim: SimulateProcess) -> None:
    [uuid] = sim.add_jobs(1)
    assert uuid not in sim.finish_counts()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/_test/jobs/bulk", {"count": 0}, id="no-jobs"),
        pytest.param("/_test/jobs/bulk", {"count": 10**9}, id="too-many-jobs"),
        pytest.param("/_test/jobs/bulk", {"count": "5"}, id="count-as-string"),
        pytest.param("/_test/jobs/bulk", {"count": 2, "job": {"uuid": "x"}}, id="one-uuid-for-many"),
        pytest.param("/_test/jobs/bulk", {"count": 1, "job": {"shell": "rm"}}, id="unknown-job-field"),
        pytest.param("/_test/jobs/bulk", [1, 2], id="not-an-object"),
        pytest.param("/_test/webhook-bodies", {"event": "build.running", "ids": []}, id="unknown-event"),
        pytest.param("/_test/webhook-bodies", {"event": "job.scheduled"}, id="no-ids"),
    ],
)
def test_malformed_control_requests_are_422_with_a_message(
    sim: SimulateProcess, path: str, body: object
) -> None:
    response = sim.buildkite("POST", path, json=body)
    assert response.status_code == 422
    assert response.json()["message"].startswith("Bad request")


def test_webhook_bodies_for_an_unknown_job_are_404(sim: SimulateProcess) -> None:
    response = sim.buildkite(
        "POST", "/_test/webhook-bodies", json={"event": "job.scheduled", "ids": ["no-such-job"]}
    )
    assert response.status_code == 404


def test_a_garbage_body_is_refused_without_a_crash(sim: SimulateProcess) -> None:
    response = sim.buildkite("POST", "/_test/jobs/bulk", content=b"\xff{not json")
    assert 400 <= response.status_code < 500
    assert sim.buildkite("GET", "/_test/finish-counts").status_code == 200


def test_sigterm_stops_it_with_exit_status_0(tmp_path: Path) -> None:
    process = SimulateProcess(tmp_path)
    info = process.start()
    assert process.process is not None
    process.process.send_signal(signal.SIGTERM)
    assert process.process.wait(20) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(info["kube_url"].rsplit(":", 1)[1])), timeout=1)
    process.stop()


def test_sigint_stops_it_too(tmp_path: Path) -> None:
    process = SimulateProcess(tmp_path)
    process.start()
    assert process.process is not None
    process.process.send_signal(signal.SIGINT)
    assert process.process.wait(20) == 0
    process.stop()


def test_the_requested_ports_are_used(tmp_path: Path) -> None:
    ports = []
    for _ in range(2):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        ports.append(probe.getsockname()[1])
        probe.close()
    args = ["--kube-port", str(ports[0]), "--buildkite-port", str(ports[1])]
    with SimulateProcess(tmp_path, extra_args=args) as process:
        assert process.info["kube_url"] == f"http://127.0.0.1:{ports[0]}"
        assert process.info["buildkite_url"] == f"http://127.0.0.1:{ports[1]}"


def test_a_port_in_use_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        args = [
            "simulate",
            "--kube-port",
            str(busy.getsockname()[1]),
            "--kubeconfig-out",
            str(tmp_path / "k"),
        ]
        assert main(args) == 2
    assert "cannot listen" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--kube-port", "70000"], id="port-too-large"),
        pytest.param(["--buildkite-port", "-1"], id="negative-port"),
        pytest.param(["--jobs", "many"], id="jobs-not-a-number"),
        pytest.param(["--points-limit", "0"], id="no-points"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", *args])
    assert exited.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_read_line_gives_up_after_its_deadline() -> None:
    sleeper = subprocess.Popen(["sleep", "5"], stdout=subprocess.PIPE)
    try:
        assert sleeper.stdout is not None
        with pytest.raises(TimeoutError):
            read_line(sleeper.stdout, timeout=0.2, what="sleep")
    finally:
        terminate(sleeper)
