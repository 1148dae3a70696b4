"""Per-job phase timings: seconds from the first sighting of a job to each later phase."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from app.metrics import Metrics

# Enough for any burst we confirm at once; older entries are simply not timed.
MAX_TRACKED = 50_000


class Timings:
    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._clock = clock
        self._started: OrderedDict[str, float] = OrderedDict()

    def start(self, uuid: str) -> None:
        if uuid not in self._started:
            self._started[uuid] = self._clock()
            if len(self._started) > MAX_TRACKED:
                self._started.popitem(last=False)

    def observe(self, uuid: str, phase: str) -> None:
        started = self._started.get(uuid)
        if started is not None:
            self._metrics.phase_seconds.labels(phase).observe(self._clock() - started)
        if phase == "pod_created":
            self._started.pop(uuid, None)
