"""``buildkite-controller demo``: watch the controller run an example pipeline, with no cluster and no tokens.

Starts the fake Buildkite, the fake cluster with its simulated node, and the real controller
(``buildkite-controller serve`` in a child process, over real HTTP; see ``demo_stack``). Then schedules
the jobs of an example pipeline plus one whose image cannot be pulled and one that is cancelled while its
pod starts (``demo_jobs``); Buildkite's signed webhooks carry them to the controller. A live table shows
each job reach confirmed → pod → running → finished → cleaned (``demo_progress``), then a summary.
Exits 0 once every job has settled as expected, 1 otherwise; ``--serve`` keeps everything running
afterwards so the status page can be explored.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from app.cli.demo_progress import MILESTONES, JobProgress
from app.cli.pipeline import PipelineError, pipeline_slug

if TYPE_CHECKING:  # imported in run(): they need the `simulate` extra
    from app.cli.demo_jobs import DemoRun
    from app.cli.demo_stack import DemoStack

POLL_SECONDS = 0.25
# Piped output gets this many columns: the table and the failure reasons stay readable in a log.
WIDE_OUTPUT = 120


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo`` on the ``buildkite-controller`` command's subparsers."""
    parser = commands.add_parser(
        "demo", help="run an example pipeline through the controller against a simulated cluster"
    )
    parser.add_argument(
        "--pipeline", default="examples/pipeline.yml", help="pipeline file whose jobs are scheduled"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds every job gets to settle (default 60)"
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep everything running afterwards (stop with Ctrl-C)"
    )
    parser.add_argument("--workdir", default=None, help="where the kubeconfig and controller log go")
    parser.set_defaults(handler=run)


def run(namespace: argparse.Namespace) -> int:
    # The fakes need the `simulate` extra, which the production image does not install.
    from app.cli.demo_jobs import DemoRun, demo_jobs
    from app.cli.demo_stack import QUEUE, DemoStack

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, WIDE_OUTPUT)  # a log or a pipe: no reason to wrap at 80
    pipeline = Path(namespace.pipeline)
    try:
        jobs = demo_jobs(pipeline, queue=QUEUE)
    except OSError as exc:
        console.print(f"buildkite-controller demo: cannot read {pipeline}: {exc.strerror or exc}")
        return 2
    except PipelineError as exc:
        console.print(f"buildkite-controller demo: {pipeline}: {exc}")
        return 2
    workdir = Path(namespace.workdir) if namespace.workdir else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, _setter(stop)) for sig in (signal.SIGTERM, signal.SIGINT)}
    stack = DemoStack(workdir)
    try:
        with console.status("Starting the fake Buildkite, the fake cluster and the controller…"):
            starting = time.monotonic()
            try:
                endpoints = stack.start()
            except (RuntimeError, OSError) as exc:  # the controller did not come up: say why
                console.print(f"buildkite-controller demo: {exc}", soft_wrap=True)
                return 1
        console.print(f"Started the fakes and the controller in {time.monotonic() - starting:.1f} s")
        console.print(f"Status page: [bold]{endpoints.controller}/[/bold]")
        console.print(f"Controller log: {stack.controller_log}")
        demo = DemoRun(stack, jobs, pipeline_slug=pipeline_slug(str(pipeline)))
        progress = [
            JobProgress(job.label, uuid, job.expect, scheduled_at=at) for job, uuid, at in demo.schedule()
        ]
        started = min((p.scheduled_at for p in progress), default=time.monotonic())  # the first webhook
        with Live(_table(progress), console=console, refresh_per_second=8) as live:
            while not stop.is_set() and not all(p.settled for p in progress):
                if time.monotonic() - started > namespace.timeout:
                    break
                if stack.controller_exit_code() is not None:
                    console.print(f"[red]The controller exited; see {stack.controller_log}[/red]")
                    return 1
                _observe(stack, demo, progress)
                live.update(_table(progress))
                stop.wait(POLL_SECONDS)
        elapsed = time.monotonic() - started
        console.print()
        # Soft wrap: a reason's table rows stay whole lines (the terminal wraps them, not rich).
        console.print(_summary(progress, elapsed=elapsed, timeout=namespace.timeout), soft_wrap=True)
        ok = all(p.settled and p.outcome_as_expected for p in progress)
        if namespace.serve and not stop.is_set():
            console.print(f"Serving. Status page: [bold]{endpoints.controller}/[/bold] (Ctrl-C to stop)")
            stop.wait()
        return 0 if ok else 1
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _observe(stack: DemoStack, demo: DemoRun, progress: list[JobProgress]) -> None:
    from app.simulate.webhook_payloads import rest_state

    pods = demo.step()
    now = time.monotonic()
    for job in progress:
        bk = stack.buildkite.job(job.uuid)
        job.update(
            now=now,
            state=rest_state(bk),
            exit_status=bk.exit_status,
            pod=pods.get(job.uuid),
            record=stack.job_record(job.uuid),
        )


def _table(progress: list[JobProgress]) -> Table:
    table = Table(title="Jobs (seconds after the webhook)", title_justify="left")
    table.add_column("job", no_wrap=True)
    for milestone in MILESTONES:
        table.add_column(milestone, justify="right")
    table.add_column("result")
    for job in progress:
        cells = [_milestone(job, m) for m in MILESTONES]
        table.add_row(Text(job.label), *cells, _result(job))
    return table


def _milestone(job: JobProgress, milestone: str) -> Text:
    if milestone in job.at:
        return Text(f"✓ {job.at[milestone]:.1f}", style="green")
    return Text("·", style="dim")


def _result(job: JobProgress) -> Text:
    if not job.settled and job.state not in ("passed", "failed", "canceled"):
        where = job.pod_phase or job.stage or "waiting"
        return Text(where, style="yellow")
    style = "green" if job.outcome_as_expected else "red"
    text = Text(job.state, style=style)
    if job.outcome and job.outcome.startswith("failed: "):
        text.append(f" ({job.outcome.removeprefix('failed: ')})", style="default")
    return text


def _summary(progress: list[JobProgress], *, elapsed: float, timeout: float) -> Group:
    lines: list[Text] = []
    settled = [p for p in progress if p.settled]
    unexpected = [p for p in settled if not p.outcome_as_expected]
    if len(settled) == len(progress) and not unexpected:
        lines.append(
            Text(f"All {len(progress)} jobs settled in {elapsed:.1f} s, as expected:", style="bold green")
        )
    else:
        waiting = len(progress) - len(settled)
        lines.append(
            Text(
                f"{len(settled)} of {len(progress)} jobs settled in {elapsed:.1f} s "
                f"(limit {timeout:.0f} s); {waiting} still running, {len(unexpected)} ended unexpectedly:",
                style="bold red",
            )
        )
    for job in progress:
        line = Text(f"  {job.state:<9} {job.uuid}  ")
        line.append(Text(job.label))
        if not job.settled:
            line.append(f"  (not settled: {job.stage or 'unseen'}, pod {job.pod_phase or 'none'})", "red")
        elif not job.outcome_as_expected:
            line.append(f"  (expected {job.expect})", "red")
        lines.append(line)
        if job.reason and job.state == "failed":
            for number, reason_line in enumerate(job.reason.strip().splitlines()):
                lead = "reason: " if number == 0 else "        "
                lines.append(Text(f"            {lead}{reason_line}", style="dim"))
    return Group(*lines)


def _setter(event: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        event.set()

    return handle
