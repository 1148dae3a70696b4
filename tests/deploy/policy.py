"""Two checks the deploy tests apply to rendered manifests, each written from its Kubernetes definition.

``admitted``: would the NetworkPolicies let a source pod connect to a port of a target pod? It follows the
NetworkPolicy API's rules for the subset deploy/ uses (matchLabels selectors, named or numbered ports)
and refuses anything else (matchExpressions, ipBlock, endPort) rather than guess.

``restricted_violations``: which controls of the `restricted` Pod Security Standard (and the `baseline`
ones it includes) a pod spec breaks. The real admission plugin runs on this pod in tests/realkube.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    unknown = set(selector) - {"matchLabels"}
    if unknown:
        raise NotImplementedError(f"selector fields {sorted(unknown)} are not evaluated here")
    return dict(selector.get("matchLabels") or {}).items() <= labels.items()


def _peer_admits(
    peer: Obj, *, same_namespace: bool, ns_labels: dict[str, str], labels: dict[str, str]
) -> bool:
    if "ipBlock" in peer:
        raise NotImplementedError("ipBlock peers are not evaluated here")
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], ns_labels):
            return False
        return "podSelector" not in peer or _matches(peer["podSelector"], labels)
    # A podSelector alone selects pods of the policy's own namespace.
    return same_namespace and _matches(peer.get("podSelector") or {}, labels)


def _port_admits(rule_port: Obj, *, port: str, ports: dict[str, int]) -> bool:
    if "endPort" in rule_port:
        raise NotImplementedError("endPort ranges are not evaluated here")
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    if "port" not in rule_port:
        return True
    wanted = rule_port["port"]
    return wanted == port if isinstance(wanted, str) else wanted == ports[port]


def admitted(
    policies: list[Obj],
    *,
    target_namespace: str,
    target_labels: dict[str, str],
    target_ports: dict[str, int],
    source_namespace_labels: dict[str, str],
    source_labels: dict[str, str],
    port: str,
) -> bool:
    """True if a TCP connection from the source pod to the target's named ``port`` is allowed."""
    isolating = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target_namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"]["podSelector"], target_labels)
    ]
    if not isolating:
        return True  # a pod no policy selects for ingress is not isolated
    same_namespace = source_namespace_labels.get("kubernetes.io/metadata.name") == target_namespace
    for policy in isolating:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            from_ok = not peers or any(
                _peer_admits(
                    peer,
                    same_namespace=same_namespace,
                    ns_labels=source_namespace_labels,
                    labels=source_labels,
                )
                for peer in peers
            )
            ports = rule.get("ports")
            port_ok = not ports or any(_port_admits(p, port=port, ports=target_ports) for p in ports)
            if from_ok and port_ok:
                return True
    return False


# Volume types the restricted profile allows.
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod: Obj) -> list[str]:
    """Every `restricted` Pod Security Standard control ``pod`` (a PodSpec) breaks, as readable strings."""
    found: list[str] = []
    pod_context = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"{key} must be unset or false")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: type {sorted(kinds)} is not allowed")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl["name"] not in _SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']} is not allowed")
    if pod_context.get("runAsUser") == 0:
        found.append("pod runAsUser must not be 0")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        found.append(f"pod seccompProfile must be RuntimeDefault or Localhost (got {pod_seccomp})")
    containers = [
        *(pod.get("initContainers") or []),
        *pod["containers"],
        *(pod.get("ephemeralContainers") or []),
    ]
    for container in containers:
        found += _container_violations(container, pod_context)
    return found


def _container_violations(container: Obj, pod_context: Obj) -> list[str]:
    name = container["name"]
    context = container.get("securityContext") or {}
    found: list[str] = []
    if context.get("privileged"):
        found.append(f"{name}: privileged must be false")
    if context.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: allowPrivilegeEscalation must be false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append(f"{name}: capabilities must drop ALL")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append(f"{name}: capabilities may add only NET_BIND_SERVICE")
    if set(capabilities.get("add") or []) - _BASELINE_CAPABILITIES:
        found.append(f"{name}: capabilities add beyond the baseline set")
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        found.append(f"{name}: runAsNonRoot must be true")
    if context.get("runAsUser") == 0:
        found.append(f"{name}: runAsUser must not be 0")
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (got {seccomp})")
    if any(port.get("hostPort") for port in container.get("ports") or []):
        found.append(f"{name}: hostPort is not allowed")
    if context.get("procMount", "Default") != "Default":
        found.append(f"{name}: procMount must be Default")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in ("", "container_t", "container_init_t", "container_kvm_t") or set(
        selinux
    ) & {"user", "role"}:
        found.append(f"{name}: seLinuxOptions not allowed")
    return found
