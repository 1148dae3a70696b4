"""The Kubernetes manifests in deploy/: schema-valid, least privilege, and hardened.

Input: deploy/base and deploy/overlays/example, rendered by tests/deploy/kustomize.py (fixtures in
conftest.py), plus deploy/base/secret.example.yaml, which is deliberately not part of the kustomization.
Every object is checked against the strict Kubernetes JSON schemas of kubernetes-validate, and the Role
against `app.kube.REQUIRED_RBAC`, the set of (API group, resource, verb) the controller's code uses.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.kube import REQUIRED_RBAC
from tests.deploy.conftest import BASE, DEPLOY, REPO, SECRET_EXAMPLE

Obj = dict[str, Any]
# The oldest Kubernetes minor deploy/README.md promises, and the newest the schemas know.
SCHEMA_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]
CONFIG_DIR = "/etc/buildkite-controller"
WEBHOOK_PATH = "/webhooks/buildkite"


def one(objects: list[Obj], kind: str) -> Obj:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def controller_container(objects: list[Obj]) -> Obj:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def secret_example() -> Obj:
    return yaml.safe_load(SECRET_EXAMPLE.read_text())


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_rendered_object_passes_the_strict_kubernetes_schema(
    overlay_objects: list[Obj], base_objects: list[Obj], version: str
) -> None:
    for obj in [*overlay_objects, *base_objects, secret_example()]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_a_misspelt_security_field(overlay_objects: list[Obj]) -> None:
    broken = copy.deepcopy(one(overlay_objects, "Deployment"))
    context = broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


def test_overlay_renders_the_same_objects_as_the_base_in_its_namespace(
    overlay_objects: list[Obj], base_objects: list[Obj]
) -> None:
    kinds = sorted(obj["kind"] for obj in overlay_objects)
    assert kinds == sorted(obj["kind"] for obj in base_objects)
    namespace = one(overlay_objects, "Namespace")["metadata"]["name"]
    assert {o["metadata"].get("namespace") for o in overlay_objects if o["kind"] != "Namespace"} == {
        namespace
    }


def test_overlay_sets_a_tagged_image_and_its_own_config(
    overlay_objects: list[Obj], base_objects: list[Obj]
) -> None:
    image = controller_container(overlay_objects)["image"]
    assert image != controller_container(base_objects)["image"]
    assert ":" in image.rsplit("/", 1)[-1], f"overlay image {image} has no tag"
    overlay_config = one(overlay_objects, "ConfigMap")["data"]["config.yaml"]
    assert overlay_config != one(base_objects, "ConfigMap")["data"]["config.yaml"]


@pytest.mark.parametrize("which", ["overlay", "base"])
def test_controller_config_names_the_deployment_namespace_and_the_agent_secret(
    overlay_objects: list[Obj], base_objects: list[Obj], which: str
) -> None:
    objects = overlay_objects if which == "overlay" else base_objects
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["namespace"] == one(objects, "Deployment")["metadata"]["namespace"]
    assert config["agent-token-secret"] == secret_example()["metadata"]["name"]
    assert isinstance(config["max-in-flight"], int) and config["max-in-flight"] >= 0
    assert config["org"] and config["id"] and config["image"] and config.get("tags", config.get("queue"))


def test_base_config_shows_a_commented_pod_spec_patch_example(base_objects: list[Obj]) -> None:
    text = one(base_objects, "ConfigMap")["data"]["config.yaml"]
    assert "# pod-spec-patch:" in text
    assert "pod-spec-patch" not in yaml.safe_load(text)


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


def test_pod_and_container_run_hardened(overlay_objects: list[Obj]) -> None:
    pod = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]
    container = controller_container(overlay_objects)
    context = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == context["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context.get("privileged", False) is False
    assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()


def test_the_only_writable_mount_is_tmp_on_an_emptydir(overlay_objects: list[Obj]) -> None:
    pod = one(overlay_objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = [m for m in controller_container(overlay_objects)["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert "emptyDir" in volumes[writable[0]["name"]]


def test_probes_hit_healthz_and_readyz_on_the_http_port(overlay_objects: list[Obj]) -> None:
    container = controller_container(overlay_objects)
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and {"cpu", "memory"} <= resources[
        "limits"
    ].keys()


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
    assert pod["topologySpreadConstraints"]
    for constraint in pod["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels)


def test_disruption_budget_keeps_one_of_the_replicas(overlay_objects: list[Obj]) -> None:
    deployment = one(overlay_objects, "Deployment")
    budget = one(overlay_objects, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1 < deployment["spec"]["replicas"]
    assert selects(budget["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])


def test_service_sends_port_80_to_the_named_http_port(overlay_objects: list[Obj]) -> None:
    spec = one(overlay_objects, "Service")["spec"]
    pod_labels = one(overlay_objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["type"] == "ClusterIP" and selects(spec["selector"], pod_labels)
    assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(80, "http")]


def test_ingress_exposes_only_the_webhook_path(overlay_objects: list[Obj]) -> None:
    spec = one(overlay_objects, "Ingress")["spec"]
    service = one(overlay_objects, "Service")
    assert "defaultBackend" not in spec
    paths = [path for rule in spec["rules"] for path in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] in (
        [(WEBHOOK_PATH, "Exact")],
        [(WEBHOOK_PATH, "Prefix")],
    )
    assert paths[0]["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "http"}}


def test_secret_example_holds_only_placeholders_and_is_never_applied() -> None:
    secret = secret_example()
    assert "data" not in secret
    assert set(secret["stringData"]) == {
        "BUILDKITE_TOKEN",
        "BUILDKITE_AGENT_TOKEN",
        "BUILDKITE_WEBHOOK_SECRET",
    }
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    # Listed in the kustomization, `kubectl apply -k` would overwrite the real Secret with placeholders.
    resources = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert SECRET_EXAMPLE.name not in resources


def test_controller_env_comes_from_the_secret_and_the_downward_api(overlay_objects: list[Obj]) -> None:
    env = {item["name"]: item for item in controller_container(overlay_objects)["env"]}
    secret = secret_example()
    assert env.pop("POD_NAME")["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    refs = {name: item["valueFrom"]["secretKeyRef"] for name, item in env.items()}
    assert {(name, ref["name"], ref["key"]) for name, ref in refs.items()} == {
        (key, secret["metadata"]["name"], key) for key in secret["stringData"]
    }


def rbac_triples(role: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_role_grants_exactly_what_the_controller_uses(overlay_objects: list[Obj]) -> None:
    # app/kube.py is the only importer of `kubernetes`; its REQUIRED_RBAC lists every call it makes.
    assert rbac_triples(one(overlay_objects, "Role")) == REQUIRED_RBAC


def test_role_has_no_wildcards_and_no_secret_access(overlay_objects: list[Obj]) -> None:
    triples = rbac_triples(one(overlay_objects, "Role"))
    assert not any("*" in part for triple in triples for part in triple)
    assert not any(resource == "secrets" for _, resource, _ in triples)
    assert not any(obj["kind"] in {"ClusterRole", "ClusterRoleBinding"} for obj in overlay_objects)


@pytest.mark.parametrize("which", ["overlay", "base"])
def test_lease_access_is_limited_to_the_configured_lease_where_kubernetes_allows(
    overlay_objects: list[Obj], base_objects: list[Obj], which: str
) -> None:
    objects = overlay_objects if which == "overlay" else base_objects
    lease_name = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])["leader-lease-name"]
    for rule in one(objects, "Role")["rules"]:
        if rule["resources"] != ["leases"]:
            assert "resourceNames" not in rule
        elif "create" in rule["verbs"]:
            # The API server checks create before the object has a name: resourceNames would deny it.
            assert rule["verbs"] == ["create"] and "resourceNames" not in rule
        else:
            assert rule["resourceNames"] == [lease_name]


def test_role_binding_gives_the_role_to_the_deployment_service_account(overlay_objects: list[Obj]) -> None:
    binding = one(overlay_objects, "RoleBinding")
    deployment = one(overlay_objects, "Deployment")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": one(overlay_objects, "Role")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]
    assert one(overlay_objects, "ServiceAccount")["metadata"]["name"] == binding["subjects"][0]["name"]


def test_readme_commands_match_the_manifests(overlay_objects: list[Obj]) -> None:
    text = (DEPLOY / "README.md").read_text()
    secret = secret_example()
    secret_name = re.search(r"create secret generic (\S+)", text)
    assert secret_name is not None and secret_name[1] == secret["metadata"]["name"]
    assert set(re.findall(r"--from-literal=(\w+)=", text)) == set(secret["stringData"])
    for path in re.findall(r"kubectl apply -k (\S+)", text):
        assert (REPO / path / "kustomization.yaml").is_file(), path
    paths = [
        p["path"] for rule in one(overlay_objects, "Ingress")["spec"]["rules"] for p in rule["http"]["paths"]
    ]
    assert f"https://<host>{paths[0]}" in text
