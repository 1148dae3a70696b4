"""Pod logs in failure reports (issue 13): which containers are read, how their output is cleaned and
bounded, and how the reader behaves when the apiserver answers badly or not at all."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.errors import Forbidden, Invalid, KubeError, KubeUnavailable, NotFound
from app.jobs import JobBook
from app.lifecycle.actions import LifecycleActions
from app.lifecycle.decide import FailJob
from app.lifecycle.failures import failed_init_containers
from app.lifecycle.messages import (
    MAX_DETAIL_BYTES,
    MAX_FAILURE_LOG_BYTES,
    compose_detail,
    init_failure_message,
)
from app.lifecycle.pod_logs import (
    INDENT,
    LOGS_HEADLINE,
    REDACTED,
    ContainerLog,
    LogLimits,
    LogTarget,
    PodLogReader,
    PodLogs,
    escape_line,
    format_logs,
    pick_containers,
    redact,
    secrets_to_redact,
    tail_lines,
)
from app.metrics import Metrics
from app.podview import PodView
from tests.app.fake_gateway import FakeFailer, FakeGateway
from tests.app.pods import (
    AGENT_IMAGE,
    JOB_UUID,
    POD_NAME,
    T0,
    Ctr,
    default_init,
    pod,
    running,
    terminated,
    waiting,
)

AGENT_TOKEN = "agent-token-0123456789abcdef"


def sync(body: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(body)
    def test(*args: Any, **kwargs: Any) -> None:
        asyncio.run(body(*args, **kwargs))

    return test


def view(raw: dict[str, Any], *, deleted: bool = False) -> PodView:
    return PodView.from_raw(raw, deleted=deleted)


def init_failed_pod() -> dict[str, Any]:
    return pod(phase="Failed", init=[Ctr("copy-agent", AGENT_IMAGE, terminated(1, reason="Error"))])


def numbered(count: int, prefix: str = "line") -> bytes:
    return b"".join(f"{prefix} {i}\n".encode() for i in range(1, count + 1))


# --- picking -------------------------------------------------------------------------------------


def names(raw: dict[str, Any]) -> list[tuple[str, bool]]:
    targets, _ = pick_containers(view(raw), max_containers=10)
    return [(t.name, t.previous) for t in targets]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(init_failed_pod(), [("copy-agent", False)], id="failed-init-container"),
        pytest.param(pod(phase="Running", main=[Ctr("agent", state=running())]), [], id="healthy-pod"),
        pytest.param(
            pod(phase="Failed", main=[Ctr("agent", state=terminated(137, reason="OOMKilled"))]),
            [("agent", False)],
            id="oom-killed-agent",
        ),
        pytest.param(
            pod(
                phase="Running",
                main=[Ctr("agent", state=terminated(0)), Ctr("sidecar", state=terminated(2, reason="Error"))],
            ),
            [("sidecar", False)],
            id="sidecar-exit-2-but-agent-exit-0-is-not-read",
        ),
        pytest.param(
            pod(
                phase="Failed",
                reason="Evicted",
                main=[Ctr("agent", state=running()), Ctr("c", state=terminated(0))],
            ),
            [("agent", False), ("c", False)],
            id="evicted-reads-everything-that-ran",
        ),
        pytest.param(
            pod(phase="Pending", main=[Ctr("container-0", state=waiting("ErrImagePull"))]),
            [],
            id="image-pull",
        ),
    ],
)
def test_pick_containers(raw: dict[str, Any], expected: list[tuple[str, bool]]) -> None:
    assert names(raw) == expected


def test_a_restarted_container_is_read_from_its_previous_instance() -> None:
    raw = pod(phase="Running", main=[Ctr("sidecar", state=waiting("CrashLoopBackOff"))])
    status = raw["status"]["containerStatuses"][0]
    status["restartCount"] = 3
    status["lastState"] = terminated(1, reason="Error")
    (target,), _ = pick_containers(view(raw), max_containers=5)
    assert (target.name, target.previous, target.exit_code, target.reason) == ("sidecar", True, 1, "Error")


def test_pick_caps_the_number_of_containers_and_counts_the_rest() -> None:
    raw = pod(phase="Failed", main=[Ctr(f"c{i}", state=terminated(1)) for i in range(7)])
    targets, left_out = pick_containers(view(raw), max_containers=5)
    assert [t.name for t in targets] == ["c0", "c1", "c2", "c3", "c4"] and left_out == 2


# --- cleaning ------------------------------------------------------------------------------------


def test_secrets_are_redacted_everywhere_and_short_values_are_not_secrets() -> None:
    secrets = secrets_to_redact([AGENT_TOKEN, "abc", "", None, "hunter22"])
    assert secrets == (AGENT_TOKEN, "hunter22")
    raw = f"token={AGENT_TOKEN} x{AGENT_TOKEN}y and hunter22 but abc stays\n".encode()
    assert redact(raw, secrets) == f"token={REDACTED} x{REDACTED}y and {REDACTED} but abc stays\n".encode()


def test_a_secret_cut_off_by_the_byte_limit_is_still_hidden() -> None:
    raw = f"ok\ntoken={AGENT_TOKEN[:10]}".encode()
    assert redact(raw, (AGENT_TOKEN,)) == raw, "only a read that stopped at its limit can end mid-secret"
    assert redact(raw, (AGENT_TOKEN,), is_cut_at_end=True) == f"ok\ntoken={REDACTED}".encode()


def test_a_longer_secret_containing_a_shorter_one_is_redacted_whole() -> None:
    secrets = secrets_to_redact(["secret", "my-secret-value"])
    assert redact(b"my-secret-value", secrets) == REDACTED.encode()


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("plain text\tand a tab", "plain text\tand a tab"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("bell\x07 nul\x00 del\x7f c1\x9b", "bell\\x07 nul\\x00 del\\x7f c1\\x9b"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("cr\rover", "cr\\x0dover"),
        ("ünïcödé ✓ 🙂", "ünïcödé ✓ 🙂"),
    ],
)
def test_escape_line(line: str, shown: str) -> None:
    assert escape_line(line) == shown


def test_tail_keeps_the_last_lines_escapes_binary_and_indents_nothing_yet() -> None:
    raw = numbered(200) + b"\xff\xfe binary \x00\r\n"
    lines, cut = tail_lines(raw, lines=3, max_bytes=1024)
    assert lines == ("line 199", "line 200", "\\xff\\xfe binary \\x00") and not cut


def test_a_progress_bar_shows_its_last_drawing() -> None:
    lines, _ = tail_lines(
        b"Receiving objects:  10%\rReceiving objects:  55%\rReceiving objects: 100%\r\ndone\n",
        lines=5,
        max_bytes=1024,
    )
    assert lines == ("Receiving objects: 100%", "done")


def test_tail_respects_the_byte_cap_by_dropping_the_oldest_lines() -> None:
    lines, cut = tail_lines(numbered(200), lines=200, max_bytes=100)
    assert cut and lines[-1] == "line 200"
    assert sum(len(INDENT) + len(line) + 1 for line in lines) <= 100
    assert len(lines) == 100 // len(f"{INDENT}line 200\n")


def test_one_huge_line_keeps_its_end() -> None:
    lines, cut = tail_lines(b"x" * 10_000 + b"THE END\n", lines=50, max_bytes=64)
    assert cut and len(lines) == 1 and lines[0].startswith("…") and lines[0].endswith("THE END")
    assert len(lines[0].encode()) <= 64


def test_escaping_counts_against_the_byte_cap() -> None:
    lines, _ = tail_lines(b"\x00" * 1000 + b"\n", lines=5, max_bytes=200)
    assert len(lines[0].encode()) <= 200


# --- formatting ----------------------------------------------------------------------------------


def entry(name: str, count: int, **target: Any) -> ContainerLog:
    lines = tuple(f"{name} line {i}" for i in range(1, count + 1))
    return ContainerLog(LogTarget(name, **target), lines, bytes_read=sum(len(x) + 1 for x in lines))


def test_a_section_names_the_container_exit_code_and_reason() -> None:
    text = format_logs(
        PodLogs((entry("copy-agent", 2, is_init=True, exit_code=1, reason="Error"),)), max_bytes=4096
    )
    assert text.splitlines() == [
        LOGS_HEADLINE,
        "+++ init container copy-agent (exit code 1, reason Error): last 2 lines:",
        "  copy-agent line 1",
        "  copy-agent line 2",
    ]


def test_unreadable_logs_are_noted_with_the_reason() -> None:
    gone = ContainerLog(
        LogTarget("agent", exit_code=137, reason="OOMKilled"), unavailable="the pod is gone (404)"
    )
    text = format_logs(PodLogs((gone,)), max_bytes=4096)
    assert "+++ container agent (exit code 137, reason OOMKilled): no log: the pod is gone (404)" in text


def test_a_log_line_cannot_open_a_buildkite_group_of_its_own() -> None:
    hostile = ContainerLog(LogTarget("c"), ("+++ :tada: all good", "--- fake", "~~~ x"))
    body = format_logs(PodLogs((hostile,)), max_bytes=4096).splitlines()[2:]
    assert all(line.startswith(INDENT) for line in body)


def test_hostile_container_names_and_reasons_are_escaped_and_cut() -> None:
    target = LogTarget("bad\x1b]0;title\x07" + "n" * 300, reason="\x1b[2J" + "r" * 300)
    (section,) = format_logs(PodLogs((ContainerLog(target, ("x",)),)), max_bytes=4096).splitlines()[1:2]
    assert "\x1b" not in section and "\x07" not in section and len(section) < 250


def test_sections_share_the_budget_and_the_big_one_loses_its_oldest_lines() -> None:
    small, big = entry("small", 3), entry("big", 2000)
    text = format_logs(PodLogs((big, small)), max_bytes=2000)
    assert len(text.encode()) <= 2000
    assert "small line 1" in text and "small line 3" in text, "the small section fits whole"
    assert "big line 2000" in text and "big line 1\n" not in text and "cut to fit" in text
    assert text.index("+++ container big") < text.index("+++ container small"), "pod order is kept"


def test_no_room_means_no_section_rather_than_a_broken_one() -> None:
    assert format_logs(PodLogs((entry("c", 5),)), max_bytes=10) == ""
    assert format_logs(PodLogs(), max_bytes=4096) == ""


def test_compose_detail_keeps_the_head_in_4kib_and_the_whole_within_the_log_limit() -> None:
    events = [
        {"type": "Warning", "reason": f"R{i}", "message": "m" * 90, "lastTimestamp": "2026-01-01T00:00:00Z"}
        for i in range(30)
    ]
    logs = PodLogs(tuple(entry(f"c{i}", 5000) for i in range(5)))
    detail = compose_detail("x" * 3000, events, now=T0, logs=logs)
    head, _, tail = detail.partition(LOGS_HEADLINE)
    assert len(head.encode()) <= MAX_DETAIL_BYTES + 2
    assert MAX_DETAIL_BYTES < len(detail.encode()) <= MAX_FAILURE_LOG_BYTES
    assert all(f"c{i} line 5000" in tail for i in range(5)), "every container shows its newest line"


def test_compose_detail_without_logs_is_unchanged() -> None:
    assert compose_detail("boom", [], now=T0) == compose_detail("boom", [], now=T0, logs=PodLogs())


# --- reading -------------------------------------------------------------------------------------


@dataclass
class LogGateway:
    """Only ``read_pod_log``: answers by container name with bytes, an error, or a hang."""

    answers: dict[str, bytes | KubeError | None] = field(default_factory=dict)
    calls: list[tuple[str, str, int, int, bool]] = field(default_factory=list)
    namespace: str = "buildkite"

    async def read_pod_log(
        self,
        name: str,
        container: str,
        *,
        tail_lines: int,
        limit_bytes: int,
        previous: bool = False,
        timeout_seconds: float | None = None,
    ) -> bytes:
        self.calls.append((name, container, tail_lines, limit_bytes, previous))
        answer = self.answers.get(container, b"")
        if answer is None:
            await asyncio.Event().wait()  # hangs until cancelled
        if isinstance(answer, KubeError):
            raise answer
        assert isinstance(answer, bytes)
        return answer[:limit_bytes]


def reader(gateway: LogGateway, **limits: Any) -> PodLogReader:
    return PodLogReader(gateway, limits=LogLimits(**limits), secrets=[AGENT_TOKEN, None])  # type: ignore[arg-type]


@sync
async def test_reader_reads_the_tail_with_the_configured_bounds() -> None:
    gateway = LogGateway({"copy-agent": numbered(200)})
    logs = await reader(gateway, lines=20, max_bytes=4096).read(view(init_failed_pod()))
    assert gateway.calls == [(POD_NAME, "copy-agent", 20, 4 * 4096, False)]
    (only,) = logs.logs
    assert only.lines[-1] == "line 200" and len(only.lines) == 20 and not only.unavailable


@sync
async def test_reader_redacts_the_controllers_tokens_and_the_pods_sensitive_literals() -> None:
    raw = init_failed_pod()
    raw["spec"]["initContainers"][0]["env"] = [
        {"name": "DEPLOY_PASSWORD", "value": "pa55word-literal"},
        {"name": "GIT_AUTHOR_NAME", "value": "Jane Doe-Smith"},
        {"name": "REGISTRY_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    said = f"using {AGENT_TOKEN}\npassword pa55word-literal\nby Jane Doe-Smith\n".encode()
    logs = await reader(LogGateway({"copy-agent": said})).read(view(raw))
    assert logs.logs[0].lines == (f"using {REDACTED}", f"password {REDACTED}", "by Jane Doe-Smith")


@sync
async def test_reader_reads_a_restarted_container_with_previous() -> None:
    raw = pod(phase="Running", main=[Ctr("sidecar", state=waiting("CrashLoopBackOff"))])
    raw["status"]["containerStatuses"][0] |= {"restartCount": 1, "lastState": terminated(3)}
    gateway = LogGateway({"sidecar": b"crashed\n"})
    await reader(gateway).read(view(raw))
    assert gateway.calls[0][4] is True


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (NotFound(404, "NotFound", 'pods "x" not found'), "the pod is gone (404)"),
        (Forbidden(403, "Forbidden", "nope", is_quota=False), "pods/log get"),
        (Invalid(400, "BadRequest", 'container "c" in pod "x" is waiting to start'), "is waiting to start"),
        (KubeUnavailable(502, "", "dial tcp 10.0.0.1:10250: connect: refused"), "could not be reached (502)"),
        (KubeError(418, "Teapot", "\x1b[2Jshort and stout"), "418 Teapot: \\x1b[2Jshort and stout"),
    ],
)
@sync
async def test_reader_notes_a_log_it_cannot_read(error: KubeError, said: str) -> None:
    logs = await reader(LogGateway({"copy-agent": error})).read(view(init_failed_pod()))
    assert said in logs.logs[0].unavailable


@sync
async def test_a_hung_read_is_abandoned_at_the_deadline_and_the_others_still_count() -> None:
    raw = pod(phase="Failed", main=[Ctr("hangs", state=terminated(1)), Ctr("quick", state=terminated(2))])
    gateway = LogGateway({"hangs": None, "quick": b"fast\n"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    logs = await reader(gateway, timeout_seconds=0.2).read(view(raw))
    assert loop.time() - started < 1.0
    hung, quick = logs.logs
    assert "no answer within 0.2 s" in hung.unavailable and quick.lines == ("fast",)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("log ")], "no read left running"


@sync
async def test_a_deleted_pod_is_not_read_but_noted() -> None:
    gateway = LogGateway()
    logs = await reader(gateway).read(view(init_failed_pod(), deleted=True))
    assert gateway.calls == [] and logs.logs == () and "deleted before" in logs.note


@sync
async def test_nothing_is_read_when_no_container_failed_or_lines_is_zero() -> None:
    gateway = LogGateway()
    assert await reader(gateway).read(view(pod(init=default_init()))) == PodLogs()
    assert await reader(gateway, lines=0).read(view(init_failed_pod())) == PodLogs()
    assert gateway.calls == []


@sync
async def test_a_server_ignoring_limit_bytes_cannot_flood_the_report() -> None:
    class Flood(LogGateway):
        async def read_pod_log(self, name: str, container: str, **kw: Any) -> bytes:
            return b"y" * 10_000_000 + b"\n"

    logs = await reader(Flood(), max_bytes=1024).read(view(init_failed_pod()))
    assert len("\n".join(logs.logs[0].lines).encode()) <= 1024


@sync
async def test_an_evicted_pods_waiting_container_is_noted_as_never_started() -> None:
    raw = pod(phase="Failed", reason="Evicted", main=[Ctr("agent", state=waiting("ContainerCreating"))])
    gateway = LogGateway()
    logs = await reader(gateway).read(view(raw))
    assert gateway.calls == [] and logs.logs[0].unavailable == "the container never started"


# --- in the failure report (LifecycleActions.fail) -----------------------------------------------


def actions_with(
    kube: FakeGateway, failer: FakeFailer, book: JobBook, reader: PodLogReader
) -> LifecycleActions:
    return LifecycleActions(
        kube=kube,
        failer=failer,
        metrics=Metrics(),
        abort_grace_seconds=5,
        logs=reader,
        book=book,
        clock=lambda: T0,
    )


def failing_init() -> tuple[FakeGateway, FakeFailer, JobBook, PodView]:
    kube, failer, book = FakeGateway(), FakeFailer(), JobBook(replica="r")
    raw = kube.put_pod(init_failed_pod())
    book.sighted(JOB_UUID, source="webhook")
    return kube, failer, book, view(raw)


def fail_action(pod_view: PodView) -> FailJob:
    return FailJob(
        "init_container", init_failure_message(failed_init_containers(pod_view)), then_delete=False
    )


@sync
async def test_the_failure_report_carries_the_log_and_the_trail_says_how_much() -> None:
    kube, failer, book, pod_view = failing_init()
    printed = numbered(200) + f"leaked {AGENT_TOKEN}\n".encode()
    kube.logs[(POD_NAME, "copy-agent")] = printed
    actions = actions_with(kube, failer, book, PodLogReader(kube, limits=LogLimits(), secrets=[AGENT_TOKEN]))
    assert await actions.fail(pod_view, fail_action(pod_view)) == "failed"
    ((_, reason, message),) = failer.calls
    assert reason == "init_container" and message.startswith("The following init containers failed:")
    assert "+++ init container copy-agent (exit code 1, reason Error): last 50 lines:" in message
    assert message.endswith("  line 200\n  leaked [REDACTED]") and AGENT_TOKEN not in message
    record = book.get(JOB_UUID)
    assert record is not None
    (step,) = [s for s in record.trail if s.what == "logs"]
    attached = len(message.partition(LOGS_HEADLINE)[2].encode()) + len(LOGS_HEADLINE.encode())
    read = len(b"".join(printed.splitlines(keepends=True)[-50:]))
    assert step.detail.startswith(f"read {read} bytes, attached {attached} bytes (copy-agent: {read} bytes)")


@sync
async def test_a_crashing_log_reader_never_stops_the_job_from_being_failed() -> None:
    kube, failer, book, pod_view = failing_init()

    class Broken(PodLogReader):
        async def read(self, pod: PodView) -> PodLogs:
            raise RuntimeError("bug")

    actions = actions_with(kube, failer, book, Broken(kube, limits=LogLimits()))
    assert await actions.fail(pod_view, fail_action(pod_view)) == "failed"
    ((_, _, message),) = failer.calls
    assert LOGS_HEADLINE not in message and "init containers failed" in message
