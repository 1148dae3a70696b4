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
        pytest.param(["queue=build", "gpu=*"], True, id="wildcard"),
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
