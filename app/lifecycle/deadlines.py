"""``Deadlines``: one pending deadline per key, popped in time order (the lifecycle runner's timers).

Input: ``set(key, at)`` each time a decision says "look again at ``at``" (a retention, a grace, a
pending timeout, a retry back-off). Output: ``pop_due(now)``, the keys whose deadline has come, and
``next_at()``, how long the loop may sleep. Every pending or finished pod has a deadline, so this is
a heap, not a scan; a key set again simply replaces its deadline.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Entries replaced or cancelled stay in the heap until they surface; past this much slack the heap is
# rebuilt, because a pod re-decided on every event pushes the same deadline again each time.
_SLACK = 64


class Deadlines(Generic[K]):
    def __init__(self) -> None:
        self._at: dict[K, float] = {}  # the truth
        self._heap: list[tuple[float, int, K]] = []  # the order; the counter keeps keys uncompared
        self._pushes = 0

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def set(self, key: K, at: float) -> None:
        if self._at.get(key) == at:
            return
        self._at[key] = at
        self._push(at, key)
        if len(self._heap) > 2 * len(self._at) + _SLACK:
            self._rebuild()

    def cancel(self, key: K) -> None:
        self._at.pop(key, None)

    def pop_due(self, now: float) -> list[K]:
        """Keys whose deadline is at or before ``now``, earliest first; they are removed."""
        due: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            if self._at.get(key) == at:
                del self._at[key]
                due.append(key)
        return due

    def next_at(self) -> float | None:
        """The earliest pending deadline, or None."""
        while self._heap and self._at.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    def _push(self, at: float, key: K) -> None:
        self._pushes += 1
        heapq.heappush(self._heap, (at, self._pushes, key))

    def _rebuild(self) -> None:
        self._heap = []
        for key, at in self._at.items():
            self._push(at, key)
        heapq.heapify(self._heap)
