"""Texts shown to people when a pod fails: pure formatting, no I/O.

Input: container and condition views from ``app.podview`` (picked by ``app.lifecycle``) and raw
Kubernetes ``Event`` dicts (fetched by the shell). Output: the ``detail`` of a Buildkite job we fail
(one sentence, then a short table, as agent-stack-k8s writes them) and one-line stack notifications.

Every table is aligned, sorted deterministically, and capped: at most ``MAX_ROWS`` rows, cells cut
to a width with ``…``, newlines folded, so a noisy pod can never blow Buildkite's 4 KB detail limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.buildkite.agent_log import HEADER as FAILURE_LOG_HEADER
from app.buildkite.agent_log import MAX_LOG_BYTES
from app.lifecycle.pod_logs import PodLogs, format_logs
from app.podview import ContainerView, PodCondition, PodView, parse_time

MAX_ROWS = 10
CELL_CHARS = 60
MESSAGE_CHARS = 100  # messages carry the useful detail ("pull access denied for …"), so more room
MAX_DETAIL_BYTES = 4096  # Buildkite's limit for the `detail` of a finished job
# The failure goes to Buildkite as the job's log (agent API chunks, app.buildkite.agent_log), which cuts
# it at MAX_LOG_BYTES (64 KiB, under the agent's default 100 KiB chunk, so one chunk). The message and
# events keep within MAX_DETAIL_BYTES as before; container logs may fill the rest, never past the cut.
MAX_FAILURE_LOG_BYTES = MAX_LOG_BYTES - len(FAILURE_LOG_HEADER.encode()) - 1
MAX_NOTICE_CHARS = 255  # stack notifications are cropped here by Buildkite's agent-stack-k8s too
ELLIPSIS = "…"

IMAGE_FAILURE_HEADLINE = "The following containers could not be created or their images could not be pulled:"
INIT_FAILURE_HEADLINE = "The following init containers failed:"
EVENTS_HEADLINE = "Recent Kubernetes events for the pod:"


def format_duration(seconds: float) -> str:
    """``930`` → ``15m30s``; ``3723`` → ``1h2m3s``; negative or tiny → ``0s``."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def cut(text: str, width: int) -> str:
    """Fold whitespace to single spaces and cut to ``width`` characters, marking the cut with ``…``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + ELLIPSIS


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    widths: Sequence[int] = (),
    max_rows: int = MAX_ROWS,
) -> str:
    """Align ``rows`` under ``headers`` (two spaces between columns); extra rows become one line.

    ``widths`` caps each column (default ``CELL_CHARS``); rows are printed in the order given.
    """
    caps = [widths[i] if i < len(widths) else CELL_CHARS for i in range(len(headers))]
    shown = [[cut(cell, caps[i]) for i, cell in enumerate(row)] for row in rows[:max_rows]]
    sizes = [max([len(h)] + [len(row[i]) for row in shown]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(sizes[i]) for i, cell in enumerate(line)).rstrip() for line in [headers, *shown]
    ]
    if len(rows) > max_rows:
        lines.append(f"{ELLIPSIS} and {len(rows) - max_rows} more")
    return "\n".join(lines)


def _optional(value: int | None) -> str:
    return "" if value is None else str(value)


def image_failure_message(containers: Iterable[ContainerView]) -> str:
    """Containers stuck waiting with an image or create error, sorted by container name."""
    rows = [
        [c.name, f'"{c.image}"', c.waiting_reason, c.waiting_message]
        for c in sorted(containers, key=lambda c: c.name)
    ]
    table = format_table(
        ["CONTAINER", "IMAGE", "REASON", "MESSAGE"], rows, widths=[40, 80, 40, MESSAGE_CHARS]
    )
    return f"{IMAGE_FAILURE_HEADLINE}\n{table}"


def terminated_table(containers: Iterable[ContainerView]) -> str:
    """CONTAINER, EXIT CODE, SIGNAL, REASON, MESSAGE of terminated containers, sorted by name."""
    rows = [
        [c.name, _optional(t.exit_code), _optional(t.signal), t.reason, t.message]
        for c in sorted(containers, key=lambda c: c.name)
        if (t := c.terminated) is not None
    ]
    headers = ["CONTAINER", "EXIT CODE", "SIGNAL", "REASON", "MESSAGE"]
    return format_table(headers, rows, widths=[40, 10, 10, 40, MESSAGE_CHARS])


def init_failure_message(containers: Iterable[ContainerView]) -> str:
    return f"{INIT_FAILURE_HEADLINE}\n{terminated_table(containers)}"


def conditions_table(conditions: Iterable[PodCondition]) -> str:
    rows = [[c.type, c.status, c.reason, c.message] for c in sorted(conditions, key=lambda c: c.type)]
    return format_table(
        ["CONDITION", "STATUS", "REASON", "MESSAGE"], rows, widths=[30, 10, 40, MESSAGE_CHARS]
    )


def pending_timeout_message(pending_seconds: float, conditions: Sequence[PodCondition]) -> str:
    sentence = f"The pod has been in Pending state for {format_duration(pending_seconds)} without starting."
    return f"{sentence}\n{conditions_table(conditions)}" if conditions else sentence


def lost_message(pod: PodView) -> str:
    """Why the job never started: the pod ended before its agent acquired the job."""
    sentence = (
        f"The Kubernetes pod {pod.name} {_how_lost(pod)} before the buildkite-agent acquired this job, "
        "so the job never started."
    )
    ended = abnormal_exits(pod)
    return f"{sentence}\n{terminated_table(ended)}" if ended else sentence


def lost_notice(pod: PodView) -> str:
    """One line for the job timeline when the pod ends while its agent holds the job."""
    return notice(
        f"The Kubernetes pod {pod.name} {_how_lost(pod)} while the agent held the job.", abnormal_exits(pod)
    )


def abnormal_exits(pod: PodView) -> list[ContainerView]:
    """Containers that ended with a non-zero (or unknown) exit code: the likely culprits."""
    return [c for c in pod.all_containers if c.terminated is not None and c.terminated.exit_code != 0]


def _how_lost(pod: PodView) -> str:
    if pod.reason == "Evicted":
        return f"was evicted ({cut(pod.message, MESSAGE_CHARS)})" if pod.message else "was evicted"
    if pod.phase == "Unknown":
        return "lost contact with its node"
    if pod.phase == "Failed":
        return "failed"
    return "was deleted"


def notice(headline: str, containers: Iterable[ContainerView]) -> str:
    """A one-line stack notification: ``headline name: Reason (message); …`` cut to 255 characters."""
    parts = [_describe(c) for c in sorted(containers, key=lambda c: c.name)]
    return cut(" ".join([headline, "; ".join(parts)]).strip(), MAX_NOTICE_CHARS)


def _describe(container: ContainerView) -> str:
    if (t := container.terminated) is not None:
        reason, message = t.reason or f"exit {_optional(t.exit_code)}", t.message
    else:
        reason, message = container.waiting_reason, container.waiting_message
    return f"{container.name}: {reason} ({message})" if message else f"{container.name}: {reason}"


def events_table(events: Iterable[Mapping[str, Any]], *, now: float, limit: int = MAX_ROWS) -> str:
    """The newest ``limit`` events as LAST SEEN (age), COUNT, TYPE, REASON, MESSAGE; "" if none."""
    parsed = [_event_row(e, now) for e in events if isinstance(e, Mapping)]
    if not parsed:
        return ""
    # Newest first; ties (and undated events, last) by reason and message, the same order every run.
    parsed.sort(key=lambda pair: (float("inf") if pair[0] is None else -pair[0], pair[1][3:], pair[1][:3]))
    rows = [row for _, row in parsed[:limit]]
    table = format_table(
        ["LAST SEEN", "COUNT", "TYPE", "REASON", "MESSAGE"], rows, widths=[12, 6, 10, 30, MESSAGE_CHARS]
    )
    return f"{EVENTS_HEADLINE}\n{table}"


def _event_row(event: Mapping[str, Any], now: float) -> tuple[float | None, list[str]]:
    series = _mapping(event.get("series"))
    seen = _event_time(event, series)
    count = next((c for c in (event.get("count"), series.get("count")) if _is_int(c)), 1)
    age = "?" if seen is None else format_duration(now - seen)
    kind, reason, message = (_text(event.get(key)) for key in ("type", "reason", "message"))
    return seen, [age, str(count), kind, reason, message]


def _event_time(event: Mapping[str, Any], series: Mapping[str, Any]) -> float | None:
    """Last time the event was seen: old-style events set lastTimestamp, new-style ones a series."""
    candidates = (
        event.get("lastTimestamp"),
        series.get("lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        _mapping(event.get("metadata")).get("creationTimestamp"),
    )
    return next((t for t in map(parse_time, candidates) if t is not None), None)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def compose_detail(
    message: str,
    events: Iterable[Mapping[str, Any]] = (),
    *,
    now: float,
    max_bytes: int = MAX_DETAIL_BYTES,
    logs: PodLogs | None = None,
    max_total_bytes: int = MAX_FAILURE_LOG_BYTES,
) -> str:
    """The failure ``message`` plus the events table, fitted into ``max_bytes`` of UTF-8, then the
    failed containers' ``logs`` (``app.lifecycle.pod_logs``) in what is left of ``max_total_bytes``.

    Event rows are dropped first (oldest go first), then the text itself is cut; container logs lose
    their oldest lines to fit, and are left out when not even their headers fit.
    """
    head = _message_and_events(message, events, now=now, max_bytes=min(max_bytes, max_total_bytes))
    if logs is None:
        return head
    room = max_total_bytes - len(head.encode()) - 2
    section = format_logs(logs, max_bytes=room) if room > 0 else ""
    return f"{head}\n\n{section}" if section else head


def _message_and_events(
    message: str, events: Iterable[Mapping[str, Any]], *, now: float, max_bytes: int
) -> str:
    events = list(events)
    for limit in range(min(MAX_ROWS, len(events)), -1, -1):
        table = events_table(events, now=now, limit=limit) if limit else ""
        detail = f"{message}\n\n{table}" if table else message
        if len(detail.encode()) <= max_bytes:
            return detail
    return _cut_bytes(message, max_bytes)


def _cut_bytes(text: str, max_bytes: int) -> str:
    room = max_bytes - len(ELLIPSIS.encode())
    return text.encode()[: max(0, room)].decode(errors="ignore") + ELLIPSIS
