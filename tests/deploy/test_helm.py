"""The Helm chart in deploy/helm: linted and rendered by the real `helm`, the same layout as deploy/base.

Input: the chart, the values files in tests/deploy/helm_values (the minimum, a values file written for
agent-stack-k8s' chart, existing Secrets with an Ingress), rendered with `helm template`. `helm` is the
binary tests/realkube/build.sh builds from its Go module (or one on PATH); without it these tests skip
locally and fail in CI. What is checked: `helm lint --strict`, every object against the strict Kubernetes
schemas, the Secret split, the Roles against `REQUIRED_RBAC`, what a job pod can reach, the `restricted`
Pod Security Standard, and that the chart renders the objects deploy/base does.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.cli import build_parser, setting_flags
from app.config import load
from app.kube import REQUIRED_RBAC
from tests.deploy.conftest import DEPLOY, REPO, tool
from tests.deploy.policy import admitted, restricted_violations

Obj = dict[str, Any]
CHART = DEPLOY / "helm" / "buildkite-controller"
VALUES = Path(__file__).parent / "helm_values"
VALUES_FILES = sorted(VALUES.glob("*.yaml"))
RELEASE, NAMESPACE = "buildkite-controller", "buildkite-controller"
LEASES = {triple for triple in REQUIRED_RBAC if triple[1] == "leases"}
SCHEMA_VERSION = kubernetes_validate.latest_version()


def helm_binary() -> str:
    built = subprocess.run(
        ["bash", str(REPO / "tests" / "realkube" / "build.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return tool("helm", str(Path(built) / "helm"))


def helm(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    # A helm built from its Go module assumes Kubernetes 1.20 unless told; the chart needs >= 1.28.
    version = ["--kube-version", SCHEMA_VERSION]
    return subprocess.run(
        [helm_binary(), command, *version, *args], capture_output=True, text=True, timeout=120
    )


def template(*values: Path, extra: tuple[str, ...] = ()) -> list[Obj]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    result = helm(*args, *extra)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def every(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def container(objects: list[Obj]) -> Obj:
    (controller,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return controller


def config_of(objects: list[Obj]) -> Obj:
    return yaml.safe_load(one(objects, "ConfigMap", f"{RELEASE}-config")["data"]["config.yaml"])


def triples(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda path: path.stem)
def test_helm_lint_passes_strictly(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda path: path.stem)
def test_every_rendered_object_passes_the_strict_kubernetes_schema(values: Path) -> None:
    objects = template(values)
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            assert obj["kind"] in {"PodMonitor", "ServiceMonitor"}  # Prometheus Operator CRDs: no schema here
            continue
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda path: path.stem)
def test_the_controller_secret_never_lands_in_the_jobs_namespace(values: Path) -> None:
    objects = template(values)
    jobs_ns = config_of(objects)["namespace"]
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE != jobs_ns
    read = {
        item["name"]: item["valueFrom"]["secretKeyRef"]["name"]
        for item in container(objects)["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert {"BUILDKITE_TOKEN", "BUILDKITE_WEBHOOK_SECRET"} <= read.keys()
    agent_secret = config_of(objects)["agent-token-secret"]
    assert agent_secret not in read.values()
    for secret in every(objects, "Secret"):
        if secret["metadata"]["namespace"] == jobs_ns:
            assert set(secret["stringData"]) == {"BUILDKITE_AGENT_TOKEN"}
            assert secret["metadata"]["name"] == agent_secret
        else:
            assert secret["metadata"]["namespace"] == NAMESPACE
            assert secret["metadata"]["name"] in read.values()


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda path: path.stem)
def test_roles_grant_exactly_what_the_controller_uses_each_in_its_namespace(values: Path) -> None:
    objects = template(values)
    jobs_ns = config_of(objects)["namespace"]
    roles = {role["metadata"]["namespace"]: role for role in every(objects, "Role")}
    assert set(roles) == {jobs_ns, NAMESPACE}
    assert triples(roles[jobs_ns]) == REQUIRED_RBAC - LEASES
    assert triples(roles[NAMESPACE]) == LEASES
    lease_rule = next(rule for rule in roles[NAMESPACE]["rules"] if "resourceNames" in rule)
    assert lease_rule["resourceNames"] == [config_of(objects)["leader-lease-name"]]
    account = {"kind": "ServiceAccount", "name": one(objects, "ServiceAccount")["metadata"]["name"]}
    for binding in every(objects, "RoleBinding"):
        assert binding["subjects"] == [{**account, "namespace": NAMESPACE}]
        assert (binding["metadata"]["namespace"], binding["roleRef"]["name"]) in {
            (ns, role["metadata"]["name"]) for ns, role in roles.items()
        }


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda path: path.stem)
def test_job_pods_reach_no_controller_port_and_the_pod_is_restricted(values: Path) -> None:
    objects = template(values)
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    jobs_ns = config_of(objects)["namespace"]
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    for port in ports:
        for labels in ({"buildkite.com/job-uuid": "x"}, dict(pod_labels)):
            assert not admitted(
                every(objects, "NetworkPolicy"),
                target_namespace=NAMESPACE,
                target_labels=pod_labels,
                target_ports=ports,
                source_namespace_labels={"kubernetes.io/metadata.name": jobs_ns},
                source_labels=labels,
                port=port,
            ), port
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []
    args = container(objects)["args"]
    assert int(args[args.index("--ops-port") + 1]) == ports["ops"] != ports["http"]


def shape(objects: list[Obj]) -> Counter[tuple[str, str]]:
    """(kind, which namespace) of each object, namespaces named by role, not by name."""
    jobs_ns = config_of(objects)["namespace"] if any(o["kind"] == "ConfigMap" for o in objects) else ""
    where = {NAMESPACE: "controller", jobs_ns: "jobs", None: "cluster"}
    return Counter((o["kind"], where[o["metadata"].get("namespace")]) for o in objects)


def test_the_chart_renders_the_objects_of_deploy_base(base_objects: list[Obj]) -> None:
    objects = template(
        VALUES / "minimal.yaml", extra=("--set", "ingress.enabled=true,ingress.host=ci.example.com")
    )
    from_chart = shape([o for o in objects if o["kind"] != "Secret"])
    # kustomize also creates the two Namespaces; Helm's release namespace is made by `--create-namespace`.
    from_base = shape([o for o in base_objects if o["kind"] != "Namespace"])
    assert from_chart == from_base
    assert (
        one(objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]
        == one(base_objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    )
    assert (
        container(objects)["securityContext"]
        == one(base_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    )


def test_an_agent_stack_k8s_values_file_keeps_its_meaning() -> None:
    objects = template(VALUES / "agent-stack-k8s.yaml")
    config = config_of(objects)
    # `config:` passes through; the chart adds what its objects depend on.
    assert config["org"] == "acme" and config["max-in-flight"] == 40
    assert config["pod-spec-patch"] == {"serviceAccountName": "buildkite-agent"}
    assert config["namespace"] == "buildkite" and config["id"] == RELEASE
    # Their metrics port becomes our ops port: container, args, Service and PodMonitor agree.
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert ports["ops"] == 9216
    assert one(objects, "Service", f"{RELEASE}-ops")["spec"]["ports"][0]["port"] == 9216
    monitor = one(objects, "PodMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "ops", "path": "/metrics", "interval": "30s"}]
    dashboard = one(objects, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((DEPLOY / "grafana" / "buildkite-controller.json").read_text())
    assert json.loads(dashboard["data"]["buildkite-controller.json"]) == shipped
    pod = one(objects, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "ci"
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert container(objects)["image"] == "ghcr.io/example/buildkite-controller:1.2.3"


def test_existing_secrets_are_used_and_none_is_created() -> None:
    objects = template(VALUES / "existing-secrets.yaml")
    assert not every(objects, "Secret")
    refs = {
        i["valueFrom"]["secretKeyRef"]["name"]
        for i in container(objects)["env"]
        if "secretKeyRef" in i.get("valueFrom", {})
    }
    assert refs == {"my-controller-secrets"}
    assert config_of(objects)["agent-token-secret"] == "my-agent-token"
    assert one(objects, "Namespace")["metadata"]["name"] == "ci-jobs"
    assert not every(objects, "PodDisruptionBudget")  # one replica: a budget would block every drain
    ingress = one(objects, "Ingress")["spec"]
    assert [p["path"] for rule in ingress["rules"] for p in rule["http"]["paths"]] == ["/webhooks/buildkite"]
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "ops"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"webhookSecret": ""}, "webhookSecret", id="no-webhook-secret"),
        pytest.param({"controllerSecret": "s"}, "agentToken", id="no-agent-token"),
        pytest.param({"replica": 2}, "replica", id="typo-in-a-value"),
        pytest.param({"opsPort": 8080}, "opsPort", id="ops-port-is-the-webhook-port"),
        pytest.param({"jobsNamespace": NAMESPACE}, "jobsNamespace must differ", id="one-namespace"),
        pytest.param({"ingress": {"enabled": True}}, "ingress.host", id="ingress-without-host"),
    ],
)
def test_bad_values_are_refused_with_the_value_named(values: Obj, message: str, tmp_path: Path) -> None:
    base = yaml.safe_load((VALUES / "minimal.yaml").read_text())
    if "controllerSecret" in values:
        base = {}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({**base, **values}))
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(path))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda path: path.stem)
def test_the_rendered_config_and_args_load_into_settings_that_match_the_objects(
    values: Path, tmp_path: Path
) -> None:
    objects = template(values)
    config = tmp_path / "config.yaml"
    config.write_text(one(objects, "ConfigMap", f"{RELEASE}-config")["data"]["config.yaml"])
    flags = {
        k: v for k, v in setting_flags(build_parser().parse_args(container(objects)["args"])).items() if v
    }
    env = {"POD_NAMESPACE": NAMESPACE, "BUILDKITE_TOKEN": "t", "BUILDKITE_WEBHOOK_SECRET": "w"}
    loaded = load(config_file=config, env=env, flags=flags)
    assert loaded.warnings == ()
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    settings = loaded.settings
    assert (settings.server.port, settings.server.ops_port) == (ports["http"], ports["ops"])
    jobs_role = next(r for r in every(objects, "Role") if r["metadata"]["namespace"] != NAMESPACE)
    assert settings.pod.namespace == jobs_role["metadata"]["namespace"]
    assert settings.leader.lease_namespace == NAMESPACE
