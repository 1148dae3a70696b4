"""The job as the pod builder sees it: what Buildkite told us, nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Buildkite expands `kubernetes:` in a step to this plugin source key in BUILDKITE_PLUGINS.
KUBERNETES_PLUGIN_KEY = "github.com/buildkite-plugins/kubernetes-buildkite-plugin"


@dataclass(frozen=True, slots=True)
class Job:
    """A confirmed Buildkite command job.

    ``env`` is the job environment as Buildkite sends it: ``BUILDKITE_PLUGINS`` is a JSON *string*,
    ``BUILDKITE_IMAGE`` carries the step's ``image:``. ``agent_tags`` come from the job's agent query
    rules (``queue=kubernetes`` → ``{"queue": "kubernetes"}``).
    """

    uuid: str
    command: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    agent_tags: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0


def parse_agent_query_rules(rules: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["queue=kubernetes", "os=linux"]`` → ``{"queue": "kubernetes", "os": "linux"}``.

    A rule without ``=`` is kept with an empty value, so it still has to match a controller tag.
    """
    tags: dict[str, str] = {}
    for rule in rules:
        key, _, value = rule.partition("=")
        tags[key.strip()] = value.strip()
    return tags
