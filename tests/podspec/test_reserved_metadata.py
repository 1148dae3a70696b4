"""The controller's own labels and annotations cannot be set, changed or removed by user input.

Issue 9: plugin ``metadata.annotations: {buildkite.com/failure-reported: x}`` reached the pod, and the
controller deleted that live pod at once, forever; with an empty controller id a user label
``buildkite.com/controller-id`` hid the pod from the watch. Every such input is now a ``BuildError``
naming the key (at run time the job fails with it), or a config error for controller defaults.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from podspec import BuildError, build
from podspec.metadata import (
    CONTROLLER_ID_LABEL,
    FAILURE_NOTIFIED_ANNOTATION,
    FAILURE_REPORTED_ANNOTATION,
    JOB_UUID_LABEL,
    RESERVED_KEYS,
    is_reserved,
)
from tests.podspec.builders import JOB_UUID, make_config, make_job

ROOT = Path(__file__).resolve().parents[2]
# Keys from the pod contract that a user might try, one per kind of reserved key.
SAMPLE_KEYS = [
    JOB_UUID_LABEL,
    CONTROLLER_ID_LABEL,
    FAILURE_REPORTED_ANNOTATION,
    FAILURE_NOTIFIED_ANNOTATION,
    "buildkite.com/step-key",
    "buildkite.com/pod-template-name",
    "buildkite.com/sidecar-0",
    "tag.buildkite.com/queue",
]


def _build(plugin: Any, **config: Any) -> dict[str, Any]:
    return build(make_job(plugin=plugin), config=make_config(**config)).manifest


def _refused(plugin: Any, **config: Any) -> BuildError:
    with pytest.raises(BuildError) as caught:
        _build(plugin, **config)
    return caught.value


# ---- the two incidents of the issue ---------------------------------------------------------------------


def test_a_pipeline_cannot_mark_its_pod_as_failure_reported() -> None:
    error = _refused({"metadata": {"annotations": {FAILURE_REPORTED_ANNOTATION: "x"}}})
    assert error.field == "kubernetes.metadata.annotations"
    assert FAILURE_REPORTED_ANNOTATION in error.message


def test_without_a_controller_id_a_pipeline_cannot_hide_its_pod_from_the_watch() -> None:
    error = _refused({"metadata": {"labels": {CONTROLLER_ID_LABEL: "someone-else"}}}, id="")
    assert error.field == "kubernetes.metadata.labels"
    assert CONTROLLER_ID_LABEL in error.message


# ---- every source of user metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("key", SAMPLE_KEYS)
@pytest.mark.parametrize("kind", ["labels", "annotations"])
def test_plugin_metadata_naming_a_reserved_key_is_refused(kind: str, key: str) -> None:
    # The same value the controller would set is refused too: "set" is enough.
    error = _refused({"metadata": {kind: {key: JOB_UUID}}})
    assert (error.field, key in error.message) == (f"kubernetes.metadata.{kind}", True)


@pytest.mark.parametrize("kind", ["labels", "annotations"])
def test_controller_default_metadata_naming_a_reserved_key_is_a_config_error(kind: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_config(default_metadata={kind: {FAILURE_REPORTED_ANNOTATION: "x"}})
    assert "default-metadata" in str(caught.value) and FAILURE_REPORTED_ANNOTATION in str(caught.value)


PATCH_CASES = {
    "reserved-label": (
        {"metadata": {"labels": {JOB_UUID_LABEL: "other"}}},
        "metadata.labels",
        JOB_UUID_LABEL,
    ),
    "reserved-annotation-removed": (
        {"metadata": {"annotations": {FAILURE_REPORTED_ANNOTATION: None}}},
        "metadata.annotations",
        FAILURE_REPORTED_ANNOTATION,
    ),
    "directive-on-metadata": ({"metadata": {"$patch": "replace"}}, "metadata.$patch", "directive"),
    "directive-on-labels": ({"metadata": {"labels": {"$patch": "replace"}}}, "metadata.labels", "$patch"),
    "retain-keys": ({"metadata": {"$retainKeys": ["labels"]}}, "metadata.$retainKeys", "directive"),
    "go-spelling": (
        {"Metadata": {"Labels": {CONTROLLER_ID_LABEL: "x"}}},
        "Metadata.Labels",
        CONTROLLER_ID_LABEL,
    ),
}


@pytest.mark.parametrize(("patch", "field", "word"), PATCH_CASES.values(), ids=PATCH_CASES)
def test_metadata_inside_a_plugin_pod_spec_patch_is_refused(
    patch: dict[str, Any], field: str, word: str
) -> None:
    error = _refused({"podSpecPatch": patch})
    assert error.field == f"kubernetes.podSpecPatch.{field}"
    assert word in error.message


@pytest.mark.parametrize(("patch", "field", "word"), PATCH_CASES.values(), ids=PATCH_CASES)
def test_metadata_inside_a_plugin_pod_spec_is_refused(patch: dict[str, Any], field: str, word: str) -> None:
    error = _refused({"podSpec": {"containers": [{"image": "alpine"}], **patch}})
    assert error.field == f"kubernetes.podSpec.{field}"
    assert word in error.message


@pytest.mark.parametrize(("patch", "field", "word"), PATCH_CASES.values(), ids=PATCH_CASES)
def test_metadata_inside_the_controller_pod_spec_patch_is_a_config_error(
    patch: dict[str, Any], field: str, word: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        make_config(pod_spec_patch=patch)
    assert f"pod-spec-patch.{field}" in str(caught.value) and word in str(caught.value)


def test_metadata_inside_a_pod_template_spec_is_refused() -> None:
    spec = {
        "containers": [{"name": "main", "image": "alpine"}],
        "metadata": {"labels": {JOB_UUID_LABEL: "x"}},
    }
    with pytest.raises(BuildError) as caught:
        build(make_job(plugin={"podTemplate": "t"}), config=make_config(), pod_template_spec=spec)
    assert caught.value.field == "podTemplate[t].template.spec.metadata.labels"


# ---- what stays allowed ---------------------------------------------------------------------------------


def test_ordinary_user_metadata_and_the_safe_to_evict_override_still_reach_the_pod() -> None:
    pod = _build(
        {
            "metadata": {
                "labels": {"team": "ci", "buildkite.com.example/x": "y"},
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
            }
        },
        default_metadata={"labels": {"cost-centre": "42"}},
    )
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert (labels["team"], labels["cost-centre"], labels["buildkite.com.example/x"]) == ("ci", "42", "y")
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"


def test_unreserved_metadata_in_a_patch_is_still_only_an_ignored_unknown_field() -> None:
    built = build(
        make_job(plugin={"podSpecPatch": {"metadata": {"labels": {"team": "ci"}}}}), config=make_config()
    )
    assert "team" not in built.manifest["metadata"]["labels"]
    assert "kubernetes.podSpecPatch.metadata: unknown field, ignored" in built.warnings


@pytest.mark.parametrize(
    ("key", "reserved"),
    [
        (JOB_UUID_LABEL, True),
        ("tag.buildkite.com/gpu", True),
        ("buildkite.com/sidecar-12", True),
        ("buildkite.com/team", False),
        ("team", False),
        ("cluster-autoscaler.kubernetes.io/safe-to-evict", False),
    ],
)
def test_is_reserved(key: str, reserved: bool) -> None:
    assert is_reserved(key) is reserved


# ---- one home for the keys ------------------------------------------------------------------------------


def _service_key_literals() -> set[str]:
    found = set()
    for path in (ROOT / "app").rglob("*.py"):
        if "simulate" in path.parts:
            continue  # the fakes stand in for Kubernetes and Buildkite; they are not the controller
        for node in ast.walk(ast.parse(path.read_text())):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and value.startswith(("buildkite.com/", "tag.buildkite.com/")):
                found.add(value)
    return found


# Keys the service writes somewhere other than a job pod.
NOT_POD_KEYS = {"buildkite.com/leader-url"}  # on the leader-election Lease


def test_the_service_spells_no_pod_key_itself() -> None:
    """Every pod label/annotation key the service reads or writes comes from ``podspec.metadata``, so
    the reserved list cannot miss one: a key spelled in ``app/`` would fail here."""
    assert _service_key_literals() - NOT_POD_KEYS == set()


def test_the_keys_the_service_reads_back_are_reserved() -> None:
    from app import podview, watch

    for key in (
        podview.JOB_UUID_LABEL,
        podview.FAILURE_REPORTED_ANNOTATION,
        podview.FAILURE_NOTIFIED_ANNOTATION,
    ):
        assert key in RESERVED_KEYS
    assert {watch.JOB_UUID_LABEL, watch.CONTROLLER_ID_LABEL} <= RESERVED_KEYS
