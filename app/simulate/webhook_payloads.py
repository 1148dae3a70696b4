"""Buildkite-shaped webhook bodies built from the fake's job records.

`job.*` events carry `{event, job, build, pipeline, sender}` where job, build and pipeline are REST
objects (reference/buildkite-api.md §1.4): states in the REST vocabulary (finished → passed/failed,
limiting/limited → scheduled), no plugins (those live only in the job env), and a build without jobs.
"""

from __future__ import annotations

from typing import Any

from app.simulate.buildkite_clock import iso8601
from app.simulate.buildkite_jobs import FakeJob, FakeOrganization, graphql_id

SENDER = {"id": "8a7693f8-dbae-4783-9137-84090fce9045", "name": "Fake Buildkite"}


def rest_state(job: FakeJob) -> str:
    """The REST/webhook spelling of a job's state (reference §1.4, §7.1 row 19)."""
    if job.state == "finished":
        return "passed" if job.exit_status == "0" else "failed"
    # REST has no `reserved`; a reserved job still waits for an agent, as `scheduled` does. [inferred]
    if job.state in {"limiting", "limited", "reserved"}:
        return "scheduled"
    return job.state


def _urls(job: FakeJob, org: FakeOrganization) -> dict[str, str]:
    web = f"https://buildkite.com/{org.slug}/{job.pipeline_slug}"
    api = f"https://api.buildkite.com/v2/organizations/{org.slug}/pipelines/{job.pipeline_slug}"
    return {"web": web, "api": api, "build_web": f"{web}/builds/{job.build_number}"}


def rest_pipeline(job: FakeJob, org: FakeOrganization) -> dict[str, Any]:
    urls = _urls(job, org)
    return {
        "id": job.pipeline_uuid,
        "graphql_id": graphql_id("Pipeline", job.pipeline_uuid),
        "url": urls["api"],
        "web_url": urls["web"],
        "name": job.pipeline_slug,
        "slug": job.pipeline_slug,
        "cluster_id": job.cluster_id,
    }


def rest_build(job: FakeJob, org: FakeOrganization) -> dict[str, Any]:
    urls = _urls(job, org)
    return {
        "id": job.build_uuid,
        "graphql_id": graphql_id("Build", job.build_uuid),
        "url": f"{urls['api']}/builds/{job.build_number}",
        "web_url": urls["build_web"],
        "number": job.build_number,
        "state": "running" if job.state in {"accepted", "running"} else "scheduled",
        "branch": job.branch,
        "commit": job.commit,
        "message": f"Build {job.build_number}",
        "blocked": False,
        "created_at": iso8601(job.created_at),
    }


def rest_job(job: FakeJob, org: FakeOrganization) -> dict[str, Any]:
    """The REST Job object (without plugins, as Buildkite sends it)."""
    urls = _urls(job, org)
    api_job = f"{urls['api']}/builds/{job.build_number}/jobs/{job.uuid}"
    return {
        "id": job.uuid,
        "graphql_id": graphql_id("Job", job.uuid),
        "type": "script",
        "name": job.label,
        "step_key": job.step_key,
        "step": {"id": job.step_uuid},
        "priority": {"number": job.priority},
        "agent_query_rules": list(job.agent_query_rules),
        "state": rest_state(job),
        "command": job.command,
        "web_url": f"{urls['build_web']}#{job.uuid}",
        "log_url": f"{api_job}/log",
        "raw_log_url": f"{api_job}/log.txt",
        "build_url": f"{urls['api']}/builds/{job.build_number}",
        "cluster_id": job.cluster_id,
        "exit_status": _int_or_none(job.exit_status),
        "signal": job.signal,
        "signal_reason": job.signal_reason,
        "soft_failed": False,
        "agent": None,
        "created_at": iso8601(job.created_at),
        "scheduled_at": iso8601(job.scheduled_at),
        "runnable_at": iso8601(job.scheduled_at),
        "started_at": iso8601(job.started_at),
        "finished_at": iso8601(job.finished_at),
        "retried": False,
        "retries_count": None,
    }


def _int_or_none(text: str | None) -> int | None:
    # REST reports exit_status as an integer; the agent sends a string that may be anything.
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def job_event_body(event: str, job: FakeJob, org: FakeOrganization) -> dict[str, Any]:
    return {
        "event": event,
        "job": rest_job(job, org),
        "build": rest_build(job, org),
        "pipeline": rest_pipeline(job, org),
        "sender": dict(SENDER),
    }


def ping_body(org: FakeOrganization, *, url: str) -> dict[str, Any]:
    return {
        "event": "ping",
        "service": {
            "id": "c9f8372d-c0cd-43dc-9269-bcbb7f308e81",
            "provider": "webhook",
            "settings": {"url": url},
        },
        "organization": {
            "id": org.uuid,
            "graphql_id": graphql_id("Organization", org.uuid),
            "slug": org.slug,
            "name": org.name,
        },
        "sender": dict(SENDER),
    }
