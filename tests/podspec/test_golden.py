"""Golden manifests: the reference's worked example (§4.11), every plugin field, every controller option.

Each golden file holds the whole Pod and the warnings; each was reviewed by hand against
reference/agent-stack-k8s.md §4. Regenerate with ``UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

from typing import Any

import pytest

from podspec import build
from tests.podspec.builders import DIGEST_IMAGE, WORKED_EXAMPLE_PLUGIN, assert_golden, make_config, make_job

HELM_DEFAULTS = {
    "id": "agent-stack-k8s",
    "namespace": "buildkite",
    "image": DIGEST_IMAGE,
    "tags": ["queue=kubernetes"],
    "agent-token-secret": "agent-stack-k8s-secrets",
}
GIT_MIRRORS = {
    "path": "/mirrors",
    "volume": {"name": "mirrors", "persistentVolumeClaim": {"claimName": "git-mirrors"}},
    "cloneFlags": "--mirror --bare",
    "lockTimeout": 120,
    "skipUpdate": True,
}
FULL_AGENT_CONFIG = {
    "endpoint": "https://agent.buildkite.example/v3",
    "no-http2": True,
    "experiment": ["polyglot-hooks", "use-zzglob"],
    "shell": "/bin/bash -ec",
    "no-color": True,
    "strict-single-hooks": True,
    "no-multipart-artifact-upload": False,
    "trace-context-encoding": "json",
    "tracing-backend": "opentelemetry",
    "tracing-service-name": "ci",
    "tracing-propagate-traceparent": True,
    "disable-warnings-for": ["submodules"],
    "debug-signing": True,
    "git-skip-fetch-existing-commits": True,
    "container-start-timeout": "10m",
    "no-pty": True,
    "no-command-eval": True,
    "no-local-hooks": True,
    "no-plugins": False,
    "plugin-validation": True,
    "hooks-path": "/buildkite/hooks",
    "hooksVolume": {"name": "hooks", "configMap": {"name": "agent-hooks", "defaultMode": 493}},
    "additional-hooks-paths": ["/opt/hooks"],
    "additional-hooks": [
        {"path": "/extra-hooks", "volume": {"name": "extra-hooks", "configMap": {"name": "x"}}}
    ],
    "pluginsVolume": {"name": "plugins", "emptyDir": {}},
    "signing-jwks-file": "signing.json",
    "signing-jwks-key-id": "key-1",
    "signingJWKSVolume": {"name": "signing-jwks", "secret": {"secretName": "signing"}},
    "verification-jwks-file": "/keys/verify.json",
    "verificationJWKSVolume": {"name": "verification-jwks", "secret": {"secretName": "verify"}},
    "verification-failure-behavior": "block",
}

# name → (plugin or None, job keyword arguments, config keys, PodTemplate spec)
CASES: dict[str, tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any] | None]] = {
    "worked-example": (WORKED_EXAMPLE_PLUGIN, {}, HELM_DEFAULTS, None),
    "no-plugin-defaults": (None, {}, {}, None),
    "plugin-podspec-containers": (
        {
            "podSpec": {
                "serviceAccountName": "ci",
                "securityContext": {"fsGroup": 1000},
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "initContainers": [{"name": "prepare", "image": "busybox:1.36", "command": ["true"]}],
                "containers": [
                    {
                        "name": "build",
                        "image": "golang:1.23",
                        "command": ["make", "build"],
                        "args": ["TARGET=linux amd64"],
                        "env": [{"name": "GOFLAGS", "value": "-mod=vendor"}],
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                    },
                    {"image": "node:22", "args": ["discarded"]},
                ],
            }
        },
        {},
        {},
        None,
    ),
    "plugin-pod-template": (
        {"podTemplate": "large-builder"},
        {},
        {},
        {
            "nodeSelector": {"pool": "large"},
            "containers": [
                {"name": "main", "image": "python:3.12", "resources": {"limits": {"memory": "4Gi"}}}
            ],
        },
    ),
    "plugin-pod-spec-patch": (
        {
            "podSpec": {"containers": [{"image": "alpine:3.20", "command": ["echo hi"]}]},
            "podSpecPatch": {
                "serviceAccountName": "deployer",
                "containers": [
                    {"name": "container-0", "command": ["echo", "patched"], "args": ["a b"]},
                    {"name": "agent", "resources": {"requests": {"cpu": "250m"}}},
                    {"name": "docker", "image": "docker:27-dind", "securityContext": {"privileged": True}},
                ],
            },
        },
        {},
        {},
        None,
    ),
    "plugin-sidecars": (
        {
            "sidecars": [
                {"image": "redis:7", "ports": [{"containerPort": 6379}]},
                {"name": "dind", "image": "docker:27-dind", "envFrom": [{"configMapRef": {"name": "dind"}}]},
            ],
            "sidecarParams": {
                "envFrom": [{"secretRef": {"name": "sidecar-secrets"}}],
                "extraVolumeMounts": [{"name": "certs", "mountPath": "/certs"}],
            },
            "podSpec": {
                "volumes": [{"name": "certs", "emptyDir": {}}],
                "containers": [{"image": "alpine:3.20"}],
            },
        },
        {},
        {"default-sidecar-params": {"envFrom": [{"secretRef": {"name": "default-sidecar"}}]}},
        None,
    ),
    "plugin-metadata": (
        {
            "metadata": {
                # The controller's own keys are refused (test_reserved_metadata); safe-to-evict is not one.
                "labels": {"team": "ci"},
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
            }
        },
        {},
        {"default-metadata": {"labels": {"team": "default", "cost-centre": "42"}, "annotations": {"a": "b"}}},
        None,
    ),
    "plugin-extra-volume-mounts": (
        {
            "extraVolumeMounts": [{"name": "secrets", "mountPath": "/secrets", "readOnly": True}],
            "podSpec": {"volumes": [{"name": "secrets", "secret": {"secretName": "ci"}}], "containers": []},
        },
        {},
        {},
        None,
    ),
    "plugin-checkout-params": (
        {
            "checkout": {
                "cloneFlags": "--depth=1",
                "fetchFlags": "--prune",
                "checkoutFlags": "-f",
                "cleanFlags": "-ffdx",
                "noSubmodules": True,
                "submoduleCloneConfig": ["url.x.insteadOf=y", "a=b"],
                "gitMirrors": GIT_MIRRORS,
                "gitCredentialsSecret": {"secretName": "git-credentials"},
                "envFrom": [{"secretRef": {"name": "checkout-env"}}],
                "extraVolumeMounts": [{"name": "known-hosts", "mountPath": "/etc/ssh/known_hosts"}],
            },
            "podSpec": {
                "volumes": [{"name": "known-hosts", "configMap": {"name": "hosts"}}],
                "containers": [],
            },
        },
        {},
        {
            "default-checkout-params": {
                "cloneFlags": "--depth=50",
                "envFrom": [{"secretRef": {"name": "default"}}],
            }
        },
        None,
    ),
    "plugin-checkout-skip": ({"checkout": {"skip": True}}, {}, {}, None),
    "plugin-command-params": (
        {
            "commandParams": {
                "interposer": "vector",
                "envFrom": [{"configMapRef": {"name": "build-env"}}],
                "extraVolumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            },
            "podSpec": {
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "containers": [{"image": "alpine:3.20", "command": ["sh", "-c"], "args": ["echo $HOME"]}],
            },
        },
        {},
        {"default-command-params": {"interposer": "legacy", "envFrom": [{"secretRef": {"name": "default"}}]}},
        None,
    ),
    "plugin-job-active-deadline": ({"jobActiveDeadlineSeconds": 600}, {}, {}, None),
    "step-image-attribute": (
        {"podSpec": {"containers": [{"image": "alpine:3.20"}]}},
        {"BUILDKITE_IMAGE": "ubuntu:24.04"},
        {"pod-spec-patch": {"containers": [{"name": "container-0", "image": "debian:12"}]}},
        None,
    ),
    "controller-agent-config": (None, {}, {"agent-config": FULL_AGENT_CONFIG}, None),
    "controller-empty-agent-config": (None, {}, {"agent-config": {}}, None),
    "controller-pod-spec-patch": (
        None,
        {},
        {
            "pod-spec-patch": {
                "priorityClassName": "ci",
                "tolerations": [{"key": "ci", "operator": "Exists"}],
                "containers": [
                    {"name": "agent", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                    {"name": "checkout", "resources": {"requests": {"cpu": "100m"}}},
                ],
            }
        },
        None,
    ),
    "controller-workspace-volume": (
        None,
        {},
        {
            "workspace-volume": {
                "name": "workspace",
                "ephemeral": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "10Gi"}},
                        }
                    }
                },
            },
            "workspace-mount-sub-path-expr": "$(POD_NAME)",
        },
        None,
    ),
    "controller-resource-class": (
        {"podSpec": {"containers": [{"image": "alpine:3.20", "resources": {"requests": {"cpu": "1"}}}]}},
        {"tags": {"queue": "kubernetes", "resource_class": "large"}},
        {
            "resource-classes": {
                "large": {
                    "resource": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
                    "podResource": {"limits": {"cpu": "6"}},
                    "nodeSelector": {"node.kubernetes.io/instance-type": "m7i.2xlarge"},
                }
            }
        },
        None,
    ),
    "controller-pull-policies": (
        {
            "podSpec": {
                "containers": [{"image": "golang:1.23"}, {"image": "golang:1.23", "imagePullPolicy": "Never"}]
            }
        },
        {},
        {"default-image-pull-policy": "IfNotPresent", "default-image-check-pull-policy": "Always"},
        None,
    ),
    "controller-skip-image-checks": (
        {"podSpec": {"containers": [{"image": "golang:1.23"}]}},
        {},
        {"skip-image-check-containers": True, "image-check-container-cpu-limit": "50m"},
        None,
    ),
    "controller-image-check-limits": (
        {"podSpec": {"containers": [{"image": "golang:1.23"}]}},
        {},
        {"image-check-container-cpu-limit": "50m", "image-check-container-memory-limit": "1Gi"},
        None,
    ),
    "controller-misc-defaults": (
        None,
        {"priority": 7},
        {
            "job-prefix": "bk-",
            "job-active-deadline-seconds": 7200,
            "default-termination-grace-period-seconds": 5,
            "additional-redacted-vars": ["MY_*", "*_CREDS"],
            "tags": ["queue=kubernetes", "os=linux"],
        },
        None,
    ),
    "non-root-checkout": (
        {
            "podSpec": {
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
                "containers": [{"image": "node:22"}],
            },
            "checkout": {"gitCredentialsSecret": {"secretName": "git-credentials"}},
        },
        {},
        {},
        None,
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_pod_matches_its_golden_file(name: str) -> None:
    plugin, job_args, config_keys, template = CASES[name]
    job = make_job(plugin=plugin, **job_args)
    built = build(
        job,
        config=make_config(**{k.replace("-", "_"): v for k, v in config_keys.items()}),
        pod_template_spec=template,
    )
    assert_golden(name, built)
