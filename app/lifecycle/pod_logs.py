"""The output of a failing pod's containers, for the Buildkite job we fail because of it.

Input: the ``PodView`` of a pod whose job ``app.lifecycle.actions`` is about to fail, and the gateway's
``read_pod_log``. Output: one :class:`ContainerLog` per failed container (its last lines, or why there
are none), which ``app.lifecycle.messages.compose_detail`` appends to the failure message.

Which containers (``pick_containers``): init containers that exited non-zero, any container that
terminated non-zero (a sidecar or the agent ending before the job was acquired, an OOM kill), one that
restarted after a non-zero exit (its *previous* instance is read), and on an evicted pod every container
that ran (init containers only if they failed). At most ``LogLimits.max_containers``; a container that
never started is noted, not read.

Bounds: ``tailLines`` and a per-container byte cap, and one deadline for all reads of a pod together
(default 3 s, read concurrently), so a hung kubelet can delay failing the job by that much and no more.

What is redacted, verbatim wherever it appears: the controller's own secrets (Buildkite API token, agent
token, webhook secret/token, ops token — the agent token is normally the very value the pod's agent
container gets from its Secret), and the literal ``env[].value`` of the pod's containers whose names
look like credentials (``app.podview.SENSITIVE_ENV_NAME``). What cannot be: values a container gets
through ``secretKeyRef``/``envFrom`` from other Secrets — the controller never reads Secrets, so it does
not know them — and any secret printed encoded (base64, URL-escaped) or derived. The logs are only what
``kubectl logs`` shows to anyone allowed ``pods/log`` in the namespace; the job log may have a wider
audience, which is why the default is short.

Escaping: a carriage return redraws its line (the last drawing is kept, as a terminal shows it); invalid
UTF-8 becomes ``\\xNN``; every character Python does not call printable — controls
(ANSI escapes included), DEL, C1 controls, format characters such as bidirectional overrides and
zero-width spaces, line separators — becomes ``\\xNN``/``\\uNNNN``/``\\UNNNNNNNN``; tabs stay. Each
section opens a Buildkite log group (``+++``, shown expanded) and each of its lines is indented two
spaces, so a line of output cannot pose as a group of its own (``---``/``+++``/``~~~`` start a line).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from app.errors import Forbidden, Invalid, KubeError, KubeUnavailable, NotFound
from app.podview import ContainerView, PodView, Terminated

if TYPE_CHECKING:
    from app.kube import KubeGateway

log = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
# Shorter "secrets" (an empty or test token) would redact ordinary text.
MIN_SECRET_CHARS = 6
# A secret cut off at the end of what we read still leaks this much of its start; hide from here on.
MIN_SECRET_PREFIX_CHARS = 4
INDENT = "  "
LOGS_HEADLINE = "Output of the failed containers (most recent lines last):"
# The kubelet applies limitBytes from the *start* of the tail, which would drop the newest lines of a
# long-lined log; we ask for this many times the cap and keep the end ourselves.
OVERREAD = 4
MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogLimits:
    """How much of a pod's output we read; ``app.settings.LifecycleSettings`` says why the defaults."""

    lines: int = 50  # per container; 0 reads nothing
    max_bytes: int = 8 * 1024  # per container, after escaping
    timeout_seconds: float = 3.0  # all reads of one pod together
    max_containers: int = 5


@dataclass(frozen=True, slots=True)
class LogTarget:
    """A container worth reading, with what its header shows."""

    name: str
    is_init: bool = False
    previous: bool = False  # read the instance before the last restart
    exit_code: int | None = None
    reason: str = ""
    signal: int | None = None
    has_run: bool = True  # False: it never started, so it has no log


@dataclass(frozen=True, slots=True)
class ContainerLog:
    """The tail of one container's log (escaped and redacted), or why there is none."""

    target: LogTarget
    lines: tuple[str, ...] = ()  # oldest first
    unavailable: str = ""  # set when there is no log to show
    bytes_read: int = 0
    cut: bool = False  # older lines were dropped for the byte cap
    end_missing: bool = False  # the read stopped at its byte limit: newer output may be missing


@dataclass(frozen=True, slots=True)
class PodLogs:
    logs: tuple[ContainerLog, ...] = ()
    note: str = ""  # about the pod as a whole (deleted, too many containers)

    @property
    def bytes_read(self) -> int:
        return sum(entry.bytes_read for entry in self.logs)


# --- picking (pure) -------------------------------------------------------------------------------


def pick_containers(pod: PodView, *, max_containers: int) -> tuple[list[LogTarget], int]:
    """The containers to read, init containers first in spec order; and how many more were left out."""
    evicted = pod.reason == "Evicted"
    picked = [t for c in pod.all_containers if (t := _target(c, evicted=evicted)) is not None]
    return picked[:max_containers], max(0, len(picked) - max_containers)


def _target(container: ContainerView, *, evicted: bool) -> LogTarget | None:
    now, last = container.terminated, container.last_terminated
    base = LogTarget(container.name, is_init=container.is_init)
    # An eviction kills what runs beside the job; init containers that completed are not part of it.
    evicted = evicted and (not container.is_init or container.is_native_sidecar)
    if now is not None and (now.exit_code != 0 or evicted):
        return _with_exit(base, now)
    if container.restart_count > 0 and last is not None and last.exit_code != 0:
        return replace(_with_exit(base, last), previous=True)
    if evicted and container.is_running:
        return replace(base, reason="Evicted")
    if evicted and container.waiting_reason and last is None:
        return replace(base, reason=container.waiting_reason, has_run=False)
    return None


def _with_exit(target: LogTarget, terminated: Terminated) -> LogTarget:
    return replace(target, exit_code=terminated.exit_code, reason=terminated.reason, signal=terminated.signal)


# --- cleaning (pure) ------------------------------------------------------------------------------


def secrets_to_redact(values: Iterable[str | None]) -> tuple[str, ...]:
    """The distinct values long enough to redact safely, longest first (so no secret is half-hidden)."""
    kept = {v for v in values if v and len(v) >= MIN_SECRET_CHARS}
    return tuple(sorted(kept, key=lambda v: (-len(v), v)))


def redact(raw: bytes, secrets: Sequence[str], *, is_cut_at_end: bool = False) -> bytes:
    """``raw`` with every occurrence of each secret replaced; with ``is_cut_at_end``, a trailing start
    of a secret (the read stopped inside it) is replaced too."""
    marker = REDACTED.encode()
    for secret in secrets:
        raw = raw.replace(secret.encode(), marker)
    if is_cut_at_end:
        for secret in secrets:
            encoded = secret.encode()
            for size in range(len(encoded) - 1, MIN_SECRET_PREFIX_CHARS - 1, -1):
                if raw.endswith(encoded[:size]):
                    raw = raw[:-size] + marker
                    break
    return raw


def escape_line(line: str) -> str:
    """Control and bidi characters as escapes; tabs and printable text unchanged."""
    if line.isprintable():
        return line
    return "".join(_escape_char(char) for char in line)


def _escape_char(char: str) -> str:
    if char == "\t" or char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def tail_lines(raw: bytes, *, lines: int, max_bytes: int) -> tuple[tuple[str, ...], bool]:
    """The last ``lines`` lines of ``raw``, escaped, within ``max_bytes`` of UTF-8 (indent included).

    Returns (lines oldest first, whether older text was dropped for the byte cap). A single line longer
    than the cap keeps its end, marked with ``…``.
    """
    text = raw.decode("utf-8", "backslashreplace").replace("\r\n", "\n")
    # A carriage return redraws the line (progress bars): keep what a terminal would show last.
    split = [_last_redraw(line) for line in text.split("\n")]
    if split and split[-1] == "":
        split.pop()
    kept: list[str] = []
    size = 0
    cut = False
    for line in reversed(split[-lines:] if lines > 0 else []):
        shown = escape_line(line)
        cost = len(INDENT.encode()) + len(shown.encode()) + 1
        if size + cost > max_bytes:
            cut = True
            if not kept:  # the newest line alone is too long: keep its end
                room = max(0, max_bytes - len(INDENT.encode()) - 4)
                kept.append("…" + shown.encode()[-room:].decode("utf-8", "ignore") if room else "…")
            break
        kept.append(shown)
        size += cost
    return tuple(reversed(kept)), cut


def _last_redraw(line: str) -> str:
    if "\r" not in line:
        return line
    return next((part for part in reversed(line.split("\r")) if part), "")


# --- formatting (pure) ----------------------------------------------------------------------------


def header(target: LogTarget) -> str:
    kind = "init container" if target.is_init else "container"
    facts = []
    if target.exit_code is not None:
        facts.append(f"exit code {target.exit_code}")
    if target.signal is not None:
        facts.append(f"signal {target.signal}")
    if target.reason:
        facts.append(f"reason {escape_line(target.reason[:60])}")
    if target.previous:
        facts.append("previous instance, before its restart")
    described = f" ({', '.join(facts)})" if facts else ""
    return f"+++ {kind} {escape_line(target.name[:63])}{described}"


def format_section(entry: ContainerLog, *, max_lines: int | None = None) -> str:
    """Header, then the lines (or why there are none). ``max_lines`` drops the oldest for a budget."""
    lines = entry.lines if max_lines is None else entry.lines[len(entry.lines) - max(0, max_lines) :]
    if entry.unavailable:
        return f"{header(entry.target)}: no log: {entry.unavailable}"
    if not entry.lines:
        return f"{header(entry.target)}: the log is empty"
    dropped = len(entry.lines) - len(lines)
    first = f"{header(entry.target)}: last {len(lines)} line{'s' if len(lines) != 1 else ''}"
    if entry.cut or dropped:
        first += " (older output cut to fit)"
    if entry.end_missing:
        first += f" (the read stopped after {entry.bytes_read} bytes; newer output may be missing)"
    return "\n".join([first + ":", *(INDENT + line for line in lines)])


def format_logs(logs: PodLogs, *, max_bytes: int) -> str:
    """Every section under ``LOGS_HEADLINE``, fitted into ``max_bytes``: sections over their fair share
    lose their oldest lines first; "" when there is nothing to say or no room for the headline."""
    if not logs.logs and not logs.note:
        return ""
    parts = [LOGS_HEADLINE, *([logs.note] if logs.note else [])]
    fixed = sum(len(p.encode()) + 1 for p in parts)
    if fixed > max_bytes:
        return ""
    sections = _fit([*logs.logs], max_bytes - fixed)
    return "\n".join([*parts, *sections]) if sections or logs.note else ""


def _fit(entries: list[ContainerLog], budget: int) -> list[str]:
    """Fair shares: the smallest sections take what they need, the rest split what is left."""
    full = {i: format_section(e) for i, e in enumerate(entries)}
    shown: dict[int, str] = {}
    order = sorted(full, key=lambda i: len(full[i].encode()))
    for position, index in enumerate(order):
        share = budget // (len(order) - position)
        section = full[index]
        if len(section.encode()) + 1 > share:
            section = _shrink(entries[index], share - 1)
        if section:
            shown[index] = section
            budget -= len(section.encode()) + 1
    return [shown[i] for i in sorted(shown)]


def _shrink(entry: ContainerLog, room: int) -> str:
    """The section with as many of its newest lines as fit ``room`` bytes; "" if not even its header."""
    low, high = 0, len(entry.lines)
    best = ""
    while low <= high:
        middle = (low + high) // 2
        candidate = format_section(entry, max_lines=middle)
        if len(candidate.encode()) <= room:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


# --- reading (the I/O shell) ----------------------------------------------------------------------


class PodLogReader:
    """Reads the picked containers' logs concurrently within one deadline; never raises for a log."""

    def __init__(self, kube: KubeGateway, *, limits: LogLimits, secrets: Iterable[str | None] = ()) -> None:
        self._kube = kube
        self.limits = limits
        self._secrets = secrets_to_redact(secrets)

    async def read(self, pod: PodView) -> PodLogs:
        limits = self.limits
        if limits.lines <= 0:
            return PodLogs()
        targets, left_out = pick_containers(pod, max_containers=limits.max_containers)
        if not targets:
            return PodLogs()
        note = f"{left_out} more failed containers were not read." if left_out else ""
        if pod.deleted:
            gone = "The pod was deleted before its containers' logs could be read."
            return PodLogs(note=" ".join(filter(None, [gone, note])))
        secrets = secrets_to_redact([*self._secrets, *pod.sensitive_env_values])
        tasks = {
            t.name: asyncio.create_task(self._read_one(pod.name, t, secrets), name=f"log {pod.name}/{t.name}")
            for t in targets
            if t.has_run
        }
        try:
            if tasks:
                await asyncio.wait(tasks.values(), timeout=limits.timeout_seconds)
            return PodLogs(tuple(self._result(t, tasks.get(t.name)) for t in targets), note)
        finally:
            late = [task for task in tasks.values() if not task.done()]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _result(self, target: LogTarget, task: asyncio.Task[ContainerLog] | None) -> ContainerLog:
        if task is None:
            return ContainerLog(target, unavailable="the container never started")
        if not task.done() or task.cancelled():
            waited = f"{self.limits.timeout_seconds:g}"
            return ContainerLog(target, unavailable=f"no answer within {waited} s (kubelet unreachable?)")
        exc = task.exception()
        if exc is not None:  # _read_one translates every KubeError; anything else is a bug
            log.warning("reading the log of %s failed: %r", target.name, exc)
            return ContainerLog(target, unavailable=f"could not be read ({type(exc).__name__})")
        return task.result()

    async def _read_one(self, pod_name: str, target: LogTarget, secrets: Sequence[str]) -> ContainerLog:
        limits = self.limits
        request = min(MAX_REQUEST_BYTES, limits.max_bytes * OVERREAD)
        try:
            raw = await self._kube.read_pod_log(
                pod_name,
                target.name,
                tail_lines=limits.lines,
                limit_bytes=request,
                previous=target.previous,
                timeout_seconds=limits.timeout_seconds,
            )
        except KubeError as exc:
            return ContainerLog(target, unavailable=_why(exc))
        stopped = len(raw) >= request
        clean = redact(raw, secrets, is_cut_at_end=stopped)
        lines, cut = tail_lines(clean, lines=limits.lines, max_bytes=limits.max_bytes)
        return ContainerLog(target, lines, bytes_read=len(raw), cut=cut, end_missing=stopped)


def _why(exc: KubeError) -> str:
    """Why a log could not be read, in words for the job log (the apiserver's message cut short)."""
    said = escape_line(" ".join(exc.message.split())[:200])
    if isinstance(exc, NotFound):
        return "the pod is gone (404)"
    if isinstance(exc, Forbidden):
        return "the controller may not read pod logs (403; its Role needs pods/log get)"
    if isinstance(exc, Invalid):
        return f"the apiserver refused ({exc.status}): {said}"
    if isinstance(exc, KubeUnavailable):
        status = f" ({exc.status})" if exc.status else ""
        return f"the apiserver or kubelet could not be reached{status}: {said}"
    return f"the apiserver answered {exc.status} {exc.reason}: {said}"
