"""Waits with a deadline that a cancel always ends (app.waiting)."""

from __future__ import annotations

import asyncio

import pytest

from app.main import await_chain
from app.waiting import wait_set, within


async def _loop_cancelled_as_its_event_is_set() -> bool:
    """A stage loop shaped like ours, cancelled in the same loop turn its event is set."""
    event = asyncio.Event()
    turns = 0

    async def stage_loop() -> None:
        nonlocal turns
        while True:
            turns += 1
            await wait_set(event, 30)
            event.clear()

    task = asyncio.create_task(stage_loop())
    while turns == 0:
        await asyncio.sleep(0)
    event.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    return task.cancelled()  # asyncio.run would cancel a loop left running once more on its way out


def test_a_cancel_that_arrives_with_the_event_stops_the_loop() -> None:
    # asyncio.wait_for on 3.11 returns here instead of raising, and the loop runs on (cpython#86296).
    assert asyncio.run(_loop_cancelled_as_its_event_is_set())


def test_wait_set_says_whether_the_event_came() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_set(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        came = await wait_set(event, 5)
        already = await wait_set(event, None)
        return timed_out, came, already

    assert asyncio.run(scenario()) == (False, True, True)


def test_within_returns_the_result_or_raises_timeout_and_cancels_the_step() -> None:
    async def scenario() -> None:
        assert await within(asyncio.sleep(0, result="done"), 1) == "done"
        slow = asyncio.ensure_future(asyncio.sleep(30))
        with pytest.raises(TimeoutError):
            await within(slow, 0.01)
        assert slow.cancelled()

    asyncio.run(scenario())


def test_await_chain_names_every_coroutine_a_stuck_task_waits_in() -> None:
    async def inner(gate: asyncio.Event) -> None:
        await gate.wait()

    async def outer(gate: asyncio.Event) -> None:
        await inner(gate)

    async def scenario() -> list[str]:
        gate = asyncio.Event()
        task = asyncio.create_task(outer(gate))
        await asyncio.sleep(0)
        chain = await_chain(task)
        gate.set()
        await task
        return chain

    chain = asyncio.run(scenario())
    assert [where.rsplit(" ", 1)[-1] for where in chain[:3]] == ["outer", "inner", "wait"]
