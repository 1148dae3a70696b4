"""The Kubernetes manifests in deploy/: the two-namespace layout, least privilege, hardening, exposure.

Input: deploy/base and deploy/overlays/example rendered by the real `kubectl kustomize` (conftest.py),
plus deploy/base/secret.example.yaml, which is deliberately not part of any kustomization. Every object is
checked against the strict Kubernetes JSON schemas of kubernetes-validate, the Roles against
`app.kube.REQUIRED_RBAC` (the (API group, resource, verb) set the controller's code uses), and the
namespaces, Secrets and NetworkPolicies against what a pipeline in the jobs namespace could reach.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.kube import REQUIRED_RBAC
from tests.deploy.conftest import BASE, DEPLOY, REPO, SECRET_EXAMPLE, secret_examples
from tests.deploy.policy import admitted, restricted_violations

Obj = dict[str, Any]
# The oldest Kubernetes minor deploy/README.md promises, and the newest the schemas know.
SCHEMA_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]
CONFIG_DIR = "/etc/buildkite-controller"
WEBHOOK_PATH = "/webhooks/buildkite"
# What the controller must never share with the jobs namespace: its Buildkite API token and webhook secret
# (and the ops token, which spends the same GraphQL budget).
CONTROLLER_ONLY_KEYS = {"BUILDKITE_TOKEN", "BUILDKITE_WEBHOOK_SECRET", "BUILDKITE_CONTROLLER_OPS_TOKEN"}
LEASES = {triple for triple in REQUIRED_RBAC if triple[1] == "leases"}


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def every(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def controller_container(objects: list[Obj]) -> Obj:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def config_of(objects: list[Obj]) -> Obj:
    return yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])


def namespaces(objects: list[Obj]) -> tuple[str, str]:
    """(the controller's namespace, the jobs namespace) as the manifests define them."""
    return one(objects, "Deployment")["metadata"]["namespace"], config_of(objects)["namespace"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def secrets_read_by_controller(objects: list[Obj]) -> dict[str, str]:
    """Env var -> Secret name, for every Secret the controller's container reads."""
    container = controller_container(objects)
    assert "envFrom" not in container, "read Secrets key by key, so each one is visible here"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert not any("secret" in volume for volume in pod["volumes"]), "no Secret volumes"
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]["name"]
        for item in container["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_rendered_object_passes_the_strict_kubernetes_schema(
    overlay_objects: list[Obj], base_objects: list[Obj], version: str
) -> None:
    for obj in [*overlay_objects, *base_objects, *secret_examples()]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_misspelt_security_field(overlay_objects: list[Obj]) -> None:
    broken = copy.deepcopy(one(overlay_objects, "Deployment"))
    context = broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


# --- the layout: two namespaces, two Secrets --------------------------------------------------------


@pytest.mark.parametrize("which", ["overlay", "base"])
def test_the_controller_and_the_agent_pods_live_in_different_namespaces(
    overlay_objects: list[Obj], base_objects: list[Obj], which: str
) -> None:
    objects = overlay_objects if which == "overlay" else base_objects
    controller_ns, jobs_ns = namespaces(objects)
    assert controller_ns != jobs_ns
    assert {ns["metadata"]["name"] for ns in every(objects, "Namespace")} == {controller_ns, jobs_ns}
    # In the jobs namespace: the controller's Role and its binding, nothing else.
    in_jobs = {
        (o["kind"], o["metadata"]["name"]) for o in objects if o["metadata"].get("namespace") == jobs_ns
    }
    assert in_jobs == {("Role", "buildkite-controller"), ("RoleBinding", "buildkite-controller")}


@pytest.mark.parametrize("which", ["overlay", "base"])
def test_no_secret_the_controller_reads_its_api_token_or_webhook_secret_from_is_in_the_jobs_namespace(
    overlay_objects: list[Obj], base_objects: list[Obj], which: str
) -> None:
    objects = overlay_objects if which == "overlay" else base_objects
    controller_ns, jobs_ns = namespaces(objects)
    read = secrets_read_by_controller(objects)
    assert {"BUILDKITE_TOKEN", "BUILDKITE_WEBHOOK_SECRET"} <= read.keys()
    # A secretKeyRef names a Secret of the pod's own namespace: the controller's.
    assert one(objects, "Deployment")["metadata"]["namespace"] == controller_ns != jobs_ns
    examples = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in secret_examples()}
    for var in CONTROLLER_ONLY_KEYS:
        assert (controller_ns, read[var]) in examples, f"{var}: {read[var]} is not in {controller_ns}"
    for (namespace, name), secret in examples.items():
        if namespace == jobs_ns:
            assert not CONTROLLER_ONLY_KEYS & secret["stringData"].keys(), f"{name} holds controller tokens"


@pytest.mark.parametrize("which", ["overlay", "base"])
def test_agent_pods_read_their_token_from_another_secret_in_the_jobs_namespace(
    overlay_objects: list[Obj], base_objects: list[Obj], which: str
) -> None:
    objects = overlay_objects if which == "overlay" else base_objects
    _, jobs_ns = namespaces(objects)
    agent_secret = config_of(objects)["agent-token-secret"]
    assert agent_secret not in secrets_read_by_controller(objects).values()
    secret = one(secret_examples(), "Secret", agent_secret)
    assert secret["metadata"]["namespace"] == jobs_ns
    assert set(secret["stringData"]) == {"BUILDKITE_AGENT_TOKEN"}


def test_secret_examples_hold_only_placeholders_and_are_never_applied() -> None:
    for secret in secret_examples():
        assert "data" not in secret
        assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    # Listed in a kustomization, `kubectl apply -k` would overwrite the real Secrets with placeholders.
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text()).get("resources") or []
        assert not any(Path(entry).name == SECRET_EXAMPLE.name for entry in listed), kustomization


def test_no_rendered_object_is_a_secret(overlay_objects: list[Obj], base_objects: list[Obj]) -> None:
    assert not every(overlay_objects + base_objects, "Secret")


# --- RBAC ------------------------------------------------------------------------------------------


def rbac_triples(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def roles_in(objects: list[Obj], namespace: str) -> list[Obj]:
    return [role for role in every(objects, "Role") if role["metadata"]["namespace"] == namespace]


def test_roles_grant_exactly_what_the_controller_uses_each_in_its_namespace(
    overlay_objects: list[Obj],
) -> None:
    controller_ns, jobs_ns = namespaces(overlay_objects)
    (jobs_role,) = roles_in(overlay_objects, jobs_ns)
    (lease_role,) = roles_in(overlay_objects, controller_ns)
    # app/kube.py is the only importer of `kubernetes`; its REQUIRED_RBAC lists every call it makes.
    assert rbac_triples(jobs_role) == REQUIRED_RBAC - LEASES
    assert rbac_triples(lease_role) == LEASES


def test_roles_have_no_wildcards_no_secret_access_and_no_cluster_scope(overlay_objects: list[Obj]) -> None:
    for role in every(overlay_objects, "Role"):
        triples = rbac_triples(role)
        assert not any("*" in part for triple in triples for part in triple)
        assert not any(resource == "secrets" for _, resource, _ in triples)
    assert not any(obj["kind"] in {"ClusterRole", "ClusterRoleBinding"} for obj in overlay_objects)


@pytest.mark.parametrize("which", ["overlay", "base"])
def test_lease_access_is_limited_to_the_configured_lease_where_kubernetes_allows(
    overlay_objects: list[Obj], base_objects: list[Obj], which: str
) -> None:
    objects = overlay_objects if which == "overlay" else base_objects
    lease_name = config_of(objects)["leader-lease-name"]
    for role in every(objects, "Role"):
        for rule in role["rules"]:
            if rule["resources"] != ["leases"]:
                assert "resourceNames" not in rule
            elif "create" in rule["verbs"]:
                # The API server checks create before the object has a name: resourceNames would deny it.
                assert rule["verbs"] == ["create"] and "resourceNames" not in rule
            else:
                assert rule["resourceNames"] == [lease_name]


def test_each_role_is_bound_to_the_deployment_service_account_in_its_namespace(
    overlay_objects: list[Obj],
) -> None:
    deployment = one(overlay_objects, "Deployment")
    account = {
        "kind": "ServiceAccount",
        "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "namespace": deployment["metadata"]["namespace"],
    }
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in every(overlay_objects, "Role")}
    bound = set()
    for binding in every(overlay_objects, "RoleBinding"):
        assert binding["subjects"] == [account]
        assert binding["roleRef"]["kind"] == "Role"
        bound.add((binding["metadata"]["namespace"], binding["roleRef"]["name"]))
    assert bound == roles
    assert one(overlay_objects, "ServiceAccount")["metadata"] == {
        **one(overlay_objects, "ServiceAccount")["metadata"],
        "name": account["name"],
        "namespace": account["namespace"],
    }


# --- network exposure ---------------------------------------------------------------------------------

JOB_POD = ({"kubernetes.io/metadata.name": "buildkite"}, {"buildkite.com/job-uuid": "0190b5a4"})


def exposure(objects: list[Obj], source: tuple[dict[str, str], dict[str, str]], port: str) -> bool:
    deployment = one(objects, "Deployment")
    return admitted(
        every(objects, "NetworkPolicy"),
        target_namespace=deployment["metadata"]["namespace"],
        target_labels=deployment["spec"]["template"]["metadata"]["labels"],
        target_ports={p["name"]: p["containerPort"] for p in controller_container(objects)["ports"]},
        source_namespace_labels=source[0],
        source_labels=source[1],
        port=port,
    )


@pytest.mark.parametrize("port", ["ops", "http"])
def test_job_pods_cannot_reach_the_controller_ports(overlay_objects: list[Obj], port: str) -> None:
    _, jobs_ns = namespaces(overlay_objects)
    job_pod = ({"kubernetes.io/metadata.name": jobs_ns}, JOB_POD[1])
    assert not exposure(overlay_objects, job_pod, port)
    # A pipeline sets its pod's labels: dressed as the controller, it is still in the wrong namespace.
    labels = one(overlay_objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not exposure(overlay_objects, (job_pod[0], dict(labels)), port)


def test_only_the_ingress_controller_and_the_other_replicas_reach_the_webhook_port(
    overlay_objects: list[Obj],
) -> None:
    controller_ns, _ = namespaces(overlay_objects)
    labels = one(overlay_objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    ingress = ({"kubernetes.io/metadata.name": "ingress-nginx"}, {"app.kubernetes.io/name": "ingress-nginx"})
    replica = ({"kubernetes.io/metadata.name": controller_ns}, dict(labels))
    monitoring = ({"kubernetes.io/metadata.name": "monitoring"}, {"app": "prometheus"})
    assert exposure(overlay_objects, ingress, "http") and not exposure(overlay_objects, ingress, "ops")
    assert exposure(overlay_objects, replica, "http")
    assert exposure(overlay_objects, monitoring, "ops") and not exposure(overlay_objects, monitoring, "http")


def test_the_controller_namespace_denies_ingress_by_default(overlay_objects: list[Obj]) -> None:
    controller_ns, _ = namespaces(overlay_objects)
    deny = [
        p
        for p in every(overlay_objects, "NetworkPolicy")
        if p["metadata"]["namespace"] == controller_ns and p["spec"]["podSelector"] == {}
    ]
    assert [p["spec"] for p in deny] == [{"podSelector": {}, "policyTypes": ["Ingress"]}]


def test_without_the_network_policies_a_job_pod_would_reach_the_ops_port(overlay_objects: list[Obj]) -> None:
    # The evaluator's own check: no policy selecting a pod means everything is admitted.
    others = [o for o in overlay_objects if o["kind"] != "NetworkPolicy"]
    assert exposure(others, JOB_POD, "ops")


def test_services_and_ingress_keep_the_ops_port_off_the_public_path(overlay_objects: list[Obj]) -> None:
    pod_labels = one(overlay_objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    webhook = one(overlay_objects, "Service", "buildkite-controller")
    ops = one(overlay_objects, "Service", "buildkite-controller-ops")
    for service in (webhook, ops):
        assert service["spec"]["type"] == "ClusterIP" and selects(service["spec"]["selector"], pod_labels)
    assert [(p["port"], p["targetPort"]) for p in webhook["spec"]["ports"]] == [(80, "http")]
    assert [p["targetPort"] for p in ops["spec"]["ports"]] == ["ops"]
    spec = one(overlay_objects, "Ingress")["spec"]
    assert "defaultBackend" not in spec
    paths = [path for rule in spec["rules"] for path in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [(WEBHOOK_PATH, "Exact")]
    assert paths[0]["backend"]["service"] == {"name": webhook["metadata"]["name"], "port": {"name": "http"}}


# --- the pod ---------------------------------------------------------------------------------------


def test_the_deployment_pod_meets_the_restricted_pod_security_standard(overlay_objects: list[Obj]) -> None:
    pod = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    controller_ns, _ = namespaces(overlay_objects)
    labels = one(overlay_objects, "Namespace", controller_ns)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    ("path", "value", "violation"),
    [
        (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
        (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "capabilities"),
        (("containers", 0, "securityContext", "runAsUser"), 0, "runAsUser"),
        (("securityContext", "seccompProfile"), {"type": "Unconfined"}, "seccompProfile"),
        (("hostNetwork",), True, "hostNetwork"),
        (("volumes", 0), {"name": "config", "hostPath": {"path": "/etc"}}, "volume"),
    ],
)
def test_the_restricted_check_sees_each_kind_of_violation(
    overlay_objects: list[Obj], path: tuple[Any, ...], value: Any, violation: str
) -> None:
    pod = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]
    target = pod
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(violation in found for found in restricted_violations(pod)), restricted_violations(pod)


def test_the_only_writable_mount_is_tmp_on_an_emptydir(overlay_objects: list[Obj]) -> None:
    pod = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = [m for m in controller_container(overlay_objects)["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert "emptyDir" in volumes[writable[0]["name"]]
    assert controller_container(overlay_objects)["securityContext"]["readOnlyRootFilesystem"] is True


def test_probes_hit_healthz_and_readyz_on_the_ops_port_the_args_open(overlay_objects: list[Obj]) -> None:
    container = controller_container(overlay_objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(ports) == {"http", "ops"} and ports["http"] == 8080
    args = container["args"]
    assert int(args[args.index("--ops-port") + 1]) == ports["ops"] != ports["http"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() <= resources["limits"].keys()


def test_deployment_reads_its_config_file_from_the_mounted_configmap(overlay_objects: list[Obj]) -> None:
    pod = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]
    container = controller_container(overlay_objects)
    args = container["args"]
    assert args[0] == "serve"
    assert args[args.index("--config") + 1] == f"{CONFIG_DIR}/config.yaml"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == one(overlay_objects, "ConfigMap")["metadata"]["name"]
    assert mount["readOnly"] is True


def test_controller_env_comes_from_its_secret_and_the_downward_api(overlay_objects: list[Obj]) -> None:
    env = {item["name"]: item for item in controller_container(overlay_objects)["env"]}
    fields = {
        name: item["valueFrom"]["fieldRef"]["fieldPath"]
        for name, item in env.items()
        if "fieldRef" in item.get("valueFrom", {})
    }
    assert fields == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_IP": "status.podIP",
    }
    (controller_secret,) = [
        s for s in secret_examples() if s["metadata"]["name"] == "buildkite-controller-secrets"
    ]
    refs = {name: item["valueFrom"]["secretKeyRef"] for name, item in env.items() if name not in fields}
    assert {(name, ref["name"], ref["key"]) for name, ref in refs.items()} == {
        (key, controller_secret["metadata"]["name"], key) for key in controller_secret["stringData"]
    }


def test_overlay_sets_a_tagged_image_and_its_own_config(
    overlay_objects: list[Obj], base_objects: list[Obj]
) -> None:
    image = controller_container(overlay_objects)["image"]
    assert image != controller_container(base_objects)["image"]
    assert ":" in image.rsplit("/", 1)[-1], f"overlay image {image} has no tag"
    assert config_of(overlay_objects) != config_of(base_objects)


def test_base_config_shows_a_commented_pod_spec_patch_example(base_objects: list[Obj]) -> None:
    text = one(base_objects, "ConfigMap")["data"]["config.yaml"]
    assert "# pod-spec-patch:" in text
    assert "pod-spec-patch" not in yaml.safe_load(text)


def test_deployment_has_two_replicas_spread_across_nodes(overlay_objects: list[Obj]) -> None:
    deployment = one(overlay_objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert pod["terminationGracePeriodSeconds"] == 30
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], pod_labels)
    for constraint in pod["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels)
    budget = one(overlay_objects, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1 < deployment["spec"]["replicas"]
    assert selects(budget["selector"]["matchLabels"], pod_labels)


def test_readme_commands_match_the_manifests(overlay_objects: list[Obj]) -> None:
    text = (DEPLOY / "README.md").read_text()
    commands = re.findall(
        r"kubectl -n (\S+) create secret generic (\S+)((?:\s+\\\n\s+--from-literal=\w+='[^']*')+)", text
    )
    made = {
        (ns, name): set(re.findall(r"--from-literal=(\w+)=", literals)) for ns, name, literals in commands
    }
    assert made == {
        (s["metadata"]["namespace"], s["metadata"]["name"]): set(s["stringData"]) for s in secret_examples()
    }
    for path in re.findall(r"kubectl apply -k ([^<\s]\S*)", text):
        assert (REPO / path / "kustomization.yaml").is_file(), path
    assert f"https://<host>{WEBHOOK_PATH}" in text
    assert (BASE / "kustomization.yaml").is_file()
