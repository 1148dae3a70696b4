"""``Settings``: the validated configuration, one section per stage (loaded by ``app.config``).

Each stage receives only its own section. Every default says why it is what it is.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from podspec.config import PodConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    # Where followers post the jobs they receive while this replica leads (``app.relay``); empty means
    # http://$POD_IP:<port> (the Deployment sets POD_IP from the downward API).
    advertise_url: str = Field("", pattern=r"^(https?://[^\s/]+/?)?$")
    # The ops endpoints (/metrics, /readyz, /healthz, POST /reconcile, status pages) get a port of their
    # own, which the Ingress never exposes and deploy/'s NetworkPolicy restricts; 0 serves them on
    # ``port`` beside the webhook (local runs and tests). deploy/ sets 9090.
    ops_port: int = Field(0, ge=0, le=65535)
    # Bearer token for the ops write endpoints (POST /reconcile); without one only loopback clients
    # (``kubectl port-forward``) may call them.
    ops_token: SecretStr | None = None
    # Ended jobs whose decision trail GET /jobs/{uuid} still shows (each a few KiB at most); older ones
    # keep only a tombstone.
    job_trails: int = Field(1000, ge=1, le=1_000_000)


class WebhookSettings(_Section):
    secret: SecretStr | None = None
    token: SecretStr | None = None
    # Unsigned webhooks would let anyone on the network make us call GraphQL: off unless asked for.
    allow_unsigned: bool = False
    # Buildkite's job payloads are a few KiB; 1 MiB leaves room and bounds memory per request.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Buildkite's docs suggest five minutes against replays.
    max_skew_seconds: int = Field(300, ge=1)


class BuildkiteSettings(_Section):
    token: SecretStr | None = None
    org: str = ""
    agent_token: SecretStr | None = None
    graphql_endpoint: str = "https://graphql.buildkite.com/v1"
    agent_endpoint: str = "https://agent.buildkite.com/v3"
    # Long enough for a 100-job confirm under load, short enough that a hung call is retried soon.
    http_timeout_seconds: float = Field(30, gt=0)


class IntakeSettings(_Section):
    queues: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # Buildkite's per-query complexity limit allows far more, but 100 aliased jobs keep one reply small.
    batch_size: int = Field(100, ge=1, le=100)
    # The Buildkite cluster we serve. None: any cluster, as before clusters existed; that is unsafe when a
    # queue name is used in two clusters (we would create pods the other cluster's agents must run).
    cluster_uuid: str | None = None

    @field_validator("cluster_uuid")
    @classmethod
    def _cluster_is_uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            raise ValueError(
                f"{value[:64]!r} is not a UUID (Buildkite shows it on the cluster's page)"
            ) from None

    @field_validator("tags")
    @classmethod
    def _tags_are_pairs(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        for tag in tags:
            key, sep, value = tag.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"tag {tag!r} must look like key=value")
        return tags


class AdmitSettings(_Section):
    # agent-stack-k8s' default; 0 means no limit.
    max_in_flight: int = Field(25, ge=0)
    # Concurrent pod creates: enough to hide API latency, few enough not to trip API priority and fairness.
    create_concurrency: int = Field(16, ge=1, le=256)


class SweepSettings(_Section):
    # Webhooks carry the latency; the sweep only catches what they lose, so once a minute is plenty
    # and costs a few GraphQL points.
    interval_seconds: float = Field(60, gt=0)
    # While jobs wait but webhooks are silent (a webhook outage), sweep this often instead.
    busy_interval_seconds: float = Field(10, gt=0)
    page_size: int = Field(100, ge=1, le=500)
    max_pages: int = Field(20, ge=1)


class LifecycleSettings(_Section):
    succeeded_retention_seconds: float = Field(30, ge=0)
    failed_retention_seconds: float = Field(600, ge=0)
    image_pull_grace_seconds: float = Field(30, ge=0)
    pending_timeout_seconds: float = Field(900, ge=0)
    agent_done_grace_seconds: float = Field(10, ge=0)
    # agent-stack-k8s checks pending pods' job states every 5 s: a lost cancel webhook costs at most that.
    cancel_check_interval_seconds: float = Field(5, gt=0)
    # Container logs attached to a job failed for its pod (app/lifecycle/pod_logs.py), per failed
    # container. 50 lines is what a person reads to find the error; 8 KiB keeps five containers, the
    # message and the events inside the job log's 64 KiB (agent_log.MAX_LOG_BYTES). 0 lines: no logs.
    pod_log_lines: int = Field(50, ge=0, le=10_000)
    pod_log_kib: int = Field(8, ge=1, le=64)
    # All reads of one failure together; failing the job is never delayed by more than this.
    pod_log_timeout_seconds: float = Field(3, gt=0, le=30)


class KubeSettings(_Section):
    kubeconfig: str | None = None
    # No client-side limit by default (0): a webhook burst is bounded by create-concurrency (16 requests
    # in flight) and the apiserver's own flow control, whose 429 + Retry-After pauses every call. A
    # client-side cap (client-go's 10/20 made 10 pods/s) only makes a burst slower than the apiserver
    # could take it; set qps/burst to cap it anyway.
    qps: float = Field(0, ge=0)
    burst: int = Field(100, ge=1)


def default_renew_deadline(lease_duration_seconds: float, renew_interval_seconds: float) -> float:
    """Two thirds of the lease duration (client-go's 10 s of 15 s), kept above the renew interval."""
    return max(lease_duration_seconds * 2 / 3, (lease_duration_seconds + renew_interval_seconds) / 2)


class LeaderSettings(_Section):
    lease_name: str = "buildkite-controller-leader"
    # The Lease lives in the controller's own namespace (deploy/ sets POD_NAMESPACE from the downward
    # API), apart from the jobs namespace; empty means the jobs namespace (``pod.namespace``).
    lease_namespace: str = Field("", pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$")
    identity: str = ""
    # client-go's leader-election defaults: lease 15 s, renew deadline 10 s, retry (renew) every 2 s; a
    # failover within one lease duration, and a leader that cannot renew stops 5 s before anyone takes over.
    lease_duration_seconds: float = Field(15, gt=0)
    renew_interval_seconds: float = Field(2, gt=0)
    # None: ``default_renew_deadline`` (so a shortened lease duration alone stays valid).
    renew_deadline_seconds: float | None = Field(None, gt=0)

    @property
    def renew_deadline(self) -> float:
        return self.renew_deadline_seconds or default_renew_deadline(
            self.lease_duration_seconds, self.renew_interval_seconds
        )


class LogSettings(_Section):
    # agent-stack-k8s spells them debug/info/warn/error and logfmt/json; both spellings are accepted.
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "logfmt", "text"] = "json"
    # agent-stack-k8s' `debug`: debug level whatever `level` says.
    debug: bool = False

    @field_validator("level", "format", mode="before")
    @classmethod
    def _spelling(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return {"warn": "warning"}.get(value, value)
        return value

    @property
    def effective_level(self) -> str:
        return "debug" if self.debug else self.level


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    webhook: WebhookSettings = WebhookSettings()
    buildkite: BuildkiteSettings = BuildkiteSettings()
    intake: IntakeSettings = IntakeSettings()
    admit: AdmitSettings = AdmitSettings()
    sweep: SweepSettings = SweepSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    kube: KubeSettings = KubeSettings()
    leader: LeaderSettings = LeaderSettings()
    log: LogSettings = LogSettings()
    # Issue #3 asks for `buildkite` as the default namespace (agent-stack-k8s' binary uses `default`).
    pod: PodConfig = Field(default_factory=lambda: PodConfig(namespace="buildkite"))

    @field_validator("pod", mode="before")
    @classmethod
    def _default_namespace(cls, value: object) -> object:
        if isinstance(value, dict) and "namespace" not in value:
            return {**value, "namespace": "buildkite"}
        return value

    @model_validator(mode="after")
    def _leader_timing(self) -> Settings:
        leader = self.leader
        if leader.renew_interval_seconds >= leader.lease_duration_seconds:
            raise ValueError("leader.renew_interval_seconds must be shorter than the lease duration")
        if not leader.renew_interval_seconds < leader.renew_deadline < leader.lease_duration_seconds:
            raise ValueError(
                f"leader.renew_deadline_seconds ({leader.renew_deadline:g}) must be longer than the renew "
                f"interval ({leader.renew_interval_seconds:g}) and shorter than the lease duration "
                f"({leader.lease_duration_seconds:g})"
            )
        return self
