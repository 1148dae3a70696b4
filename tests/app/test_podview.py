"""PodView is read straight from raw pod JSON and survives odd or hostile input."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.podview import (
    FAILURE_NOTIFIED_ANNOTATION,
    FAILURE_REPORTED_ANNOTATION,
    ContainerView,
    PodCondition,
    PodView,
    Terminated,
    parse_time,
)
from tests.app.pods import JOB_UUID, POD_NAME, T0, Ctr, condition, pod, running, terminated, waiting


def test_identity_and_times_are_read_from_metadata_and_status() -> None:
    view = PodView.from_raw(pod(phase="Running", deletion=T0 + 100))
    assert (view.name, view.namespace, view.uid) == (
        POD_NAME,
        "buildkite",
        "3f1c2d4e-0000-4000-8000-000000000001",
    )
    assert (view.resource_version, view.job_uuid, view.phase, view.node_name) == (
        "4242",
        JOB_UUID,
        "Running",
        "node-a",
    )
    assert (view.created_at, view.started_at, view.deletion_timestamp) == (T0, T0 + 2, T0 + 100)
    assert view.deleted is False


def test_deleted_flag_comes_from_the_caller() -> None:
    assert PodView.from_raw(pod(), deleted=True).deleted is True


def test_containers_join_spec_and_status_by_name_in_spec_order() -> None:
    raw = pod(
        init=[
            Ctr("copy-agent", "agent:1", terminated(0, reason="Completed")),
            Ctr("proxy", "envoy:1", running(), True),
        ],
        main=[
            Ctr("container-0", "alpine:3", waiting("ErrImagePull", "not found")),
            Ctr("agent", "agent:1", running()),
        ],
    )
    view = PodView.from_raw(raw)
    assert [c.name for c in view.init_containers] == ["copy-agent", "proxy"]
    assert [c.name for c in view.containers] == ["container-0", "agent"]
    assert view.init_containers[1] == ContainerView(
        name="proxy", image="envoy:1", is_init=True, is_native_sidecar=True, is_running=True
    )
    assert view.containers[0].waiting_reason == "ErrImagePull"
    assert view.containers[0].waiting_message == "not found"
    assert view.container("agent") is view.containers[1]
    assert view.container("missing") is None
    assert len(view.all_containers) == 4


def test_terminated_state_keeps_exit_code_signal_reason_message_and_finish_time() -> None:
    raw = pod(
        main=[
            Ctr("agent", "agent:1", terminated(137, reason="OOMKilled", signal=9, message="oom", at=T0 + 70))
        ]
    )
    assert PodView.from_raw(raw).containers[0].terminated == Terminated(
        exit_code=137, reason="OOMKilled", signal=9, message="oom", finished_at=T0 + 70
    )


def test_a_regular_container_with_restart_policy_always_is_not_a_native_sidecar() -> None:
    raw = pod(main=[Ctr("agent", sidecar=True)])
    assert PodView.from_raw(raw).containers[0].is_native_sidecar is False


def test_conditions_and_status_reason_are_read() -> None:
    raw = pod(
        conditions=[
            condition("PodScheduled", "False", "Unschedulable", "0/3 nodes are available", at=T0 + 1)
        ],
        reason="Evicted",
        message="The node was low on resource: memory.",
    )
    view = PodView.from_raw(raw)
    assert view.conditions == (
        PodCondition("PodScheduled", "False", "Unschedulable", "0/3 nodes are available", T0 + 1),
    )
    assert (view.reason, view.message) == ("Evicted", "The node was low on resource: memory.")


def test_failure_markers_are_read_from_annotations() -> None:
    raw = pod(
        annotations={FAILURE_REPORTED_ANNOTATION: "image_pull", FAILURE_NOTIFIED_ANNOTATION: "pod_lost"}
    )
    view = PodView.from_raw(raw)
    assert (view.failure_reported, view.failure_notified) == ("image_pull", "pod_lost")
    assert PodView.from_raw(pod()).failure_reported is None


def test_status_only_containers_are_kept_when_the_spec_was_stripped() -> None:
    raw = pod(main=[Ctr("agent", "agent:1", running())])
    del raw["spec"]
    view = PodView.from_raw(raw)
    assert [(c.name, c.image, c.is_running) for c in view.all_containers] == [
        ("copy-agent", "ghcr.io/buildkite/agent:3.100.0", False),
        ("agent", "agent:1", True),
    ]


def test_a_pod_without_the_job_label_has_no_job_uuid() -> None:
    assert PodView.from_raw(pod(labels={"app": "other"})).job_uuid is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-01T00:00:00.250000Z", T0 + 0.25),
        ("2026-01-01T01:00:00+01:00", T0),
        ("2026-01-01T00:00:00", None),  # naive: Kubernetes never sends these; refuse to guess a zone
        ("yesterday", None),
        ("", None),
        (17, None),
        (None, None),
    ],
    ids=["utc", "fractional", "offset", "naive", "garbage", "empty", "number", "null"],
)
def test_parse_time_reads_rfc3339_and_refuses_anything_else(value: object, expected: float | None) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "raw",
    [{}, {"metadata": {}}, {"metadata": {"name": ""}}, {"metadata": {"name": 7}}, {"metadata": ["name"]}],
    ids=["empty", "no-name", "empty-name", "numeric-name", "metadata-is-a-list"],
)
def test_a_pod_without_a_name_is_refused_with_value_error(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        PodView.from_raw(raw)


def test_a_non_object_is_refused_with_value_error() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        PodView.from_raw(["not", "a", "pod"])  # type: ignore[arg-type]


def test_wrongly_typed_fields_read_as_absent() -> None:
    raw: dict[str, Any] = {
        "metadata": {"name": "p", "labels": ["x"], "annotations": "nope", "creationTimestamp": 5},
        "spec": {
            "containers": [{"name": 3}, "junk", {"name": "agent", "image": ["x"]}],
            "initContainers": {},
        },
        "status": {
            "phase": 1,
            "conditions": [{"status": "True"}, 4, {"type": "Ready", "status": None}],
            "containerStatuses": [
                {"name": "agent", "state": {"terminated": {"exitCode": True, "signal": "9"}}}
            ],
            "initContainerStatuses": "none",
        },
    }
    view = PodView.from_raw(raw)
    assert (view.job_uuid, view.phase, view.created_at, view.failure_reported) == (None, "", None, None)
    assert view.conditions == (PodCondition("Ready"),)
    assert view.containers == (ContainerView(name="agent", terminated=Terminated()),)
    assert view.init_containers == ()


def test_duplicate_container_names_keep_the_first() -> None:
    raw = pod(main=[Ctr("agent", "a:1", running()), Ctr("agent", "a:2")])
    assert [(c.name, c.image) for c in PodView.from_raw(raw).containers] == [("agent", "a:1")]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_PATHS = [
    ("metadata",),
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("metadata", "creationTimestamp"),
    ("spec",),
    ("spec", "containers"),
    ("spec", "initContainers"),
    ("status",),
    ("status", "conditions"),
    ("status", "containerStatuses"),
    ("status", "initContainerStatuses"),
    ("status", "startTime"),
]


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(_PATHS), value=_json)
def test_any_field_replaced_by_random_json_never_crashes(path: tuple[str, ...], value: object) -> None:
    raw = copy.deepcopy(pod(phase="Running", main=[Ctr("agent", state=terminated(1, reason="Error"))]))
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        view = PodView.from_raw(raw)
    except ValueError:
        assert path == ("metadata",)  # only losing metadata.name may refuse the pod
        return
    assert view.name == POD_NAME


@settings(max_examples=200, deadline=None)
@given(raw=st.dictionaries(st.sampled_from(["metadata", "spec", "status", "kind"]), _json, max_size=4))
def test_random_documents_either_parse_or_raise_value_error(raw: dict[str, Any]) -> None:
    try:
        view = PodView.from_raw(raw)
    except ValueError:
        return
    assert isinstance(view.name, str) and view.name


def test_values_that_repeat_across_pods_are_one_object_for_all_pods() -> None:
    """10,000 tracked pods hold one copy of each namespace, image and container name, not 10,000: each
    view is built from its own freshly parsed watch event, so equal strings are distinct objects."""
    containers = {
        "init": [Ctr("copy-agent", "agent:1", running())],
        "main": [Ctr("agent", "agent:1", running())],
    }
    raws = [orjson.loads(orjson.dumps(pod(phase="Running", **containers))) for _ in range(2)]  # type: ignore[arg-type]
    assert raws[0]["metadata"]["namespace"] is not raws[1]["metadata"]["namespace"]
    first, second = (PodView.from_raw(raw) for raw in raws)
    assert first.namespace is second.namespace
    assert first.phase is second.phase
    assert first.node_name is second.node_name
    for one, other in zip(first.all_containers, second.all_containers, strict=True):
        assert one.name is other.name
        assert one.image is other.image
    assert first.uid == second.uid  # unique per pod in a cluster: compared, never shared on purpose
