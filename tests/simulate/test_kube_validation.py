"""Pod validation as the apiserver does it: the pure `validate_pod` and the 422 it causes over HTTP."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiException

from app.simulate.kube_pods import apply_defaults
from app.simulate.kube_quantity import parse_quantity
from app.simulate.kube_validation import pod_rule_causes, schema_causes, validate_pod

VALID = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "buildkite-0190a3c4-job",
        "labels": {"buildkite.com/job-uuid": "0190a3c4"},
        "annotations": {"buildkite.com/job-url": "https://x"},
    },
    "spec": {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": 3600,
        "initContainers": [
            {
                "name": "copy-agent",
                "image": "buildkite/agent:3",
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
            },
            {"name": "sidecar", "image": "redis:7", "restartPolicy": "Always"},
        ],
        "containers": [
            {
                "name": "agent",
                "image": "buildkite/agent:3",
                "env": [
                    {"name": "BUILDKITE_AGENT_ACQUIRE_JOB", "value": "0190a3c4"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ],
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"cpu": "1", "memory": "2Gi"},
                },
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            }
        ],
        "volumes": [{"name": "workspace", "emptyDir": {}}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
    },
}


def _mutated(change) -> dict:
    pod = copy.deepcopy(VALID)
    change(pod)
    return pod


def _container(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


CASES = {
    "pod-name-not-dns-subdomain": (lambda p: p["metadata"].update(name="Build_Kite"), "metadata.name"),
    "pod-name-too-long": (lambda p: p["metadata"].update(name="a" * 254), "metadata.name"),
    "no-name-nor-generate-name": (lambda p: p["metadata"].pop("name"), "metadata.name"),
    "bad-generate-name": (
        lambda p: p["metadata"].update(name="", generateName="Job_"),
        "metadata.generateName",
    ),
    "container-name-not-dns-label": (lambda p: _container(p).update(name="Agent"), "spec.containers[0].name"),
    "container-name-too-long": (lambda p: _container(p).update(name="a" * 64), "spec.containers[0].name"),
    "duplicate-container-across-init": (
        lambda p: _container(p).update(name="copy-agent"),
        "spec.containers[0].name",
    ),
    "no-containers": (lambda p: p["spec"].update(containers=[]), "spec.containers"),
    "missing-image": (lambda p: _container(p).pop("image"), "spec.containers[0].image"),
    "duplicate-volume": (
        lambda p: p["spec"]["volumes"].append({"name": "workspace", "emptyDir": {}}),
        "spec.volumes[1].name",
    ),
    "volume-name-not-dns-label": (
        lambda p: p["spec"]["volumes"].append({"name": "Work", "emptyDir": {}}),
        "spec.volumes[1].name",
    ),
    "two-volume-sources": (
        lambda p: p["spec"]["volumes"][0].update(hostPath={"path": "/x"}),
        "spec.volumes[0]",
    ),
    "mount-of-missing-volume": (
        lambda p: _container(p)["volumeMounts"].append({"name": "cache", "mountPath": "/cache"}),
        "spec.containers[0].volumeMounts[1].name",
    ),
    "duplicate-mount-path": (
        lambda p: _container(p)["volumeMounts"].append({"name": "workspace", "mountPath": "/workspace"}),
        "spec.containers[0].volumeMounts[1].mountPath",
    ),
    "bad-quantity": (
        lambda p: _container(p)["resources"]["limits"].update(cpu="lots"),
        "spec.containers[0].resources.limits[cpu]",
    ),
    "negative-quantity": (
        lambda p: _container(p)["resources"]["requests"].update(memory="-1Gi"),
        "spec.containers[0].resources.requests[memory]",
    ),
    "request-above-limit": (
        lambda p: _container(p)["resources"]["requests"].update(cpu="2"),
        "spec.containers[0].resources.requests",
    ),
    "bad-restart-policy": (lambda p: p["spec"].update(restartPolicy="Sometimes"), "spec.restartPolicy"),
    "bad-pull-policy": (
        lambda p: _container(p).update(imagePullPolicy="Maybe"),
        "spec.containers[0].imagePullPolicy",
    ),
    "bad-dns-policy": (lambda p: p["spec"].update(dnsPolicy="Google"), "spec.dnsPolicy"),
    "restart-policy-on-regular-container": (
        lambda p: _container(p).update(restartPolicy="Always"),
        "spec.containers[0].restartPolicy",
    ),
    "init-restart-policy-not-always": (
        lambda p: p["spec"]["initContainers"][1].update(restartPolicy="Never"),
        "spec.initContainers[1].restartPolicy",
    ),
    "bad-label-key": (lambda p: p["metadata"]["labels"].update({"bad key": "x"}), "metadata.labels"),
    "bad-label-value": (lambda p: p["metadata"]["labels"].update({"ok": "no spaces"}), "metadata.labels[ok]"),
    "label-value-too-long": (
        lambda p: p["metadata"]["labels"].update({"ok": "x" * 64}),
        "metadata.labels[ok]",
    ),
    "bad-annotation-key": (
        lambda p: p["metadata"]["annotations"].update({"/x": "1"}),
        "metadata.annotations",
    ),
    "env-name-with-equals": (
        lambda p: _container(p)["env"].append({"name": "A=B", "value": "1"}),
        "spec.containers[0].env[2].name",
    ),
    "env-value-and-value-from": (
        lambda p: _container(p)["env"][1].update(value="x"),
        "spec.containers[0].env[1].valueFrom",
    ),
    "bad-node-selector": (
        lambda p: p["spec"]["nodeSelector"].update({"k": "bad value"}),
        "spec.nodeSelector[k]",
    ),
    "zero-active-deadline": (
        lambda p: p["spec"].update(activeDeadlineSeconds=0),
        "spec.activeDeadlineSeconds",
    ),
    "port-out-of-range": (
        lambda p: _container(p)["ports"][0].update(containerPort=70000),
        "spec.containers[0].ports[0].containerPort",
    ),
    "bad-protocol": (
        lambda p: _container(p)["ports"][0].update(protocol="HTTP"),
        "spec.containers[0].ports[0].protocol",
    ),
    "unknown-field": (lambda p: _container(p).update(imageName="x"), "spec.containers[0]"),
    "wrong-type": (lambda p: p["spec"].update(activeDeadlineSeconds="soon"), "spec.activeDeadlineSeconds"),
    "containers-not-a-list": (lambda p: p["spec"].update(containers={"name": "x"}), "spec.containers"),
}


def test_a_realistic_agent_pod_is_valid():
    assert validate_pod(VALID) == []


@pytest.mark.parametrize(("change", "field"), CASES.values(), ids=CASES.keys())
def test_each_apiserver_rule_reports_its_field(change, field):
    causes = validate_pod(_mutated(change))
    assert field in [c.field for c in causes], causes


@pytest.mark.parametrize(
    "manifest", [None, [], "pod", 3, {"spec": "x"}], ids=["none", "list", "string", "int", "spec-string"]
)
def test_hostile_manifests_are_reported_not_crashed_on(manifest):
    assert validate_pod(manifest) != []


def test_an_invalid_pod_is_refused_with_422_and_causes(core_v1):
    with pytest.raises(ApiException) as caught:
        core_v1.create_namespaced_pod("default", _mutated(CASES["duplicate-volume"][0]))
    body = json.loads(caught.value.body)
    assert caught.value.status == 422
    assert body["reason"] == "Invalid"
    assert body["details"]["kind"] == "Pod" and body["details"]["name"] == "buildkite-0190a3c4-job"
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueDuplicate",
            "message": 'Duplicate value: "workspace"',
            "field": "spec.volumes[1].name",
        }
    ]
    assert (
        body["message"]
        == 'Pod "buildkite-0190a3c4-job" is invalid: spec.volumes[1].name: Duplicate value: "workspace"'
    )


def test_a_valid_pod_is_accepted_over_http(core_v1):
    assert core_v1.create_namespaced_pod("default", VALID).metadata.name == "buildkite-0190a3c4-job"


def test_other_kinds_are_checked_against_their_schema_too(core_v1):
    with pytest.raises(ApiException) as caught:
        core_v1.create_namespaced_secret("default", {"metadata": {"name": "Bad_Name"}, "type": "Opaque"})
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("text", "value"),
    [("100m", "1/10"), ("1.5Gi", "1610612736"), ("2e3", "2000"), ("1k", "1000"), (".5", "1/2"), (2, "2")],
)
def test_quantities_parse_exactly(text, value):
    assert str(parse_quantity(text)) == value


@pytest.mark.parametrize("text", ["", "1x", "abc", "1..2", "1Gi5", "--1", "1" * 80, True])
def test_malformed_quantities_are_refused(text):
    with pytest.raises(ValueError, match="must match the regex"):
        parse_quantity(text)


GOLDEN = sorted(Path(__file__).parents[1].joinpath("podspec", "golden").glob("*.yaml"))


@pytest.mark.parametrize("path", GOLDEN, ids=[path.stem for path in GOLDEN])
def test_defaults_keep_a_schema_valid_pod_schema_valid(path: Path) -> None:
    """A create checks the schema on the pod as sent, not again after defaulting: that is sound only
    while the defaults never add what the schema refuses."""
    manifest = yaml.safe_load(path.read_text())["pod"]
    assert schema_causes(manifest) == []
    defaulted = apply_defaults(manifest)
    assert defaulted != manifest  # the defaults did add something
    assert schema_causes(defaulted) == []
    assert validate_pod(defaulted) == pod_rule_causes(defaulted) == []


def test_a_create_still_refuses_what_only_the_rules_catch() -> None:
    """The rules beyond the schema still run on create (the schema alone accepts a duplicate name)."""
    pod = _mutated(lambda p: p["spec"]["containers"].append(copy.deepcopy(p["spec"]["containers"][0])))
    assert schema_causes(pod) == []
    assert [cause.reason for cause in pod_rule_causes(apply_defaults(pod))] == ["FieldValueDuplicate"]
