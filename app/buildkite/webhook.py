"""Parse a Buildkite webhook body into a ``WebhookEvent`` (pure: bytes in, value out).

Input: the ``X-Buildkite-Event`` header and the raw body of a request whose signature was already
verified (``signature.verify``). Output: a frozen ``WebhookEvent`` naming the event and, for
``job.*`` events, the few job fields the intake pre-filters on (reference/buildkite-api.md §1.4).
Anything else in the payload is ignored. Events we do not handle (``ping``, ``build.*``, names that
do not exist yet) parse fine; the route decides to ignore them.

Cluster pre-filter: a job payload names its cluster (``job.cluster_id``, null outside clusters);
``is_other_cluster`` lets the route drop another cluster's job before it costs a GraphQL call. A
``cluster_id`` that is absent or not a UUID decides nothing: the confirm's own cluster check does.

Bad input raises ``WebhookRejected``: 413 when the body is larger than ``max_bytes``, 400 for
anything that is not the expected JSON shape. The reason names the field and never echoes the input.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from app.buildkite import uuids
from app.errors import WebhookRejected

EventName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[a-z0-9_.]+$")]
Rule = Annotated[str, StringConstraints(max_length=1024)]


def _canonical_uuid(value: object) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("must be a job UUID")
    try:
        return uuids.canonical(value)
    except ValueError:
        raise ValueError("must be a job UUID") from None


def _priority_number(value: object) -> object:
    # REST-shaped payloads send {"number": N}; be lenient about a bare number or null.
    if isinstance(value, dict):
        return value.get("number")
    return value


class WebhookJob(BaseModel):
    """The ``job`` object of a ``job.*`` webhook, reduced to what the intake needs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Annotated[str, BeforeValidator(_canonical_uuid)]
    state: Annotated[str, StringConstraints(max_length=64, to_lower=True)] | None = None
    type: Annotated[str, StringConstraints(max_length=64)] | None = None
    agent_query_rules: tuple[Rule, ...] = Field(default=(), max_length=256)
    priority: Annotated[int | None, BeforeValidator(_priority_number)] = None
    # Set from the payload only (see _cluster): has_cluster says cluster_id is known (None = no cluster).
    cluster_id: str | None = None
    has_cluster: bool = False

    @model_validator(mode="before")
    @classmethod
    def _cluster(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known, cluster = _cluster_uuid(data.get("cluster_id")) if "cluster_id" in data else (False, None)
            data = {**data, "cluster_id": cluster, "has_cluster": known}
        return data


def _cluster_uuid(value: object) -> tuple[bool, str | None]:
    """(known, cluster UUID) from a payload's ``cluster_id``: null is known (no cluster); a UUID, or a
    GraphQL ``Cluster---<uuid>`` id, is known; anything else is unknown, never an error."""
    if value is None:
        return True, None
    if not isinstance(value, str) or len(value) > 128:
        return False, None
    try:
        return True, uuids.canonical(value)
    except ValueError:
        pass
    try:
        decoded = base64.b64decode(value, validate=True).decode()
        return True, uuids.canonical(decoded.removeprefix("Cluster---"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False, None


def is_other_cluster(job: WebhookJob, cluster_uuid: str | None) -> bool:
    """True when the payload shows the job is outside ``cluster_uuid`` (the cluster we serve).

    False whenever it cannot tell: no cluster configured, or no usable ``cluster_id`` in the payload.
    """
    return cluster_uuid is not None and job.has_cluster and job.cluster_id != cluster_uuid.lower()


class WebhookEvent(BaseModel):
    """One parsed webhook: the event name, and the job for ``job.*`` events (else None)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event: EventName
    job: WebhookJob | None = None

    @property
    def is_job_event(self) -> bool:
        return self.event.startswith("job.")


# The payload fields WebhookJob is built from (cluster_id's presence matters; has_cluster is derived).
_JOB_FIELDS = ("id", "state", "type", "agent_query_rules", "priority", "cluster_id")


def parse_event(event_header: str | None, body: bytes, *, max_bytes: int) -> WebhookEvent:
    """Parse the body of a verified webhook request; raise ``WebhookRejected`` (400/413) when bad."""
    if len(body) > max_bytes:
        raise WebhookRejected(413, f"body is {len(body)} bytes; the limit is {max_bytes}")
    payload = _load_json_object(body)
    event = _event_name(event_header, payload.get("event"))
    job = payload.get("job") if event.startswith("job.") else None
    if event.startswith("job.") and job is None:
        raise WebhookRejected(400, f"a {event[:128]} event needs a job object")
    if isinstance(job, dict):
        # Only the fields WebhookJob reads: the rest of the ~2 KB job object would be copied and then
        # ignored, which was most of the validation's cost on the webhook path (py-spy).
        job = {key: job[key] for key in _JOB_FIELDS if key in job}
    try:
        return WebhookEvent.model_validate({"event": event, "job": job})
    except ValidationError as exc:
        raise WebhookRejected(400, _first_problem(exc)) from None


def _load_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WebhookRejected(400, "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise WebhookRejected(400, f"body must be a JSON object, not {type(payload).__name__}")
    return payload


def _event_name(header: str | None, in_body: object) -> str:
    """The body's ``event`` (it is signed); the header only fills in when the body has none."""
    if in_body is not None and not isinstance(in_body, str):
        raise WebhookRejected(400, "event: must be a string")
    header = header.strip() if header is not None else None
    if in_body and header and in_body != header:
        # The header is not covered by the signature, so a mismatch means tampering or a bug.
        raise WebhookRejected(400, "X-Buildkite-Event header disagrees with the body's event")
    name = in_body or header
    if not name:
        raise WebhookRejected(400, "no event name: X-Buildkite-Event header and body event are both missing")
    return name


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"[:300]
