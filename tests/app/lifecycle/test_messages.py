"""Failure texts are exact, aligned, sorted and capped; events come from raw Event dicts."""

from __future__ import annotations

from typing import Any

import pytest

from app.lifecycle import messages as fm
from app.podview import PodView
from tests.app.pods import AGENT_IMAGE, POD_NAME, T0, Ctr, condition, event, pod, running, terminated, waiting

PULL_MESSAGE = 'Back-off pulling image "no-such/image:1"'


def _view(**kwargs: Any) -> PodView:
    return PodView.from_raw(pod(**kwargs))


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (-5, "0s"),
        (45, "45s"),
        (900, "15m"),
        (905, "15m5s"),
        (3723, "1h2m3s"),
        (7200, "2h"),
    ],
)
def test_durations_read_like_go_durations_without_zero_parts(seconds: float, expected: str) -> None:
    assert fm.format_duration(seconds) == expected


def test_cut_folds_whitespace_and_marks_the_cut() -> None:
    assert fm.cut("a\n  b\tc", 10) == "a b c"
    assert fm.cut("abcdefghij", 5) == "abcd…"


def test_tables_align_columns_and_strip_trailing_space() -> None:
    table = fm.format_table(["A", "LONGER", "C"], [["xyz", "1", ""], ["q", "22", "end"]])
    assert table == "A    LONGER  C\nxyz  1\nq    22      end"


def test_tables_are_capped_in_rows_and_cell_width() -> None:
    rows = [[f"row{i}", "x" * 50] for i in range(13)]
    table = fm.format_table(["NAME", "VALUE"], rows, widths=[10, 8], max_rows=3)
    assert table.splitlines() == [
        "NAME  VALUE",
        "row0  xxxxxxx…",
        "row1  xxxxxxx…",
        "row2  xxxxxxx…",
        "… and 10 more",
    ]


def test_image_failure_lists_containers_sorted_with_quoted_images() -> None:
    view = _view(
        main=[
            Ctr("container-0", "no-such/image:1", waiting("ImagePullBackOff", PULL_MESSAGE)),
            Ctr("agent", AGENT_IMAGE, running()),
            Ctr(
                "checkout",
                "bad image",
                waiting("InvalidImageName", 'couldn\'t parse image reference "bad image"'),
            ),
        ]
    )
    stuck = [c for c in view.all_containers if c.waiting_reason]
    assert fm.image_failure_message(stuck) == (
        "The following containers could not be created or their images could not be pulled:\n"
        "CONTAINER    IMAGE              REASON            MESSAGE\n"
        'checkout     "bad image"        InvalidImageName  couldn\'t parse image reference "bad image"\n'
        'container-0  "no-such/image:1"  ImagePullBackOff  Back-off pulling image "no-such/image:1"'
    )


def test_init_failure_table_shows_exit_code_signal_reason_and_message() -> None:
    view = _view(
        init=[
            Ctr("copy-agent", AGENT_IMAGE, terminated(1, reason="Error", message="tini-static not found")),
            Ctr("imagecheck-0", "alpine:3", terminated(137, reason="Error", signal=9)),
        ]
    )
    assert fm.init_failure_message(view.init_containers) == (
        "The following init containers failed:\n"
        "CONTAINER     EXIT CODE  SIGNAL  REASON  MESSAGE\n"
        "copy-agent    1                  Error   tini-static not found\n"
        "imagecheck-0  137        9       Error"
    )


def test_pending_timeout_names_the_wait_and_lists_conditions_sorted_by_type() -> None:
    conditions = _view(
        conditions=[
            condition(
                "PodScheduled", "False", "Unschedulable", "0/3 nodes are available: 3 Insufficient cpu."
            ),
            condition("Initialized", "True"),
        ]
    ).conditions
    assert fm.pending_timeout_message(905, conditions) == (
        "The pod has been in Pending state for 15m5s without starting.\n"
        "CONDITION     STATUS  REASON         MESSAGE\n"
        "Initialized   True\n"
        "PodScheduled  False   Unschedulable  0/3 nodes are available: 3 Insufficient cpu."
    )


def test_pending_timeout_without_conditions_is_one_sentence() -> None:
    assert fm.pending_timeout_message(60, ()) == "The pod has been in Pending state for 1m without starting."


def test_lost_message_says_how_the_pod_ended_and_lists_abnormal_exits_only() -> None:
    view = _view(
        phase="Failed",
        reason="Evicted",
        message="The node was low on resource: memory.",
        main=[
            Ctr("agent", AGENT_IMAGE, terminated(137, reason="OOMKilled")),
            Ctr("checkout", state=terminated(0)),
        ],
    )
    assert fm.lost_message(view) == (
        f"The Kubernetes pod {POD_NAME} was evicted (The node was low on resource: memory.) before the "
        "buildkite-agent acquired this job, so the job never started.\n"
        "CONTAINER  EXIT CODE  SIGNAL  REASON     MESSAGE\n"
        "agent      137                OOMKilled"
    )
    assert fm.lost_notice(view) == (
        f"The Kubernetes pod {POD_NAME} was evicted (The node was low on resource: memory.) while the agent "
        "held the job. agent: OOMKilled"
    )


@pytest.mark.parametrize(
    ("kwargs", "how"),
    [
        ({"phase": "Pending"}, "was deleted"),
        ({"phase": "Failed"}, "failed"),
        ({"phase": "Unknown"}, "lost contact with its node"),
        ({"phase": "Failed", "reason": "Evicted"}, "was evicted"),
    ],
    ids=["deleted", "failed", "node-lost", "evicted-without-message"],
)
def test_lost_message_wording_follows_the_pod_state(kwargs: dict[str, Any], how: str) -> None:
    message = fm.lost_message(_view(**kwargs))
    sentence = f"The Kubernetes pod {POD_NAME} {how} before the buildkite-agent acquired this job"
    assert message == f"{sentence}, so the job never started."


def test_notices_are_one_line_and_cropped_to_255_characters() -> None:
    view = _view(main=[Ctr(f"container-{i}", state=waiting("ErrImagePull", "x" * 80)) for i in range(5)])
    line = fm.notice("Image pull failure.", view.containers)
    assert len(line) == 255
    assert line.startswith("Image pull failure. container-0: ErrImagePull (xxx")
    assert line.endswith("…")
    assert "\n" not in line


EVENTS = [
    event("Scheduled", "Successfully assigned buildkite/x to node-a", at=T0 + 1),
    event("BackOff", PULL_MESSAGE, at=T0 + 50, kind="Warning", count=4),
    event("Failed", "Error: ErrImagePull", at=T0 + 50, kind="Warning", count=2),
]


def test_events_table_is_newest_first_with_ties_by_reason() -> None:
    assert fm.events_table(EVENTS, now=T0 + 60) == (
        "Recent Kubernetes events for the pod:\n"
        "LAST SEEN  COUNT  TYPE     REASON     MESSAGE\n"
        '10s        4      Warning  BackOff    Back-off pulling image "no-such/image:1"\n'
        "10s        2      Warning  Failed     Error: ErrImagePull\n"
        "59s        1      Normal   Scheduled  Successfully assigned buildkite/x to node-a"
    )


def test_events_table_keeps_only_the_newest_n() -> None:
    table = fm.events_table(EVENTS, now=T0 + 60, limit=1)
    assert table.splitlines()[2:] == [
        '10s        4      Warning  BackOff  Back-off pulling image "no-such/image:1"'
    ]


def test_new_style_events_use_series_and_event_time() -> None:
    events = [
        {"type": "Warning", "reason": "FailedMount", "eventTime": "2026-01-01T00:00:30.000000Z"},
        {
            "type": "Normal",
            "reason": "Pulled",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:00:40Z"},
        },
        {"type": "Normal", "reason": "Undated"},
    ]
    rows = fm.events_table(events, now=T0 + 60).splitlines()[2:]
    assert rows == [
        "20s        3      Normal   Pulled",
        "30s        1      Warning  FailedMount",
        "?          1      Normal   Undated",
    ]


def test_hostile_events_are_skipped_or_read_as_blank() -> None:
    events: list[Any] = [
        "junk",
        7,
        {"count": True, "type": 3, "lastTimestamp": "soon", "series": "x", "metadata": []},
    ]
    assert fm.events_table(events, now=T0).splitlines()[2:] == ["?          1"]
    assert fm.events_table([], now=T0) == ""


def test_compose_detail_appends_events_after_a_blank_line() -> None:
    detail = fm.compose_detail("Headline.", EVENTS, now=T0 + 60)
    assert detail == "Headline.\n\n" + fm.events_table(EVENTS, now=T0 + 60)


def test_compose_detail_drops_oldest_event_rows_to_fit_the_byte_limit() -> None:
    detail = fm.compose_detail("Headline.", EVENTS, now=T0 + 60, max_bytes=300)
    assert detail == "Headline.\n\n" + fm.events_table(EVENTS, now=T0 + 60, limit=2)
    assert len(detail.encode()) <= 300


def test_compose_detail_without_events_is_the_message() -> None:
    assert fm.compose_detail("Headline.", [], now=T0) == "Headline."


def test_compose_detail_cuts_an_oversized_message_on_a_character_boundary() -> None:
    detail = fm.compose_detail("é" * 3000, EVENTS, now=T0, max_bytes=4096)
    assert len(detail.encode()) <= 4096
    assert detail.endswith("…")
    assert set(detail[:-1]) == {"é"}
