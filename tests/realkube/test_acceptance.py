"""Every pod the builder is known to produce is accepted by a real create on the real apiserver: the golden
pods of ``tests/podspec/golden`` and the pods ``buildkite-controller render`` gives each example pipeline.

The fake validates with schemas and hand-written checks; this is the apiserver's own validation,
defaulting and admission (PodSecurity at its default level, ServiceAccount, Priority, ResourceQuota).
What a real cluster must hold before such a pod can be created (the ServiceAccount it names, the
PriorityClass) is created first, as a cluster admin would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from tests.realkube.controlplane import ControlPlane

pytestmark = pytest.mark.realkube

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = sorted((ROOT / "tests" / "podspec" / "golden").glob("*.yaml"))
EXAMPLES = ROOT / "examples"
PIPELINES = sorted(path for path in EXAMPLES.glob("*.yml") if path.name != "config.yml")


def create_for_real(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create ``manifest`` in ``namespace`` with what it refers to; the apiserver's answer on refusal."""
    pod = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    spec = pod["spec"]
    if spec.get("serviceAccountName"):
        plane.create_service_account(namespace, spec["serviceAccountName"])
    if spec.get("priorityClassName"):
        plane.ensure(
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": spec["priorityClassName"]},
                "value": 1000,
            },
        )
    response = plane.http.post(f"/api/v1/namespaces/{namespace}/pods", json=pod)
    assert response.status_code == 201, f"{pod['metadata']['name']}: {response.status_code} {response.text}"
    created = response.json()
    # The apiserver keeps what we sent: no container, env var or volume dropped on the way.
    for kind in ("initContainers", "containers"):
        assert [c["name"] for c in created["spec"].get(kind, [])] == [c["name"] for c in spec.get(kind, [])]
    # (compared by name: the apiserver fills in defaults such as ``fieldRef.apiVersion``)
    def env_names(containers: list[dict[str, Any]]) -> dict[str, list[str]]:
        return {c["name"]: [e["name"] for e in c.get("env", [])] for c in containers}

    assert env_names(created["spec"]["containers"]) == env_names(spec["containers"])
    return created


def test_there_are_goldens_and_examples_to_create() -> None:
    assert len(GOLDEN) >= 20 and len(PIPELINES) >= 8


@pytest.mark.parametrize("path", GOLDEN, ids=lambda path: path.stem)
def test_every_golden_pod_is_accepted_by_the_real_apiserver(
    control_plane: ControlPlane, namespace: str, path: Path
) -> None:
    manifest = yaml.safe_load(path.read_text())["pod"]
    created = create_for_real(control_plane, namespace, manifest)
    assert created["status"]["phase"] == "Pending"


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda path: path.name)
def test_every_example_pipelines_pods_are_accepted_by_the_real_apiserver(
    control_plane: ControlPlane, namespace: str, pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["render", str(pipeline), "--config", str(EXAMPLES / "config.yml")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    pods = [doc for doc in yaml.safe_load_all(captured.out) if doc]
    assert pods
    for manifest in pods:
        create_for_real(control_plane, namespace, manifest)
    listed = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")
    assert sorted(p["metadata"]["name"] for p in listed["items"]) == sorted(
        p["metadata"]["name"] for p in pods
    )


def test_a_pod_the_apiserver_must_refuse_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    """The check above can fail: a golden pod broken in one field is a 422 naming that field."""
    manifest = yaml.safe_load(GOLDEN[0].read_text())["pod"]
    manifest["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"
    response = control_plane.http.post(
        f"/api/v1/namespaces/{namespace}/pods",
        json={**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}},
    )
    assert response.status_code == 422
    assert "spec.containers[0].name" in response.text
