"""deploy/ against a real kube-apiserver: `kubectl apply -k`, `helm install`, Pod Security and RBAC.

Input: the real control plane of tests/realkube (etcd + kube-apiserver with RBAC and the PodSecurity
admission plugin, binaries from tests/realkube/build.sh), one per test module here; the real `kubectl`
and `helm`. Checks: the example overlay and the chart apply cleanly; the Deployment's pod template is
admitted in its namespace, which enforces the `restricted` Pod Security Standard (and a less hardened copy
is refused there, so the check can fail); the real authorizer gives the controller's ServiceAccount pods
in the jobs namespace, the Lease in its own, and no Secrets anywhere. No controller-manager runs, so the
Deployment makes no pods: the test creates one from its template.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, OVERLAY, SECRET_EXAMPLE, tool

controlplane = pytest.importorskip("tests.realkube.controlplane")

Obj = dict[str, Any]
CHART = DEPLOY / "helm" / "buildkite-controller"
VALUES = Path(__file__).parent / "helm_values"
CONTROLLER_NS, JOBS_NS = "buildkite-controller", "buildkite"
ACCOUNT = f"system:serviceaccount:{CONTROLLER_NS}:buildkite-controller"


@pytest.fixture(scope="module")
def plane() -> Iterator[Any]:
    try:
        directory = controlplane.binaries_dir()
        missing = controlplane.missing_binaries(directory)
    except controlplane.ControlPlaneError as exc:
        missing, directory = [str(exc)], None
    if missing:
        why = f"realkube: {', '.join(missing)} not built; build with: bash {controlplane.BUILD_SCRIPT}"
        if controlplane.required_in_this_run():
            pytest.fail(why + " (CI must run this tier)", pytrace=False)
        pytest.skip(why)
    with controlplane.ControlPlane(directory) as started:
        yield started


def kubectl(plane: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [tool("kubectl"), "--kubeconfig", str(plane.admin.kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, input=stdin, timeout=120)


def applied(plane: Any) -> None:
    result = kubectl(plane, "apply", "-k", str(OVERLAY))
    assert result.returncode == 0, result.stderr
    secrets = kubectl(plane, "apply", "-f", str(SECRET_EXAMPLE))
    assert secrets.returncode == 0, secrets.stderr


@pytest.fixture(scope="module")
def overlay(plane: Any) -> Any:
    applied(plane)
    return plane


def pod_from_template(plane: Any, namespace: str, deployment: str) -> Obj:
    found = plane.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
    template = found["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{deployment}-admission", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def create(plane: Any, namespace: str, pod: Obj) -> tuple[int, str]:
    response = plane.http.post(f"/api/v1/namespaces/{namespace}/pods", json=pod, params={"dryRun": "All"})
    return response.status_code, response.text


def test_the_example_overlay_applies_and_is_idempotent(overlay: Any) -> None:
    again = kubectl(overlay, "apply", "-k", str(OVERLAY))
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout, again.stdout
    labels = overlay.request("GET", f"/api/v1/namespaces/{CONTROLLER_NS}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_deployment_pod_passes_restricted_admission_and_a_weaker_one_does_not(overlay: Any) -> None:
    pod = pod_from_template(overlay, CONTROLLER_NS, "buildkite-controller")
    status, text = create(overlay, CONTROLLER_NS, pod)
    assert status == 201, text
    weaker = copy.deepcopy(pod)
    weaker["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    status, text = create(overlay, CONTROLLER_NS, weaker)
    assert status == 403 and "PodSecurity" in text and "allowPrivilegeEscalation" in text, text


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("create", "pods", JOBS_NS, True),
        ("watch", "pods", JOBS_NS, True),
        ("list", "events", JOBS_NS, True),
        ("get", "secrets", JOBS_NS, False),
        ("create", "pods", CONTROLLER_NS, False),
        ("get", "secrets", CONTROLLER_NS, False),
        ("create", "leases.coordination.k8s.io", CONTROLLER_NS, True),
        ("create", "leases.coordination.k8s.io", JOBS_NS, False),
        ("get", "leases.coordination.k8s.io/buildkite-controller-leader", CONTROLLER_NS, True),
        ("get", "leases.coordination.k8s.io/someone-elses-lease", CONTROLLER_NS, False),
    ],
)
def test_the_real_authorizer_grants_the_controller_account_what_the_layout_says(
    overlay: Any, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    result = kubectl(overlay, "auth", "can-i", verb, resource, "-n", namespace, "--as", ACCOUNT)
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stdout + result.stderr


def test_the_helm_chart_installs_and_its_pod_passes_restricted_admission(plane: Any) -> None:
    built = subprocess.run(
        ["bash", str(controlplane.BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    helm = tool("helm", str(Path(built) / "helm"))
    release_ns, jobs_ns = "helm-controller", "helm-jobs"
    plane.create_namespace(release_ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    values = {
        **yaml.safe_load((VALUES / "minimal.yaml").read_text()),
        "jobsNamespace": jobs_ns,
        "createJobsNamespace": True,
        "ingress": {"enabled": True, "host": "ci.example.com"},
    }
    install = ["install", "bkc", str(CHART), "--kubeconfig", str(plane.admin.kubeconfig)]
    result = subprocess.run(
        [helm, *install, "--namespace", release_ns, "--values", "-"],
        capture_output=True,
        text=True,
        input=json.dumps(values),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    pod = pod_from_template(plane, release_ns, "bkc-buildkite-controller")
    status, text = create(plane, release_ns, pod)
    assert status == 201, text
    secret = plane.request("GET", f"/api/v1/namespaces/{jobs_ns}/secrets/buildkite-agent-token")
    assert set(secret["data"]) == {"BUILDKITE_AGENT_TOKEN"}
