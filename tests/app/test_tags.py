"""Tag matching, as agent-stack-k8s does it, extended to several queues."""

from __future__ import annotations

import pytest

from app.tags import ControllerTags

TAGS = ControllerTags.from_settings(queues=["build", "deploy"], tags=["os=linux"])


@pytest.mark.parametrize(
    ("rules", "ours"),
    [
        pytest.param(["queue=build"], True, id="first-queue"),
        pytest.param(["queue=deploy", "os=linux"], True, id="second-queue-and-tag"),
        pytest.param(["queue=other"], False, id="other-queue"),
        pytest.param(["queue=build", "os=windows"], False, id="tag-mismatch"),
        pytest.param(["queue=build", "gpu=true"], False, id="tag-we-lack"),
        pytest.param(["queue=build", "gpu=*"], False, id="wildcard-for-a-tag-we-lack"),
        pytest.param(["queue=build", "os=*"], True, id="wildcard-for-a-tag-we-have"),
        pytest.param(["queue=*"], True, id="wildcard-queue"),
        pytest.param(["queue=build", "resource_class=large"], True, id="resource-class-ignored"),
        pytest.param([], False, id="default-queue-not-served"),
        pytest.param(["queue"], False, id="rule-without-value"),
    ],
)
def test_matching(rules: list[str], ours: bool) -> None:
    assert TAGS.matches_rules(rules) is ours


def test_queue_from_tags_when_no_queue_flag() -> None:
    tags = ControllerTags.from_settings(queues=[], tags=["queue=kubernetes"])
    assert tags.queues == ("kubernetes",)
    assert tags.sweep_rules() == [["queue=kubernetes"]]


def test_no_queue_serves_the_default_queue() -> None:
    tags = ControllerTags.from_settings(queues=[], tags=[])
    assert tags.matches_rules([]) is True
    assert tags.matches_rules(["queue=x"]) is False
    assert tags.sweep_rules() == [[]]


# agent-stack-k8s' own table for MatchJobTags (internal/controller/agenttags), as (job, controller, match).
# The controller serves the default queue here (no queue flag), so only the tags decide.
@pytest.mark.parametrize(
    ("job", "controller", "ours"),
    [
        pytest.param({}, {}, True, id="nothing-asked"),
        pytest.param({"a": "x"}, {}, False, id="asked-tag-missing"),
        pytest.param({}, {"a": "x"}, True, id="controller-has-extra"),
        pytest.param({"a": "x"}, {"a": "x"}, True, id="same"),
        pytest.param({"a": "x"}, {"b": "y"}, False, id="other-key"),
        pytest.param({"a": "x"}, {"a": "x", "b": "y"}, True, id="superset"),
        pytest.param({"a": "x", "b": "y"}, {"a": "x"}, False, id="subset"),
        pytest.param({"a": "x"}, {"a": "y"}, False, id="other-value"),
        pytest.param({"a": "*"}, {"a": "x"}, True, id="wildcard"),
        pytest.param({"a": "x", "b": "*"}, {"a": "x"}, False, id="wildcard-needs-the-key"),
        pytest.param({"a": "x", "b": "*"}, {"a": "x", "b": "y"}, True, id="wildcard-with-the-key"),
        pytest.param(
            {"tag1": "x", "tag2": "*"}, {"tag1": "x", "tag2": "y", "tags3": "z"}, True, id="wildcard-superset"
        ),
        pytest.param({"resource_class": "large"}, {}, True, id="resource-class-never-filters"),
    ],
)
def test_reference_match_table(job: dict[str, str], controller: dict[str, str], ours: bool) -> None:
    tags = ControllerTags.from_settings(queues=[], tags=[f"{k}={v}" for k, v in controller.items()])
    assert tags.matches(job) is ours
