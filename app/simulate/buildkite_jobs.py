"""The fake Buildkite's job record, its state vocabulary, and helpers to build a job from a step.

A `FakeJob` holds what Buildkite knows about one command job (reference/buildkite-api.md §7): the
internal lower-case state, agent query rules, priority, the environment (with `BUILDKITE_PLUGINS` as a
JSON string, exactly as the agent API and GraphQL serve it), the log, and the job events. The APIs of
the fake render it in their own vocabularies (GraphQL upper-case, REST passed/failed).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

# Internal lifecycle names (reference §5.4). The agent API speaks these.
STATES = frozenset(
    {
        "pending",
        "waiting",
        "waiting_failed",
        "blocked",
        "blocked_failed",
        "unblocked",
        "unblocked_failed",
        "limiting",
        "limited",
        "platform_limiting",
        "platform_limited",
        "scheduled",
        "reserved",
        "assigned",
        "accepted",
        "running",
        "finished",
        "canceling",
        "canceled",
        "timing_out",
        "timed_out",
        "skipped",
        "broken",
        "expired",
    }
)
TERMINAL_STATES = frozenset({"finished", "canceled", "timed_out", "skipped", "broken", "expired"})

# The key Buildkite expands `kubernetes` to inside BUILDKITE_PLUGINS (reference §6).
PLUGIN_HOST = "github.com/buildkite-plugins"
DEFAULT_QUEUE = "kubernetes"


@dataclass(frozen=True)
class FakeOrganization:
    """The one organisation the fake serves."""

    slug: str = "acme"
    uuid: str = "0bd5ea7c-89b3-4f40-8ca3-ffac805771eb"
    name: str = "Acme Inc"
    cluster_uuid: str = "7b4f3c2a-1d5e-4f6a-9b8c-0d1e2f3a4b5c"


@dataclass
class JobEvent:
    """One entry of a job's timeline, as GraphQL `JobTypeCommand.events` lists it."""

    uuid: str
    type: str  # a GraphQL JobEventType name, e.g. "STACK_ERRORED"
    timestamp: float
    detail: str | None = None
    actor: str = "SYSTEM"


@dataclass
class FakeJob:
    """Everything the fake knows about one command job. Mutated only under the store's lock."""

    uuid: str
    seq: int  # creation order; GraphQL cursors and RECENTLY_CREATED order use it
    state: str
    command: str
    agent_query_rules: list[str]
    priority: int
    env: dict[str, str]
    created_at: float
    scheduled_at: float | None
    label: str | None = None
    step_key: str | None = None
    step_uuid: str = ""
    pipeline_slug: str = "pipeline"
    pipeline_uuid: str = ""
    build_uuid: str = ""
    build_number: int = 1
    branch: str = "main"
    commit: str = "HEAD"
    cluster_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    canceled_at: float | None = None
    exit_status: str | None = None
    signal: str | None = None
    signal_reason: str | None = None
    agent_id: str | None = None
    job_token: str | None = None
    reserved_by: str | None = None
    reserved_until: float | None = None
    log: bytearray = field(default_factory=bytearray)
    events: list[JobEvent] = field(default_factory=list)

    @property
    def queue(self) -> str | None:
        """The `queue=` rule's value; None means the cluster's default queue."""
        for rule in self.agent_query_rules:
            key, _, value = rule.partition("=")
            if key == "queue":
                return value
        return None

    @property
    def passed(self) -> bool:
        return self.state == "finished" and self.exit_status == "0"


def graphql_id(type_name: str, uuid: str) -> str:
    """Buildkite node ids are base64("<Type>---<uuid>") (reference §2)."""
    return base64.b64encode(f"{type_name}---{uuid}".encode()).decode()


def uuid_from_graphql_id(node_id: str, type_name: str) -> str | None:
    """Decode a node id of the given type; None when it is not one."""
    try:
        decoded = base64.b64decode(node_id, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    prefix = f"{type_name}---"
    return decoded[len(prefix) :] if decoded.startswith(prefix) else None


def expand_plugin_source(name: str) -> str:
    """Expand a pipeline plugin reference the way Buildkite does before it reaches BUILDKITE_PLUGINS.

    `kubernetes` → `github.com/buildkite-plugins/kubernetes-buildkite-plugin`; `docker#v5` keeps its
    version suffix; anything with a slash is taken as already expanded.
    """
    if "/" in name:
        return name
    base, sep, version = name.partition("#")
    return f"{PLUGIN_HOST}/{base}-buildkite-plugin{sep}{version}"


def plugins_json(plugins: list[dict[str, Any] | str]) -> str:
    """Render a step's `plugins:` list as the BUILDKITE_PLUGINS JSON string."""
    expanded: list[dict[str, Any]] = []
    for plugin in plugins:
        if isinstance(plugin, str):
            expanded.append({expand_plugin_source(plugin): None})
            continue
        if len(plugin) != 1:
            raise ValueError(f"a plugin entry must have exactly one key (got {sorted(plugin)})")
        ((name, config),) = plugin.items()
        expanded.append({expand_plugin_source(name): config})
    return json.dumps(expanded, separators=(",", ":"))


def agent_query_rules(agents: dict[str, str] | None) -> list[str]:
    """A step's `agents:` map as query rules; None targets the `kubernetes` queue."""
    if agents is None:
        agents = {"queue": DEFAULT_QUEUE}
    return [f"{key}={value}" for key, value in agents.items()]


def step_env(
    *,
    uuid: str,
    command: str,
    plugins: list[dict[str, Any] | str] | None = None,
    image: str | None = None,
    step_key: str | None = None,
    pipeline_slug: str = "pipeline",
    build_number: int = 1,
    branch: str = "main",
    org_slug: str = "acme",
) -> dict[str, str]:
    """The job environment Buildkite derives from a command step (the subset a controller reads)."""
    build_url = f"https://buildkite.com/{org_slug}/{pipeline_slug}/builds/{build_number}"
    env = {
        "BUILDKITE": "true",
        "BUILDKITE_JOB_ID": uuid,
        "BUILDKITE_COMMAND": command,
        "BUILDKITE_BUILD_NUMBER": str(build_number),
        "BUILDKITE_BUILD_URL": build_url,
        "BUILDKITE_BRANCH": branch,
        "BUILDKITE_REPO": f"https://github.com/{org_slug}/{pipeline_slug}.git",
        "BUILDKITE_PIPELINE_SLUG": pipeline_slug,
        "BUILDKITE_ORGANIZATION_SLUG": org_slug,
    }
    if step_key is not None:
        env["BUILDKITE_STEP_KEY"] = step_key
    if plugins:
        env["BUILDKITE_PLUGINS"] = plugins_json(plugins)
    if image is not None:
        env["BUILDKITE_IMAGE"] = image
    return env
