"""The controller's RBAC as ``deploy/`` ships it, applied to a real apiserver.

The manifests are rendered with ``kubectl kustomize`` (the machine image's kubectl) and read, never
restated here: which ServiceAccount the Deployment runs as, which Roles bind to it, in which namespaces
they grant pods and the leader Lease. Tests then act as that ServiceAccount, so least privilege is
checked by the real authorizer.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.realkube.controlplane import ControlPlane, Credentials

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]
# Kinds of the RBAC set, in the order they must exist, with their collection paths.
RBAC_KINDS: dict[str, str] = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


def kustomization_dir() -> Path:
    """``deploy/base`` while it exists, else ``deploy/`` itself (the layout is being reworked)."""
    for candidate in (ROOT / "deploy" / "base", ROOT / "deploy"):
        if (candidate / "kustomization.yaml").exists():
            return candidate
    raise FileNotFoundError("no kustomization.yaml in deploy/base or deploy/")


def render() -> list[Json]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not on PATH (the machine image ships it, with kustomize)")
    out = subprocess.run(
        [kubectl, "kustomize", str(kustomization_dir())],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if isinstance(doc, dict)]


def _grants(rules: list[Json], group: str, resource: str, verb: str) -> list[Json]:
    return [
        r
        for r in rules
        if group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and verb in r.get("verbs", [])
    ]


@dataclass(frozen=True)
class ControllerRBAC:
    """Where the rendered RBAC lets the controller work."""

    service_account: tuple[str, str]  # (namespace, name) the Deployment runs as
    jobs_namespace: str  # where a Role bound to it grants pods create
    lease_namespace: str  # where it grants leases create
    lease_name: str  # the Lease name get/update is limited to
    credentials: Credentials


def apply(plane: ControlPlane) -> ControllerRBAC:
    """Create the rendered RBAC objects (and their namespaces) and return the controller's view of them."""
    docs = render()
    for kind, path in RBAC_KINDS.items():
        for doc in (d for d in docs if d.get("kind") == kind):
            namespace = doc["metadata"].get("namespace", "")
            plane.ensure(path.format(ns=namespace), doc)
            if kind == "Namespace":
                plane.create_service_account(doc["metadata"]["name"], "default")
    (deployment,) = [d for d in docs if d.get("kind") == "Deployment"]
    account = (
        deployment["metadata"]["namespace"],
        deployment["spec"]["template"]["spec"].get("serviceAccountName", "default"),
    )
    bound: list[tuple[str, list[Json]]] = []  # (namespace, rules) of each Role bound to the account
    roles = {
        (d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs if d["kind"] == "Role"
    }
    for binding in (d for d in docs if d.get("kind") == "RoleBinding"):
        subjects = {
            (s.get("namespace", ""), s["name"])
            for s in binding.get("subjects", [])
            if s["kind"] == "ServiceAccount"
        }
        role = roles.get((binding["metadata"]["namespace"], binding["roleRef"]["name"]))
        if account in subjects and role is not None:
            bound.append((binding["metadata"]["namespace"], role.get("rules", [])))
    (jobs_namespace,) = {ns for ns, rules in bound if _grants(rules, "", "pods", "create")}
    (lease_namespace,) = {
        ns for ns, rules in bound if _grants(rules, "coordination.k8s.io", "leases", "create")
    }
    lease_rules = [
        r
        for ns, rules in bound
        if ns == lease_namespace
        for r in _grants(rules, "coordination.k8s.io", "leases", "update")
    ]
    names = [n for r in lease_rules for n in r.get("resourceNames", [])]
    return ControllerRBAC(
        service_account=account,
        jobs_namespace=jobs_namespace,
        lease_namespace=lease_namespace,
        lease_name=names[0] if names else "buildkite-controller-leader",
        credentials=plane.service_account(*account, create=False),
    )
