"""The lifecycle decision table: every pod situation, by Buildkite job state, around its deadlines.

Pods are created at T0 and accepted by the kubelet (``startTime``) at T0+2. Actions are summarised as
short strings so a row reads like a sentence: ``"fail image_pull, delete"``, ``"keep until +32, poll"``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.lifecycle import (
    REASONS,
    Action,
    CheckJobState,
    Delete,
    FailJob,
    Keep,
    LifecyclePolicy,
    Notify,
    decide,
)
from app.lifecycle import messages as fm
from app.podview import FAILURE_NOTIFIED_ANNOTATION, FAILURE_REPORTED_ANNOTATION, PodView
from tests.app.pods import (
    AGENT_IMAGE,
    T0,
    Ctr,
    condition,
    default_main,
    pod,
    running,
    terminated,
    waiting,
)

POLICY = LifecyclePolicy()
STATES: tuple[str | None, ...] = (None, "scheduled", "running", "finished", "canceled")
PULL = waiting("ImagePullBackOff", 'Back-off pulling image "no-such:1"')


def summarise(action: Action) -> str:
    """One readable line per action; times are shown relative to T0."""
    match action:
        case Keep(recheck_at=at, poll_job_state=poll):
            until = "" if at is None else f" until +{at - T0:g}"
            return f"keep{until}{', poll' if poll else ''}"
        case CheckJobState(reason=reason):
            return f"check {reason}"
        case FailJob(reason=reason, then_delete=then_delete):
            return f"fail {reason}{', delete' if then_delete else ''}"
        case Notify(reason=reason):
            return f"notify {reason}"
        case Delete(reason=reason, grace_seconds=grace):
            return f"delete {reason}" + ("" if grace is None else f" grace {grace}")
    raise AssertionError(f"not an action: {action!r}")


def pending_with(*ctrs: Ctr, **kwargs: Any) -> dict[str, Any]:
    return pod(main=[*ctrs, Ctr("agent", AGENT_IMAGE), Ctr("checkout", AGENT_IMAGE)], **kwargs)


def running_with(*ctrs: Ctr, **kwargs: Any) -> dict[str, Any]:
    main = [*ctrs, Ctr("agent", AGENT_IMAGE, running()), Ctr("checkout", AGENT_IMAGE, running())]
    return pod(phase="Running", main=main, **kwargs)


def finished(phase: str, agent_exit: int, **kwargs: Any) -> dict[str, Any]:
    main = [
        Ctr("container-0", state=terminated(0 if phase == "Succeeded" else 1, at=T0 + 50)),
        Ctr(
            "agent", AGENT_IMAGE, terminated(agent_exit, reason="OOMKilled" if agent_exit else "", at=T0 + 60)
        ),
        Ctr("checkout", AGENT_IMAGE, terminated(0, at=T0 + 20)),
    ]
    return pod(phase=phase, main=main, **kwargs)


def agent_done(**kwargs: Any) -> dict[str, Any]:
    main = [
        Ctr("agent", AGENT_IMAGE, terminated(0, at=T0 + 60)),
        Ctr("istio-proxy", "istio/proxy:1", running()),
    ]
    return pod(phase="Running", main=main, **kwargs)


REPORTED = {FAILURE_REPORTED_ANNOTATION: "image_pull"}
NOTIFIED = {FAILURE_NOTIFIED_ANNOTATION: "image_pull"}
INIT_FAILED = [Ctr("copy-agent", AGENT_IMAGE, terminated(1, reason="Error", message="no tini", at=T0 + 4))]
SIDECAR_EXITED = [
    Ctr("copy-agent", AGENT_IMAGE, terminated(0, at=T0 + 4)),
    Ctr("proxy", "envoy:1", terminated(143, reason="Error", signal=15), sidecar=True),
]
UNSCHEDULABLE = [condition("PodScheduled", "False", "Unschedulable", "0/3 nodes are available")]


@dataclass(frozen=True)
class Row:
    situation: str
    raw: dict[str, Any]
    at: float  # seconds after T0
    expected: dict[str | None, str]  # job state → summary
    deleted: bool = False


def row(situation: str, raw: dict[str, Any], at: float, *outcomes: str, deleted: bool = False) -> Row:
    """``outcomes``: one for every state, or one per state in STATES order."""
    assert len(outcomes) in (1, len(STATES)), situation
    expected = dict(zip(STATES, outcomes * len(STATES) if len(outcomes) == 1 else outcomes, strict=True))
    return Row(situation, raw, at, expected, deleted)


CHECK, ENDED, CANCELLED = "check {0}", "delete job_ended grace 0", "delete cancelled grace 0"


def failing(reason: str, notice: str | None = None) -> tuple[str, ...]:
    """The usual answers for a live pod's failure: ask, fail and delete, notify, clean up, clean up."""
    return (CHECK.format(reason), f"fail {reason}, delete", f"notify {notice or reason}", ENDED, CANCELLED)


KEEP_PENDING = ("keep until +900, poll",) * 3 + (ENDED, CANCELLED)
IN_GRACE = ("keep until +32, poll",) * 3 + (ENDED, CANCELLED)
LOST_FINISHED = (CHECK.format("lost_before_acquire"), "fail lost_before_acquire", "notify pod_lost")
UNSCHEDULED = pod(conditions=UNSCHEDULABLE, started=None, statuses=False)
PULLING = pending_with(Ctr("container-0", state=PULL))
EVICTED = pod(
    phase="Failed",
    reason="Evicted",
    message="low memory",
    conditions=[condition("Ready", "False", at=T0 + 50)],
    init=[],
    main=default_main(waiting("ContainerCreating")),
)


def stuck(reason: str, message: str = "", **kwargs: Any) -> dict[str, Any]:
    return pending_with(Ctr("container-0", state=waiting(reason, message)), **kwargs)


ROWS = [
    row("fresh pending pod", pod(), 10, *KEEP_PENDING),
    row("pending just before the timeout", UNSCHEDULED, 899, *KEEP_PENDING),
    row("unschedulable pod at the pending timeout", UNSCHEDULED, 900, *failing("pending_timeout")),
    row("image pull back-off inside the grace", PULLING, 31, *IN_GRACE),
    row("image pull back-off at the end of the grace", PULLING, 32, *failing("image_pull")),
    row("image pull grace counts from creation without startTime", stuck("ErrImagePull", started=None), 30,
        *failing("image_pull")),
    row("invalid image name fails at once", stuck("InvalidImageName"), 3, *failing("image_pull")),
    row("image never pulled fails at once", stuck("ErrImageNeverPull"), 3, *failing("image_pull")),
    row("create container config error after the grace", stuck("CreateContainerConfigError", "no secret"), 40,
        *failing("container_create")),
    row("image pull failure of a command container in a running pod",
        running_with(Ctr("container-1", state=PULL)), 40, *failing("image_pull")),
    row("image pull failure already notified", stuck("ImagePullBackOff", annotations=NOTIFIED), 40,
        CHECK.format("image_pull"), "fail image_pull, delete", "keep, poll", ENDED, CANCELLED),
    row("pending timeout fires while an image failure is still in grace",
        stuck("ImagePullBackOff", started=T0 + 880), 900, *failing("pending_timeout")),
    row("init container failed in a pending pod", pod(init=INIT_FAILED), 5, *failing("init_container")),
    row("init container failed and the pod is Failed", pod(phase="Failed", init=INIT_FAILED), 100,
        CHECK.format("init_container"), "fail init_container", "notify init_container",
        "keep until +604", "keep until +604"),
    row("native sidecar exit is not an init failure", running_with(init=SIDECAR_EXITED), 100, "keep"),
    row("running pod with the agent at work", running_with(Ctr("container-0", state=running())), 100, "keep"),
    row("succeeded pod inside its retention", finished("Succeeded", 0), 89, "keep until +90"),
    row("succeeded pod at the end of its retention", finished("Succeeded", 0), 90, "delete succeeded"),
    row("failed command, agent exited 0, inside retention", finished("Failed", 0), 659, "keep until +660"),
    row("failed command, agent exited 0, after retention", finished("Failed", 0), 660, "delete failed"),
    row("pod failed with the agent OOM-killed", finished("Failed", 137), 100,
        *LOST_FINISHED, "keep until +660", "keep until +660"),
    row("pod failed with the agent OOM-killed, after retention", finished("Failed", 137), 700,
        *LOST_FINISHED, "delete failed", "delete failed"),
    row("failed pod whose job we already failed", finished("Failed", 137, annotations=REPORTED), 100,
        "keep until +660"),
    row("failed pod we already notified about", finished("Failed", 137, annotations=NOTIFIED), 700,
        "delete failed"),
    row("evicted pending pod", EVICTED, 100, *LOST_FINISHED, "keep until +650", "keep until +650"),
    row("pending pod deleted before the agent acquired the job", pod(), 100, *LOST_FINISHED, "keep", "keep",
        deleted=True),
    row("deleted pod whose init container failed", pod(init=INIT_FAILED), 100,
        CHECK.format("init_container"), "fail init_container", "notify init_container", "keep", "keep",
        deleted=True),
    row("deleted pod after the agent ran the job", agent_done(), 100, "keep", deleted=True),
    row("deleted pod whose job we already failed", pod(annotations=REPORTED), 100, "keep", deleted=True),
    row("deleted pod we already notified about", pod(annotations=NOTIFIED), 100, "keep", deleted=True),
    row("terminating pod before its deadline", running_with(deletion=T0 + 100), 50, "keep until +100"),
    row("pod stuck terminating past its deadline", running_with(deletion=T0 + 100), 100,
        *LOST_FINISHED, "keep", "keep"),
    row("pod on a lost node (phase Unknown)", pod(phase="Unknown"), 100,
        *failing("lost_before_acquire", "pod_lost")),
    row("agent done while a sidecar runs, inside the grace", agent_done(), 69, "keep until +70"),
    row("agent done while a sidecar runs, after the grace", agent_done(), 70, "delete agent_done"),
    row("live pod whose job we already failed", stuck("ImagePullBackOff", annotations=REPORTED), 40,
        "delete failure_reported grace 0"),
    row("pod without a job label", pod(labels={"app": "other"}, phase="Failed"), 10_000, "keep"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "job_state"),
    [(r, s) for r in ROWS for s in STATES],
    ids=[f"{r.situation} | job {s or 'unknown'}" for r in ROWS for s in STATES],
)
def test_decision_table(case: Row, job_state: str | None) -> None:
    view = PodView.from_raw(case.raw, deleted=case.deleted)
    action = decide(view, job_state=job_state, now=T0 + case.at, policy=POLICY)
    assert summarise(action) == case.expected[job_state]
    assert isinstance(action, Keep) or action.reason in REASONS


IMAGE_PENDING = PULLING


@pytest.mark.parametrize(
    ("job_state", "expected"),
    [
        ("reserved", "fail image_pull, delete"),
        ("assigned", "notify image_pull"),
        ("accepted", "notify image_pull"),
        ("timing_out", "notify image_pull"),
        ("canceling", CANCELLED),
        ("timed_out", ENDED),
        ("expired", ENDED),
        ("skipped", ENDED),
        ("broken", ENDED),
        ("waiting", "keep, poll"),
        ("something-new", "keep, poll"),
        ("unknown", "delete job_unknown grace 0"),
    ],
)
def test_other_job_states_group_as_failable_owned_ended_or_unrunnable(job_state: str, expected: str) -> None:
    action = decide(PodView.from_raw(IMAGE_PENDING), job_state=job_state, now=T0 + 40, policy=POLICY)
    assert summarise(action) == expected


@pytest.mark.parametrize("case", ROWS, ids=[r.situation for r in ROWS])
def test_a_job_is_never_failed_twice_once_the_pod_carries_the_marker(case: Row) -> None:
    raw = {**case.raw, "metadata": {**case.raw["metadata"], "annotations": REPORTED}}
    view = PodView.from_raw(raw, deleted=case.deleted)
    for job_state in (*STATES, "reserved"):
        for at in (case.at, case.at + 10_000):
            action = decide(view, job_state=job_state, now=T0 + at, policy=POLICY)
            assert not isinstance(action, FailJob | CheckJobState | Notify), (job_state, at, action)


def test_image_failure_message_is_the_container_table() -> None:
    view = PodView.from_raw(IMAGE_PENDING)
    action = decide(view, job_state="scheduled", now=T0 + 40, policy=POLICY)
    assert action == FailJob("image_pull", fm.image_failure_message([view.containers[0]]), then_delete=True)


def test_notify_message_is_one_short_line() -> None:
    action = decide(PodView.from_raw(IMAGE_PENDING), job_state="running", now=T0 + 40, policy=POLICY)
    assert action == Notify(
        "image_pull",
        "Image pull failure; the job will fail once the agent times out. "
        'container-0: ImagePullBackOff (Back-off pulling image "no-such:1")',
    )


def test_pending_timeout_message_names_the_wait_and_the_conditions() -> None:
    view = PodView.from_raw(pod(conditions=UNSCHEDULABLE, started=None, statuses=False))
    action = decide(view, job_state="scheduled", now=T0 + 905, policy=POLICY)
    assert action == FailJob("pending_timeout", fm.pending_timeout_message(905, view.conditions))


def test_lost_pod_message_explains_it_and_the_pod_is_not_deleted_again() -> None:
    view = PodView.from_raw(finished("Failed", 137))
    action = decide(view, job_state="reserved", now=T0 + 100, policy=POLICY)
    assert action == FailJob("lost_before_acquire", fm.lost_message(view), then_delete=False)


def test_init_failure_beats_an_image_failure_in_the_same_pod() -> None:
    view = PodView.from_raw(pending_with(Ctr("container-0", state=PULL), init=INIT_FAILED))
    action = decide(view, job_state="scheduled", now=T0 + 40, policy=POLICY)
    assert summarise(action) == "fail init_container, delete"


def test_the_earliest_deadline_is_the_recheck_time() -> None:
    view = PodView.from_raw(pending_with(Ctr("container-0", state=PULL), started=T0 + 2))
    action = decide(view, job_state=None, now=T0 + 5, policy=replace(POLICY, pending_timeout_seconds=20))
    assert action == Keep(recheck_at=T0 + 20, poll_job_state=True)


def test_policy_timings_move_the_deadlines() -> None:
    policy = LifecyclePolicy(
        succeeded_retention_seconds=0, image_pull_grace_seconds=5, agent_done_grace_seconds=0
    )

    def at(raw: dict[str, Any], seconds: float) -> str:
        return summarise(decide(PodView.from_raw(raw), job_state=None, now=T0 + seconds, policy=policy))

    assert at(finished("Succeeded", 0), 60) == "delete succeeded"
    assert at(IMAGE_PENDING, 7) == "check image_pull"
    assert at(agent_done(), 60) == "delete agent_done"


def test_abort_grace_is_used_when_cleaning_up_pods_that_never_ran() -> None:
    policy = LifecyclePolicy(abort_grace_seconds=5)
    action = decide(PodView.from_raw(pod()), job_state="canceled", now=T0 + 1, policy=policy)
    assert action == Delete("cancelled", 5)


def test_decide_is_pure_same_inputs_give_the_same_action() -> None:
    view = PodView.from_raw(IMAGE_PENDING)
    first = decide(view, job_state="running", now=T0 + 40, policy=POLICY)
    assert all(decide(view, job_state="running", now=T0 + 40, policy=POLICY) == first for _ in range(3))


def test_actions_print_as_readable_values() -> None:
    assert repr(Delete("succeeded")) == "Delete(reason='succeeded', grace_seconds=None)"
    assert repr(Keep(recheck_at=5.0)) == "Keep(recheck_at=5.0, poll_job_state=False)"
    assert repr(CheckJobState("image_pull")) == "CheckJobState(reason='image_pull')"


def test_policy_defaults_match_the_issue() -> None:
    assert LifecyclePolicy() == LifecyclePolicy(
        succeeded_retention_seconds=30,
        failed_retention_seconds=600,
        image_pull_grace_seconds=30,
        pending_timeout_seconds=900,
        agent_done_grace_seconds=10,
        abort_grace_seconds=0,
    )


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("failed_retention_seconds", -1, "must be 0 or more"),
        ("pending_timeout_seconds", float("nan"), "must be a number of seconds"),
        ("image_pull_grace_seconds", float("inf"), "must be a number of seconds"),
        ("agent_done_grace_seconds", True, "must be a number of seconds"),
        ("succeeded_retention_seconds", "30", "must be a number of seconds"),
    ],
)
def test_a_bad_policy_value_is_refused_with_its_key(field: str, value: object, complaint: str) -> None:
    with pytest.raises(ValueError, match=f"lifecycle.{field}: {complaint}"):
        LifecyclePolicy(**{field: value})  # type: ignore[arg-type]


_STATE = st.sampled_from(
    [
        waiting("ContainerCreating"),
        waiting("ErrImagePull"),
        waiting("InvalidImageName"),
        waiting("CreateContainerError"),
        running(),
        terminated(0),
        terminated(1, reason="Error"),
        terminated(137, reason="OOMKilled", signal=9),
        {},
    ]
)
_CTRS = st.lists(
    st.tuples(st.sampled_from(["agent", "checkout", "container-0", "proxy"]), _STATE), max_size=4
)
_TIME = st.one_of(st.none(), st.floats(min_value=T0 - 100, max_value=T0 + 2000))


@st.composite
def _pods(draw: st.DrawFn) -> PodView:
    raw = pod(
        phase=draw(st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown", ""])),
        init=[Ctr(n, state=s, sidecar=draw(st.booleans())) for n, s in draw(_CTRS)],
        main=[Ctr(n, state=s) for n, s in draw(_CTRS)],
        conditions=draw(st.sampled_from([[], UNSCHEDULABLE])),
        started=draw(_TIME),
        deletion=draw(_TIME),
        annotations=draw(st.sampled_from([{}, REPORTED, NOTIFIED])),
        reason=draw(st.sampled_from(["", "Evicted"])),
    )
    return PodView.from_raw(raw, deleted=draw(st.booleans()))


_JOB_STATES = st.sampled_from(
    [None, "scheduled", "reserved", "running", "accepted", "finished", "canceled", "waiting"]
)


@settings(max_examples=400, deadline=None)
@given(view=_pods(), job_state=_JOB_STATES, now=st.floats(min_value=T0, max_value=T0 + 3000))
def test_any_pod_gets_an_action_that_respects_the_job_state(
    view: PodView, job_state: str | None, now: float
) -> None:
    action = decide(view, job_state=job_state, now=now, policy=POLICY)
    is_live = (
        not view.deleted and view.deletion_timestamp is None and view.phase not in ("Succeeded", "Failed")
    )
    if isinstance(action, FailJob):
        assert job_state in ("scheduled", "reserved")
        assert not view.failure_reported
        assert action.then_delete == is_live
        assert action.message
    if isinstance(action, Notify):
        assert job_state in ("running", "accepted")
        assert not view.failure_notified
        assert 0 < len(action.message) <= 255
    if isinstance(action, CheckJobState):
        assert job_state is None
    if isinstance(action, Keep) and action.recheck_at is not None:
        assert action.recheck_at > now  # a timer in the past would spin
    if not isinstance(action, Keep):
        assert action.reason in REASONS
    if isinstance(action, Delete):
        assert not view.deleted and view.deletion_timestamp is None  # never delete what is going
