"""Which jobs are ours: the controller's tags and the reference's matching rule.

A job is ours when every one of its agent tags names a controller tag and has the same value, or the
value ``*`` (any value, but the controller must have the tag); the ``resource_class`` tag selects a
resource class and never filters (agent-stack-k8s ``agenttags.MatchJobTags``).
Unlike the reference, one controller may serve several queues: the ``queue`` key then has several
allowed values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podspec.job import parse_agent_query_rules

IGNORED_TAG = "resource_class"


@dataclass(frozen=True, slots=True)
class ControllerTags:
    """Allowed values per tag key. ``queues`` empty means the cluster's default queue (no queue rule)."""

    allowed: Mapping[str, frozenset[str]]
    queues: tuple[str, ...]

    @classmethod
    def from_settings(cls, *, queues: Iterable[str], tags: Iterable[str]) -> ControllerTags:
        allowed: dict[str, set[str]] = {}
        for tag in tags:
            key, _, value = tag.partition("=")
            allowed.setdefault(key.strip(), set()).add(value.strip())
        queue_list = tuple(dict.fromkeys(q for q in queues if q)) or tuple(sorted(allowed.get("queue", ())))
        if queue_list:
            allowed["queue"] = set(queue_list)
        return cls({key: frozenset(values) for key, values in allowed.items()}, queue_list)

    def matches(self, job_tags: Mapping[str, str]) -> bool:
        if "queue" not in job_tags and self.queues:
            return False  # a job without a queue rule is for the default queue, which we do not serve
        for key, value in job_tags.items():
            if key == IGNORED_TAG:
                continue
            allowed = self.allowed.get(key)
            # `*` matches any value, but only of a tag we have: `gpu=*` asks for an agent with a gpu tag.
            if allowed is None or (value != "*" and value not in allowed):
                return False
        return True

    def matches_rules(self, agent_query_rules: Iterable[str]) -> bool:
        return self.matches(parse_agent_query_rules(tuple(agent_query_rules)))

    def sweep_rules(self) -> list[list[str]]:
        """One GraphQL ``agentQueryRules`` filter per queue (an empty filter for the default queue)."""
        return [[f"queue={queue}"] for queue in self.queues] or [[]]
