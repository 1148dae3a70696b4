"""A crashed stage loop is restarted, not left dead; cancellation still stops it."""

from __future__ import annotations

import asyncio

from app.main import supervised


def test_a_crashing_loop_is_restarted_until_it_returns() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")

    asyncio.run(supervised("flaky", flaky, backoff=(0.0,)))
    assert len(runs) == 3


def test_cancelling_a_supervised_loop_stops_it() -> None:
    async def scenario() -> None:
        started = asyncio.Event()

        async def forever() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(supervised("forever", forever, backoff=(0.0,)))
        await started.wait()
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)

    asyncio.run(scenario())
