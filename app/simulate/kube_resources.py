"""The resource types the fake apiserver serves, and how their URLs, kinds and schemas relate.

A request path names a group/version and a plural resource (`/api/v1/namespaces/ns/pods`,
`/apis/coordination.k8s.io/v1/namespaces/ns/leases`); this table maps it to the `kind` stored in
objects, the List kind returned by list calls, and the strict JSON schema file used for validation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    """One namespaced resource type, e.g. pods in the core group."""

    plural: str
    kind: str
    group: str = ""
    version: str = "v1"
    # Resources whose updates must name the resourceVersion they read (apiserver strategy
    # `AllowUnconditionalUpdate() == false`), so a blind PUT is a 422 instead of a silent overwrite.
    requires_resource_version: bool = False
    verbs: tuple[str, ...] = (
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def schema_file(self) -> str:
        suffix = f"{self.group.split('.')[0]}-{self.version}" if self.group else self.version
        return f"{self.kind.lower()}-{suffix}.json"


CORE: dict[str, ResourceType] = {
    r.plural: r
    for r in (
        ResourceType("pods", "Pod"),
        ResourceType("podtemplates", "PodTemplate"),
        ResourceType("secrets", "Secret"),
        ResourceType("configmaps", "ConfigMap"),
        ResourceType("events", "Event"),
    )
}
COORDINATION: dict[str, ResourceType] = {
    "leases": ResourceType("leases", "Lease", group="coordination.k8s.io", requires_resource_version=True)
}
GROUPS: dict[str, dict[str, ResourceType]] = {"": CORE, "coordination.k8s.io": COORDINATION}

SUBRESOURCES: dict[str, frozenset[str]] = {"pods": frozenset({"status", "binding", "log"})}


def resource_type(plural: str, group: str = "") -> ResourceType | None:
    return GROUPS.get(group, {}).get(plural)


def by_name(name: str) -> ResourceType:
    """Look a resource up by plural alone (plurals are unique across the groups served here)."""
    for table in GROUPS.values():
        if name in table:
            return table[name]
    raise KeyError(name)
