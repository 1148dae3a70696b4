"""GraphQL documents the controller sends, and parsing of their responses (pure, no I/O).

Each ``build_*`` function returns a ``Document`` (operation name, query text, variables) that
``GraphQLClient`` posts as-is; each ``parse_*`` function takes the response's ``data`` object and
returns plain values. Every query validates against Buildkite's schema
(reference/buildkite-schema.graphql; checked in tests/app/test_graphql.py).

Batching (the org's GraphQL budget is ~20k points per 5 min, reference/buildkite-api.md §2.1): one
request confirms up to ``MAX_BATCH`` jobs by aliasing ``job(uuid:)`` as ``j0 … j99``. A ``job`` field
costs about 1 point, so a full batch costs ~100 points where 100 requests would cost the same points
plus 100 round trips. The cap keeps a query's text, cost and failure blast radius small.

Cluster scoping (``cluster-uuid``): the sweep asks Buildkite to list only our cluster's jobs
(``Organization.jobs(cluster:)``, which takes the cluster's GraphQL id), and both documents then also
fetch each job's ``cluster { uuid }`` so ``cluster_mismatch`` can drop a job of another cluster that
reaches us anyway (a webhook, a relay). The field costs a point per job, so it is asked for only when a
cluster is configured.
"""

from __future__ import annotations

import base64
import uuid as uuid_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from app.buildkite.uuids import canonical
from app.errors import BuildkiteError

MAX_BATCH = 100
M = TypeVar("M", bound=BaseModel)

# The fields a confirmed job needs; env carries BUILDKITE_PLUGINS, so no second fetch is needed.
_COMMAND_JOB_FRAGMENT = """
fragment CommandJobFields on JobTypeCommand {
  uuid
  state
  agentQueryRules
  env
  command
  priority { number }
}"""
_CLUSTER_SELECTION = "  cluster { uuid }\n}"


def _command_job_fragment(*, with_cluster: bool) -> str:
    return (
        _COMMAND_JOB_FRAGMENT.removesuffix("}") + _CLUSTER_SELECTION
        if with_cluster
        else _COMMAND_JOB_FRAGMENT
    )


_JOB_STATE_FRAGMENT = """
fragment CommandJobState on JobTypeCommand {
  uuid
  state
}"""


@dataclass(frozen=True)
class Document:
    """One GraphQL request body: ``{"operationName", "query", "variables"}``."""

    operation_name: str
    query: str
    variables: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"operationName": self.operation_name, "query": self.query, "variables": dict(self.variables)}


@dataclass(frozen=True)
class JobRecord:
    """A command job as Buildkite's GraphQL API reports it; ``state`` is lower-case (``scheduled``).

    ``has_cluster`` says whether the query asked for the cluster; then ``cluster_uuid`` is the job's
    cluster (lower-case), or None for a job outside any cluster.
    """

    uuid: str
    state: str
    agent_query_rules: tuple[str, ...]
    env: Mapping[str, str]
    command: str
    priority: int
    cluster_uuid: str | None = None
    has_cluster: bool = False


@dataclass(frozen=True)
class Page:
    """One page of scheduled jobs, oldest first, and the cursor of the next (older→newer) page."""

    jobs: tuple[JobRecord, ...]
    next_cursor: str | None


def canonical_uuids(uuids: Sequence[str]) -> list[str]:
    """Lower-case, de-duplicated job UUIDs in first-seen order; ``ValueError`` for a non-UUID."""
    return list(dict.fromkeys(canonical(value) for value in uuids))


def build_confirm_jobs(uuids: Sequence[str], *, with_cluster: bool = False) -> Document:
    """``j<i>: job(uuid: $u<i>)`` for each UUID, with the fields ``JobRecord`` needs (and the job's
    cluster when ``with_cluster``: pass it whenever a cluster is configured, for ``cluster_mismatch``)."""
    fragment_text = _command_job_fragment(with_cluster=with_cluster)
    return _aliased_jobs("ConfirmJobs", uuids, fragment="CommandJobFields", fragment_text=fragment_text)


def build_job_states(uuids: Sequence[str]) -> Document:
    """The same alias batching, asking only for the state (cancellation checks)."""
    return _aliased_jobs("JobStates", uuids, fragment="CommandJobState", fragment_text=_JOB_STATE_FRAGMENT)


def build_scheduled_jobs(
    *,
    org: str,
    agent_query_rules: Sequence[str],
    page_size: int,
    cursor: str | None,
    cluster_uuid: str | None = None,
) -> Document:
    """One page of the org's scheduled command jobs matching every rule (and in ``cluster_uuid``'s
    cluster, when given).

    ``JobOrder`` only offers newest-first (``RECENTLY_CREATED``), so we page *backwards* with
    ``last``/``before``: the first page is the oldest jobs, and each later page is newer. That puts
    the longest-waiting jobs first and lets a page limit drop the newest ones, not the oldest.
    """
    variables: dict[str, Any] = {
        "org": org,
        "rules": list(agent_query_rules),
        "last": page_size,
        "before": cursor,
    }
    cluster_param = cluster_arg = ""
    if cluster_uuid is not None:
        # Without `cluster:` the argument is left out, not sent as null: today's query, unchanged.
        cluster_param, cluster_arg = ", $cluster: ID!", ", cluster: $cluster"
        variables["cluster"] = cluster_graphql_id(cluster_uuid)
    query = f"""
query ScheduledJobs($org: ID!, $rules: [String!], $last: Int!, $before: String{cluster_param}) {{
  organization(slug: $org) {{
    jobs(state: [SCHEDULED], type: [COMMAND], order: RECENTLY_CREATED,
         agentQueryRules: $rules, last: $last, before: $before{cluster_arg}) {{
      edges {{ node {{ ...CommandJobFields }} }}
      pageInfo {{ hasPreviousPage startCursor }}
    }}
  }}
}}""" + _command_job_fragment(with_cluster=cluster_uuid is not None)
    return Document("ScheduledJobs", query.strip(), variables)


def cluster_graphql_id(cluster_uuid: str) -> str:
    """The GraphQL node id of a cluster, base64 ``Cluster---<uuid>``: what ``jobs(cluster:)`` takes."""
    return base64.b64encode(f"Cluster---{uuid_module.UUID(cluster_uuid)}".encode()).decode()


def cluster_mismatch(record: JobRecord, cluster_uuid: str | None) -> str | None:
    """Why ``record`` is not a job of the cluster this controller serves, or None when it is ours.

    With no ``cluster_uuid`` configured every job passes (the behaviour before cluster scoping). With
    one, a job passes only if its query asked for the cluster (``with_cluster=True``) and the cluster
    is ours: a record that cannot tell is dropped rather than given a pod that may never be acquired.
    """
    if cluster_uuid is None:
        return None
    if not record.has_cluster:
        return "its cluster was not fetched (the confirm query must ask for it)"
    if record.cluster_uuid is None:
        return f"it is in no cluster; this controller serves cluster {cluster_uuid}"
    if record.cluster_uuid != cluster_uuid.lower():
        return f"it is in cluster {record.cluster_uuid}; this controller serves cluster {cluster_uuid}"
    return None


def parse_confirm_jobs(data: object, uuids: Sequence[str]) -> dict[str, JobRecord | None]:
    """Map each requested UUID to its record; None for unknown jobs and non-command jobs."""
    nodes = _aliased_nodes(data, uuids)
    return {uuid: _record(node, uuid) if node else None for uuid, node in nodes.items()}


def parse_job_states(data: object, uuids: Sequence[str]) -> dict[str, str]:
    """Map each known command job's UUID to its lower-case state; unknown UUIDs are left out."""
    states: dict[str, str] = {}
    for uuid, node in _aliased_nodes(data, uuids).items():
        if node:
            states[uuid] = _validate(_StateNode, node, f"job {uuid}").state.lower()
    return states


def parse_scheduled_jobs(data: object) -> Page:
    """One page of ``organization.jobs``, reversed into oldest-first order."""
    response = _validate(_ScheduledResponse, data, "scheduled jobs")
    if response.organization is None:
        raise BuildkiteError(
            "scheduled jobs: organization not found (check the org slug and the token's access)"
        )
    connection = response.organization.jobs
    if connection is None:
        return Page(jobs=(), next_cursor=None)
    jobs = [_record(edge.node, None) for edge in reversed(connection.edges or []) if edge and edge.node]
    info = connection.page_info
    more = info is not None and info.has_previous_page and bool(info.start_cursor)
    return Page(jobs=tuple(jobs), next_cursor=info.start_cursor if more and info else None)


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``["K=V", …]`` → ``{"K": "V"}``, splitting on the first ``=`` (values may contain ``=``)."""
    env: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _aliased_jobs(operation: str, uuids: Sequence[str], *, fragment: str, fragment_text: str) -> Document:
    if not uuids:
        raise ValueError("at least one job UUID is needed")
    if len(uuids) > MAX_BATCH:
        raise ValueError(f"{len(uuids)} job UUIDs in one request; the limit is {MAX_BATCH}")
    params = ", ".join(f"$u{i}: ID!" for i in range(len(uuids)))
    fields = "\n".join(f"  j{i}: job(uuid: $u{i}) {{ ...{fragment} }}" for i in range(len(uuids)))
    query = f"query {operation}({params}) {{\n{fields}\n}}\n{fragment_text.strip()}"
    return Document(operation, query, {f"u{i}": uuid for i, uuid in enumerate(uuids)})


def _aliased_nodes(data: object, uuids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    if not isinstance(data, dict):
        raise BuildkiteError("GraphQL response has no data object")
    nodes: dict[str, dict[str, Any] | None] = {}
    for i, uuid in enumerate(uuids):
        alias = f"j{i}"
        if alias not in data:
            raise BuildkiteError(f"GraphQL response lacks {alias} (job {uuid})")
        node = data[alias]
        if node is not None and not isinstance(node, dict):
            raise BuildkiteError(f"GraphQL response {alias} (job {uuid}) is not an object")
        nodes[uuid] = node
    return nodes


def _record(node: object, expected_uuid: str | None) -> JobRecord:
    what = f"job {expected_uuid}" if expected_uuid else "scheduled job"
    job = _validate(_CommandJob, node, what)
    if expected_uuid is not None and job.uuid.lower() != expected_uuid:
        raise BuildkiteError(f"GraphQL answered for job {job.uuid[:64]} when asked for {expected_uuid}")
    return JobRecord(
        uuid=job.uuid.lower(),
        state=job.state.lower(),
        agent_query_rules=tuple(job.agent_query_rules or ()),
        env=parse_env(job.env or ()),
        command=job.command or "",
        priority=(job.priority.number if job.priority else None) or 0,
        cluster_uuid=job.cluster.uuid.lower() if job.cluster else None,
        has_cluster=isinstance(node, dict) and "cluster" in node,
    )


def _validate(model: type[M], value: object, what: str) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top)"
        raise BuildkiteError(f"malformed GraphQL response for {what}: {where}: {error['msg']}") from None


class _Model(BaseModel):
    # Tolerant of fields we did not ask for; strict about the types of those we did.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True)


class _Priority(_Model):
    number: int | None = None


class _StateNode(_Model):
    uuid: str
    state: str


class _Cluster(_Model):
    uuid: str = Field(max_length=64)


class _CommandJob(_StateNode):
    agent_query_rules: list[str] | None = None
    env: list[str] | None = None
    command: str | None = None
    priority: _Priority | None = None
    cluster: _Cluster | None = None


class _Edge(_Model):
    node: dict[str, Any] | None = None


class _PageInfo(_Model):
    has_previous_page: bool = False
    start_cursor: str | None = None


class _JobConnection(_Model):
    edges: list[_Edge | None] | None = None
    page_info: _PageInfo | None = None


class _Organization(_Model):
    jobs: _JobConnection | None = None


class _ScheduledResponse(_Model):
    organization: _Organization | None = None
