"""Fuzzing the reserved pod metadata: whatever a pipeline or a controller default says, the controller's
own labels and annotations on the pod are exactly the ones it sets, and bad input is a ``BuildError``
naming the field (or, for controller defaults, a refused config) — never a crash.

Inputs mix the controller's keys (and spellings that come close: other case, Go's case-insensitive field
names, strategic-merge directives) with ordinary keys and hostile values, in every place metadata can
be written: plugin ``metadata``, ``metadata`` smuggled into ``podSpec`` / ``podSpecPatch``, and the
controller's ``default-metadata`` and ``pod-spec-patch``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from podspec import BuildError, Job, PodConfig, build
from podspec.job import KUBERNETES_PLUGIN_KEY
from podspec.metadata import RESERVED_KEYS, is_reserved
from tests.podspec.builders import BUILD_ENV, JOB_UUID

CONTROLLER_IDS = ("", "ci-controller")
# Keys a user might try: the controller's own, near misses, ordinary keys, directives.
TRIED_KEYS = st.sampled_from(
    [
        *sorted(RESERVED_KEYS),
        "tag.buildkite.com/queue",
        "tag.buildkite.com/gpu",
        "buildkite.com/sidecar-0",
        "Buildkite.com/job-uuid",
        "buildkite.com/Job-UUID",
        "buildkite.com/team",
        "cluster-autoscaler.kubernetes.io/safe-to-evict",
        "team",
    ]
)
KEYS = TRIED_KEYS | st.sampled_from(["$patch", "$retainKeys"]) | st.text(max_size=12)
# Values Kubernetes accepts on a label, so the build gets as far as the metadata; and hostile ones.
GOOD_VALUES = st.sampled_from(["", "x", "forged", JOB_UUID, "ci-controller", "true", "build_error"])
VALUES = (
    GOOD_VALUES | st.text(max_size=10) | st.none() | st.integers() | st.lists(st.text(max_size=3), max_size=2)
)
WELL_FORMED = st.dictionaries(TRIED_KEYS, GOOD_VALUES, min_size=1, max_size=3)
ENTRIES = WELL_FORMED | st.dictionaries(KEYS, VALUES, max_size=4)
METADATA = st.one_of(
    st.fixed_dictionaries({}, optional={"labels": WELL_FORMED, "annotations": WELL_FORMED}),
    st.fixed_dictionaries(
        {},
        optional={
            "labels": ENTRIES,
            "annotations": ENTRIES,
            "Labels": ENTRIES,
            "ANNOTATIONS": ENTRIES,
            "$patch": st.sampled_from(["replace", "delete", "merge"]),
            "$retainKeys": st.lists(st.sampled_from(["labels", "annotations"]), max_size=2),
            "name": st.text(max_size=5),
        },
    ),
    VALUES,
)
CONTAINERS = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["container-0", "agent", "checkout", "extra"])},
        optional={"image": st.sampled_from(["alpine", "busybox:1.36"]), "$patch": st.just("delete")},
    ),
    max_size=2,
)
# A PodSpec (or a patch of one) carrying pod metadata where a PodSpec has none.
SPECS = st.fixed_dictionaries(
    {},
    optional={
        "metadata": METADATA,
        "Metadata": METADATA,
        "labels": ENTRIES,
        "$patch": st.sampled_from(["replace", "merge", "delete"]),
        "containers": CONTAINERS,
        "nodeSelector": ENTRIES,
        "serviceAccountName": st.text(max_size=5),
    },
)
PLUGINS = st.fixed_dictionaries(
    {},
    optional={
        "metadata": METADATA,
        "podSpec": SPECS,
        "podSpecPatch": SPECS,
        "PodSpecPatch": SPECS,
    },
)


def _job(plugin: Any) -> Job:
    env = {**BUILD_ENV, "BUILDKITE_PLUGINS": json.dumps([{KUBERNETES_PLUGIN_KEY: plugin}])}
    return Job(uuid=JOB_UUID, command="make", env=env, agent_tags={"queue": "kubernetes"}, priority=3)


# The controller's keys, spelled out apart from podspec.metadata so the property does not trust the code
# under test (the service reads the first four back from the live pod).
CONTROLLER_KEYS = frozenset(
    {
        "buildkite.com/job-uuid",
        "buildkite.com/controller-id",
        "buildkite.com/failure-reported",
        "buildkite.com/failure-notified",
        "buildkite.com/pod-template-name",
        "buildkite.com/build-url",
        "buildkite.com/build-branch",
        "buildkite.com/build-repo",
        "buildkite.com/pipeline-slug",
        "buildkite.com/step-key",
        "buildkite.com/job-url",
        "buildkite.com/job-priority",
    }
)
CONTROLLER_PREFIXES = ("tag.buildkite.com/", "buildkite.com/sidecar-")


def _reserved(pod: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    meta = pod["metadata"]
    return (
        {
            k: v
            for k, v in meta["labels"].items()
            if k in CONTROLLER_KEYS or k.startswith(CONTROLLER_PREFIXES)
        },
        {
            k: v
            for k, v in meta["annotations"].items()
            if k in CONTROLLER_KEYS or k.startswith(CONTROLLER_PREFIXES)
        },
    )


# What the controller sets, per controller id: the pod of a job whose plugin says nothing.
EXPECTED = {
    cid: _reserved(build(_job({}), config=PodConfig.model_validate({"id": cid})).manifest)
    for cid in CONTROLLER_IDS
}


def _check(plugin: Any, config: PodConfig) -> None:
    try:
        pod = build(_job(plugin), config=config).manifest
    except BuildError as exc:
        assert exc.field and exc.message  # the job is failed with this; it must say where and what
        return
    assert _reserved(pod) == EXPECTED[config.id]


def test_podspec_reserves_every_controller_key() -> None:
    assert all(is_reserved(key) for key in CONTROLLER_KEYS)
    assert all(is_reserved(prefix + "x") for prefix in CONTROLLER_PREFIXES)
    assert CONTROLLER_KEYS == RESERVED_KEYS


def test_the_baseline_has_the_keys_the_service_reads() -> None:
    labels, _ = EXPECTED["ci-controller"]
    assert labels["buildkite.com/job-uuid"] == JOB_UUID
    assert labels["buildkite.com/controller-id"] == "ci-controller"
    assert "buildkite.com/controller-id" not in EXPECTED[""][0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plugin=PLUGINS, controller_id=st.sampled_from(CONTROLLER_IDS))
def test_plugin_input_never_changes_the_controllers_metadata(
    plugin: dict[str, Any], controller_id: str
) -> None:
    _check(plugin, PodConfig.model_validate({"id": controller_id}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    default_metadata=METADATA,
    pod_spec_patch=SPECS,
    plugin=PLUGINS,
    controller_id=st.sampled_from(CONTROLLER_IDS),
)
def test_controller_defaults_never_change_the_controllers_metadata(
    default_metadata: Any, pod_spec_patch: dict[str, Any], plugin: dict[str, Any], controller_id: str
) -> None:
    raw = {"id": controller_id, "default-metadata": default_metadata, "pod-spec-patch": pod_spec_patch}
    try:
        config = PodConfig.model_validate(raw)
    except ValidationError as exc:
        # The controller refuses to start, naming the key.
        assert "default-metadata" in str(exc) or "pod-spec-patch" in str(exc)
        return
    _check(plugin, config)
