"""Pure parts of the simulated kubelet: scripts from annotations, image references, placement, timelines."""

from __future__ import annotations

import re

import pytest

from app.simulate.kube_selectors import parse_field_selector, parse_label_selector
from app.simulate.kube_status import ApiError
from app.simulate.kubelet_plan import is_valid_image, plan_pod
from app.simulate.kubelet_scheduling import fits_node
from app.simulate.kubelet_script import (
    ContainerScript,
    ImageRule,
    ScriptError,
    parse_container_annotation,
    script_for,
)
from app.simulate.kubelet_status import Moment, render_status


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exit=2", ContainerScript(exit_code=2)),
        ("ticks=5, exit=1", ContainerScript(run_ticks=5, exit_code=1)),
        ("forever", ContainerScript(run_ticks=None)),
        ("oom", ContainerScript(oom_killed=True, exit_code=137)),
        ("pull-fail", ContainerScript(pull_fails=True)),
        ("", ContainerScript()),
    ],
)
def test_annotation_tokens_build_a_container_script(text, expected):
    assert parse_container_annotation(text, ContainerScript()) == expected


@pytest.mark.parametrize(
    "text", ["exit=x", "ticks=0", "exit=-1", "ticks=99999999", "explode", "exit=", "ticks"]
)
def test_malformed_annotation_tokens_are_refused(text):
    with pytest.raises(ScriptError):
        parse_container_annotation(text, ContainerScript())


def test_annotations_beat_image_rules_which_beat_defaults():
    pod = {
        "metadata": {
            "annotations": {
                "kubelet.simulate/container.b": "exit=4",
                "kubelet.simulate/evict-after-ticks": "6",
            }
        },
        "spec": {
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [{"name": "a", "image": "x/slow:1"}, {"name": "b", "image": "x/slow:1"}],
        },
    }
    script = script_for(pod, rules=[ImageRule("*/slow:*", ContainerScript(run_ticks=9))])
    assert script.containers == {
        "i": ContainerScript(run_ticks=1),
        "a": ContainerScript(run_ticks=9),
        "b": ContainerScript(run_ticks=9, exit_code=4),
    }
    assert script.evict_after_ticks == 6


def test_a_malformed_eviction_annotation_is_refused():
    with pytest.raises(ScriptError):
        script_for({"metadata": {"annotations": {"kubelet.simulate/evict-after-ticks": "soon"}}, "spec": {}})


@pytest.mark.parametrize(
    ("image", "valid"),
    [
        ("alpine", True),
        ("alpine:3.20", True),
        ("docker.io/library/alpine:3", True),
        ("localhost:5000/team/app:v1.2-rc", True),
        ("ghcr.io/org/app@sha256:" + "a" * 64, True),
        ("Alpine", False),
        ("alpine::3", False),
        ("alpine latest", False),
        ("", False),
        ("a" * 300, False),
    ],
)
def test_image_references_follow_the_docker_grammar(image, valid):
    assert is_valid_image(image) is valid


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        ({}, True),
        ({"nodeSelector": {"pool": "ci"}}, True),
        ({"nodeSelector": {"pool": "gpu"}}, False),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "pool", "operator": "NotIn", "values": ["ci"]}
                                    ]
                                },
                                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]},
                            ]
                        }
                    }
                }
            },
            True,
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}
                            ]
                        }
                    }
                }
            },
            False,
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["x"]}]}
                            ]
                        }
                    }
                }
            },
            False,
        ),
    ],
    ids=[
        "nothing",
        "selector-matches",
        "selector-misses",
        "second-term-matches",
        "exists-misses",
        "lt-not-a-number",
    ],
)
def test_placement_follows_node_selector_and_required_affinity(spec, fits):
    assert fits_node(spec, {"pool": "ci", "cores": "8"}) is fits


def test_init_containers_run_in_order_and_a_sidecar_only_has_to_start():
    pod = {
        "spec": {
            "initContainers": [
                {"name": "a", "image": "x"},
                {"name": "side", "image": "x", "restartPolicy": "Always"},
                {"name": "b", "image": "x"},
            ],
            "containers": [{"name": "main", "image": "x"}],
        }
    }
    plan = plan_pod(pod, script_for(pod))
    assert [(c.name, c.start, c.end) for c in plan.containers] == [
        ("a", 1, 2),
        ("side", 2, None),
        ("b", 3, 4),
        ("main", 4, 6),
    ]
    assert plan.main_start == 4


def test_a_blocked_init_container_keeps_the_rest_from_starting():
    pod = {
        "spec": {
            "initContainers": [{"name": "a", "image": "Bad Image"}],
            "containers": [{"name": "main", "image": "x"}],
        }
    }
    plan = plan_pod(pod, script_for(pod))
    assert plan.containers[0].blocker.reason == "InvalidImageName"
    assert plan.main_start is None and plan.containers[1].start is None


def test_condition_transition_times_only_move_when_the_status_flips():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x"}]}, "status": {}}
    plan = plan_pod(pod, script_for(pod))
    times = ["t0", "t1", "t2", "t3"]
    first = render_status(pod, plan, Moment(1, times), pod_ip="10.244.0.2", host_ip="10.0.0.1")
    pod["status"] = first
    second = render_status(pod, plan, Moment(2, times), pod_ip="10.244.0.2", host_ip="10.0.0.1")
    ready = {c["type"]: c for c in second["conditions"]}
    assert ready["Initialized"]["lastTransitionTime"] == "t1"  # unchanged since tick 1
    assert ready["Ready"]["lastTransitionTime"] == "t1"


@pytest.mark.parametrize("selector", ["a in (x", "(", "a notin ()", "bad key", "k=" + "v" * 70, ""])
def test_label_selector_parsing_accepts_only_the_apiserver_grammar(selector):
    if selector == "":
        assert parse_label_selector(selector) == ()
        return
    with pytest.raises(ApiError) as caught:
        parse_label_selector(selector)
    assert caught.value.code == 400


def test_field_selectors_are_limited_to_the_fields_each_resource_registers():
    assert parse_field_selector("involvedObject.uid=1", "events")
    with pytest.raises(ApiError, match=re.escape("field label not supported: involvedObject.uid")):
        parse_field_selector("involvedObject.uid=1", "pods")
    with pytest.raises(ApiError, match="invalid selector"):
        parse_field_selector("spec.nodeName in (a)", "pods")
