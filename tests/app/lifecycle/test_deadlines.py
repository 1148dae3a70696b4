"""``Deadlines``: due keys in time order, replaced and cancelled deadlines never fire, bounded heap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.lifecycle.deadlines import Deadlines


def test_due_keys_come_out_earliest_first_and_only_once() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("b", 20)
    deadlines.set("a", 10)
    deadlines.set("c", 30)
    assert deadlines.next_at() == 10
    assert deadlines.pop_due(25) == ["a", "b"]
    assert deadlines.pop_due(25) == []
    assert deadlines.next_at() == 30 and len(deadlines) == 1


def test_a_replaced_deadline_fires_at_its_new_time_only() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("pod", 10)
    deadlines.set("pod", 50)
    assert deadlines.pop_due(20) == []
    assert deadlines.next_at() == 50
    assert deadlines.pop_due(50) == ["pod"]


def test_a_cancelled_deadline_never_fires() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("pod", 10)
    deadlines.cancel("pod")
    assert deadlines.next_at() is None and deadlines.pop_due(100) == [] and "pod" not in deadlines


def test_setting_the_same_deadlines_over_and_over_keeps_the_heap_small() -> None:
    deadlines: Deadlines[int] = Deadlines()
    for round_ in range(200):
        for key in range(10):
            deadlines.cancel(key)  # the runner drops a timer before each decision
            deadlines.set(key, 1000.0 + key + round_ % 3)
    assert deadlines.heap_size <= 2 * len(deadlines) + 64 + 1


@given(
    st.lists(st.tuples(st.integers(0, 5), st.floats(0, 100), st.booleans()), max_size=60), st.floats(0, 100)
)
def test_pop_due_agrees_with_a_plain_dict(ops: list[tuple[int, float, bool]], now: float) -> None:
    deadlines: Deadlines[int] = Deadlines()
    model: dict[int, float] = {}
    for key, at, cancel in ops:
        if cancel:
            deadlines.cancel(key)
            model.pop(key, None)
        else:
            deadlines.set(key, at)
            model[key] = at
    expected = sorted((at, key) for key, at in model.items() if at <= now)
    assert sorted(deadlines.pop_due(now)) == sorted(key for _, key in expected)
    remaining = [at for at in model.values() if at > now]
    assert deadlines.next_at() == (min(remaining) if remaining else None)
