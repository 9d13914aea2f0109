"""Who holds which of this machine's GPUs, and who waits for them (the local provider's queue).

The decisions are the pure FIFO scheduler's (flow.domain.instances.gpu_scheduler); this keeps its
inputs (the queue in start order: higher TaskConfig.priority first, then submission order, as
flow.domain.task.dependencies.start_order; the GPUs each running task holds) under one lock.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from flow.domain.instances.gpu_inventory import Gpu
from flow.domain.instances.gpu_scheduler import GpuRequest, next_starts
from flow.domain.task.lifecycle import TaskRecord


class GpuQueue:
    def __init__(self, gpus: Sequence[Gpu]) -> None:
        self._gpus = tuple(gpus)
        self._lock = threading.Lock()
        self._queue: list[tuple[GpuRequest, TaskRecord]] = []
        self._busy: dict[str, tuple[int, ...]] = {}

    def take(self, request: GpuRequest, record: TaskRecord) -> tuple[int, ...] | None:
        """Joins the queue; the GPUs when it is this task's turn now (it then holds them), else
        None (it waits, and `ready` hands it its GPUs later)."""
        with self._lock:
            self._join(request, record)
            mine = dict(next_starts(self._gpus, self._busy, [r for r, _ in self._queue])).get(record.task_id)
            if mine is None:
                return None
            self._queue = [(r, t) for r, t in self._queue if r.task_id != record.task_id]
            self._busy[record.task_id] = mine
            return mine

    def wait(self, request: GpuRequest, record: TaskRecord) -> None:
        """Back in line without starting (after a restart; the queue moves once all are back)."""
        with self._lock:
            self._join(request, record)

    def _join(self, request: GpuRequest, record: TaskRecord) -> None:
        """In start order: behind every task of the same or a higher priority."""
        bisect.insort_right(self._queue, (request, record), key=_start_key)

    def hold(self, task_id: str, gpus: Sequence[int]) -> None:
        """A running task found again after a restart keeps its GPUs."""
        with self._lock:
            self._busy[task_id] = tuple(gpus)

    def is_waiting(self, task_id: str) -> bool:
        with self._lock:
            return any(r.task_id == task_id for r, _ in self._queue)

    def release(self, task_id: str) -> bool:
        """The task let go of its GPUs, or left the queue. Returns whether anything changed
        (then `ready` may have work)."""
        with self._lock:
            freed = self._busy.pop(task_id, None)
            before = len(self._queue)
            self._queue = [(r, t) for r, t in self._queue if r.task_id != task_id]
            return freed is not None or len(self._queue) != before

    def ready(self) -> list[tuple[TaskRecord, tuple[int, ...]]]:
        """The waiting tasks whose turn it is now, each holding its GPUs from now on."""
        with self._lock:
            chosen: list[tuple[TaskRecord, tuple[int, ...]]] = []
            for task_id, gpus in next_starts(self._gpus, self._busy, [r for r, _ in self._queue]):
                record = next(t for r, t in self._queue if r.task_id == task_id)
                self._queue = [(r, t) for r, t in self._queue if r.task_id != task_id]
                self._busy[task_id] = gpus
                chosen.append((record, gpus))
            return chosen


def _start_key(entry: tuple[GpuRequest, TaskRecord]) -> tuple[int, float]:
    return (-entry[1].config.priority, entry[1].created_at)
