"""Prometheus metrics, one registry per app so several controllers can live in one test process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every metric the controller exports; names carry the ``buildkite_controller_`` prefix."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"buildkite_controller_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"buildkite_controller_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(
                f"buildkite_controller_{name}", doc, labels, registry=registry, buckets=_PHASE_BUCKETS
            )

        self.webhooks = counter(
            "webhooks_total", "Webhooks received, by event and outcome", ("event", "outcome")
        )
        self.graphql_calls = counter("graphql_calls_total", "GraphQL requests, by operation", ("operation",))
        self.graphql_errors = counter("graphql_errors_total", "Failed GraphQL operations", ("operation",))
        self.graphql_budget = gauge(
            "graphql_budget_remaining", "GraphQL complexity points left in the window"
        )
        self.confirm_batch_size = Histogram(
            "buildkite_controller_confirm_batch_size",
            "Jobs per GraphQL confirm request",
            registry=registry,
            buckets=(1, 2, 5, 10, 20, 50, 100),
        )
        self.jobs_confirmed = counter("jobs_confirmed_total", "Confirm results, by outcome", ("outcome",))
        self.pods_created = counter("pods_created_total", "Agent pods created")
        self.pod_create_errors = counter(
            "pod_create_errors_total", "Pod creates that failed, by reason", ("reason",)
        )
        self.duplicates_avoided = counter(
            "duplicates_avoided_total",
            "Jobs not created again, by where the duplicate was caught",
            ("stage",),
        )
        self.jobs_failed = counter("jobs_failed_total", "Jobs failed in Buildkite, by reason", ("reason",))
        self.in_flight = gauge("pods_in_flight", "Unfinished agent pods plus creates in flight")
        self.max_in_flight = gauge("max_in_flight", "Configured max-in-flight (0 = no limit)")
        self.queue_depth = gauge("admission_queue_depth", "Confirmed jobs waiting for admission")
        self.intake_pending = gauge("intake_pending", "Job UUIDs waiting to be confirmed")
        self.sweeps = counter("sweeps_total", "Reconcile sweeps, by trigger", ("trigger",))
        self.sweep_unannounced = counter(
            "sweep_unannounced_jobs_total", "Scheduled jobs the sweep found that no webhook announced"
        )
        self.phase_seconds = histogram("phase_seconds", "Seconds from webhook to each phase", ("phase",))
        self.kube_requests = gauge("kube_requests", "Kubernetes API requests sent")
        self.kube_throttled_seconds = gauge(
            "kube_client_throttled_seconds", "Seconds spent waiting on the client-side rate limit"
        )
        self.pods_deleted = counter("pods_deleted_total", "Pods deleted, by cause", ("cause",))
        self.lifecycle_failures = counter(
            "lifecycle_failures_total", "Pod failures detected, by reason", ("reason",)
        )
        self.failure_report_seconds = histogram(
            "failure_report_seconds", "Seconds from a detected pod failure to its Buildkite report"
        )
        self.cancel_delete_seconds = histogram(
            "cancel_to_delete_seconds", "Seconds from noticing a cancel to deleting its pod"
        )
        self.pods_by_phase = gauge("pods", "Agent pods the watch sees, by phase", ("phase",))
        self.oldest_pending_seconds = gauge("oldest_pending_pod_seconds", "Age of the oldest Pending pod")
        self.is_leader = gauge("is_leader", "1 while this replica holds the leader Lease")
        self.leader_election_errors = counter(
            "leader_election_errors_total", "Leader-election rounds that failed, by reason", ("reason",)
        )
        self.leader_lease_forbidden = gauge(
            "leader_lease_forbidden", "1 while RBAC refuses a verb on the leader Lease", ("verb",)
        )
        self.relay_batches = counter(
            "relay_batches_total", "Job batches a follower relayed to the leader, by result", ("result",)
        )
        self.watch_restarts = counter("watch_restarts_total", "Pod watch restarts, by cause", ("cause",))

    def observe_phase(self, phase: str, seconds: float) -> None:
        self.phase_seconds.labels(phase).observe(seconds)
