"""GraphQL resolvers of the fake Buildkite: jobs rendered as schema objects, and Relay pagination.

graphql-core executes queries against the real schema; these resolvers only supply values. Objects are
plain dicts keyed by schema field names (with `__typename` for unions and interfaces); connection
fields are callables taking the field's arguments, which graphql-core's default resolver calls.
Input comes from `JobStore` copies; nothing here changes a job except `jobTypeCommandCancel`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from graphql import GraphQLError, GraphQLResolveInfo

from app.simulate.buildkite_clock import iso8601
from app.simulate.buildkite_jobs import FakeJob, FakeOrganization, JobEvent, graphql_id, uuid_from_graphql_id
from app.simulate.buildkite_store import JobConflict, JobNotFound, JobStore

T = TypeVar("T")
# Buildkite documents a default page size of 500 when neither `first` nor `last` is given (§2).
DEFAULT_PAGE_SIZE = 500
SIGNAL_REASONS = frozenset(
    {
        "agent_incompatible",
        "agent_refused",
        "agent_stop",
        "cancel",
        "process_run_error",
        "signature_rejected",
        "stack_error",
    }
)
EVENT_TYPENAMES = {"STACK_ERRORED": "JobEventStackError", "STACK_NOTIFICATION": "JobEventStackNotification"}


def encode_cursor(seq: int) -> str:
    return base64.b64encode(f"fake-buildkite-cursor:{seq}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.b64decode(cursor, validate=True).decode()
        prefix, _, seq = text.partition(":")
        if prefix != "fake-buildkite-cursor":
            raise ValueError(prefix)
        return int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise GraphQLError(f"Invalid cursor {cursor!r}") from exc


def paginate(
    items: Sequence[T], *, seq: Callable[[T], int], node: Callable[[T], Any], descending: bool, **args: Any
) -> dict[str, Any]:
    """A Relay connection over `items` (already in display order), cursors keyed on a stable `seq`.

    Cursors name an item, not a position, so jobs appearing or leaving between pages do not shift them.
    """
    first, last = args.get("first"), args.get("last")
    for name, value in (("first", first), ("last", last)):
        if value is not None and value < 0:
            raise GraphQLError(f"Argument `{name}` must be a non-negative integer (got {value})")
    window = list(items)
    if args.get("after") is not None:
        mark = decode_cursor(args["after"])
        window = [i for i in window if (seq(i) < mark if descending else seq(i) > mark)]
    if args.get("before") is not None:
        mark = decode_cursor(args["before"])
        window = [i for i in window if (seq(i) > mark if descending else seq(i) < mark)]
    page = window[:first] if first is not None else window
    page = page[-last:] if last is not None and last > 0 else ([] if last == 0 else page)
    if first is None and last is None:
        page = page[:DEFAULT_PAGE_SIZE]
    positions = {seq(item): index for index, item in enumerate(items)}
    start = positions[seq(page[0])] if page else None
    end = positions[seq(page[-1])] if page else None
    return {
        "count": len(items),
        "edges": [{"cursor": encode_cursor(seq(item)), "node": node(item)} for item in page],
        "pageInfo": {
            "hasPreviousPage": start is not None and start > 0,
            "hasNextPage": end is not None and end < len(items) - 1,
            "startCursor": encode_cursor(seq(page[0])) if page else None,
            "endCursor": encode_cursor(seq(page[-1])) if page else None,
        },
    }


def organization_node(org: FakeOrganization, store: JobStore | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "__typename": "Organization",
        "id": graphql_id("Organization", org.uuid),
        "uuid": org.uuid,
        "slug": org.slug,
        "name": org.name,
    }
    if store is not None:
        node["jobs"] = lambda _info, **args: organization_jobs(store, org, **args)
    return node


def pipeline_node(job: FakeJob, org: FakeOrganization) -> dict[str, Any]:
    return {
        "__typename": "Pipeline",
        "id": graphql_id("Pipeline", job.pipeline_uuid),
        "uuid": job.pipeline_uuid,
        "slug": job.pipeline_slug,
        "name": job.pipeline_slug,
        "url": f"https://buildkite.com/{org.slug}/{job.pipeline_slug}",
        "organization": organization_node(org),
    }


def build_state(job: FakeJob) -> str:
    """The build's state as seen through its one job."""
    if job.state in {"running", "accepted", "assigned", "canceling"}:
        return "RUNNING" if job.state != "canceling" else "CANCELING"
    if job.state == "finished":
        return "PASSED" if job.passed else "FAILED"
    return {"canceled": "CANCELED", "skipped": "SKIPPED", "blocked": "BLOCKED"}.get(job.state, "SCHEDULED")


def build_node(job: FakeJob, org: FakeOrganization) -> dict[str, Any]:
    url = f"https://buildkite.com/{org.slug}/{job.pipeline_slug}/builds/{job.build_number}"
    return {
        "__typename": "Build",
        "id": graphql_id("Build", job.build_uuid),
        "uuid": job.build_uuid,
        "number": job.build_number,
        "branch": job.branch,
        "commit": job.commit,
        "message": f"Build {job.build_number}",
        "state": build_state(job),
        "url": url,
        "pipeline": pipeline_node(job, org),
        "organization": organization_node(org),
    }


def event_node(event: JobEvent, job_ref: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return {
        "__typename": EVENT_TYPENAMES.get(event.type, "JobEventGeneric"),
        "id": graphql_id("JobEvent", event.uuid),
        "uuid": event.uuid,
        "type": event.type,
        "timestamp": iso8601(event.timestamp),
        "actor": {"type": event.actor, "uuid": None, "node": None},
        "errorDetail": event.detail,
        "message": event.detail,
        "job": lambda _info: job_ref(),
    }


def job_node(job: FakeJob, org: FakeOrganization) -> dict[str, Any]:
    """A `JobTypeCommand` (reference §2.3) with upper-case states and `env` as "K=V" strings."""
    reason = job.signal_reason if job.signal_reason in SIGNAL_REASONS else None
    node: dict[str, Any] = {
        "__typename": "JobTypeCommand",
        "id": graphql_id("Job", job.uuid),
        "uuid": job.uuid,
        "state": job.state.upper(),
        "agentQueryRules": list(job.agent_query_rules),
        "env": [f"{key}={value}" for key, value in job.env.items()],
        "command": job.command,
        "priority": {"number": job.priority},
        "label": job.label,
        "createdAt": iso8601(job.created_at),
        "scheduledAt": iso8601(job.scheduled_at),
        "runnableAt": iso8601(job.scheduled_at),
        "startedAt": iso8601(job.started_at),
        "finishedAt": iso8601(job.finished_at),
        "canceledAt": iso8601(job.canceled_at),
        "expiredAt": iso8601(job.finished_at) if job.state == "expired" else None,
        "exitStatus": job.exit_status,
        "signal": job.signal,
        "signalReason": reason.upper() if reason else None,
        "passed": job.passed,
        "softFailed": False,
        "retried": False,
        "url": f"https://buildkite.com/{org.slug}/{job.pipeline_slug}/builds/{job.build_number}#{job.uuid}",
        "step": {"__typename": "StepCommand", "uuid": job.step_uuid, "key": job.step_key},
        "build": build_node(job, org),
        "pipeline": pipeline_node(job, org),
        "cluster": cluster_node(job.cluster_id),
    }
    node["events"] = lambda _info, **args: paginate(
        list(reversed(list(enumerate(job.events)))),  # newest first, like the jobs list
        seq=lambda pair: pair[0],
        node=lambda pair: event_node(pair[1], lambda: node),
        descending=True,
        **args,
    )
    return node


def cluster_node(cluster_id: str | None) -> dict[str, Any] | None:
    if cluster_id is None:
        return None
    return {
        "__typename": "Cluster",
        "id": graphql_id("Cluster", cluster_id),
        "uuid": cluster_id,
        "name": f"cluster-{cluster_id[:8]}",
    }


def _in_cluster(job: FakeJob, args: dict[str, Any]) -> bool:
    cluster = args.get("cluster")
    if cluster is not None:
        # Accept the GraphQL cluster id (what the controller sends) or a bare UUID.
        wanted = uuid_from_graphql_id(cluster, "Cluster") or cluster
        return job.cluster_id == wanted
    clustered = args.get("clustered")
    return clustered is None or clustered == (job.cluster_id is not None)


def matches_filters(job: FakeJob, args: dict[str, Any]) -> bool:
    """Organization.jobs filters; `agentQueryRules` values are ANDed (reference §2.2)."""
    states = args.get("state")
    if states is not None and job.state.upper() not in states:
        return False
    types = args.get("type")
    if types is not None and "COMMAND" not in types:
        return False
    rules = args.get("agentQueryRules")
    if rules is not None and not set(rules) <= set(job.agent_query_rules):
        return False
    passed = args.get("passed")
    if passed is not None and job.passed != passed:
        return False
    return _in_cluster(job, args)


def organization_jobs(store: JobStore, org: FakeOrganization, **args: Any) -> dict[str, Any]:
    jobs = [job for job in store.all() if matches_filters(job, args)]
    # Both orders list newest first; the fake does not track assignment time separately.
    jobs.sort(key=lambda job: job.seq, reverse=True)
    return paginate(
        jobs, seq=lambda job: job.seq, node=lambda job: job_node(job, org), descending=True, **args
    )


class GraphQLRoot:
    """Root value for queries and mutations: graphql-core calls these methods as field resolvers."""

    def __init__(self, store: JobStore, org: FakeOrganization) -> None:
        self.store = store
        self.org = org

    def job(self, _info: GraphQLResolveInfo[None], uuid: str) -> dict[str, Any] | None:
        job = self.store.find(uuid)
        return job_node(job, self.org) if job is not None else None

    def organization(
        self, _info: GraphQLResolveInfo[None], slug: str | None = None, uuid: str | None = None
    ) -> dict[str, Any] | None:
        if slug not in {None, self.org.slug} or uuid not in {None, self.org.uuid}:
            return None
        return organization_node(self.org, self.store)

    def node(self, _info: GraphQLResolveInfo[None], id: str) -> dict[str, Any] | None:
        job_uuid = uuid_from_graphql_id(id, "Job")
        if job_uuid is not None:
            return self.job(_info, job_uuid)
        if uuid_from_graphql_id(id, "Organization") == self.org.uuid:
            return organization_node(self.org, self.store)
        return None

    def jobTypeCommandCancel(self, _info: GraphQLResolveInfo[None], input: dict[str, Any]) -> dict[str, Any]:
        # The GraphQL id is documented; a plain UUID is accepted too (reference open question 8).
        job_uuid = uuid_from_graphql_id(input["id"], "Job") or input["id"]
        try:
            job = self.store.cancel(job_uuid)
        except JobNotFound as exc:
            raise GraphQLError(f"No job found with id {input['id']!r}") from exc
        except JobConflict as exc:
            raise GraphQLError(exc.message) from exc
        return {"clientMutationId": input.get("clientMutationId"), "jobTypeCommand": job_node(job, self.org)}
