"""Sharing one machine's GPUs between tasks: a pure FIFO scheduler.

A task asks for GPUs (a count, and optionally a model and a minimum memory per GPU). Requests
wait in submission order; the head of the queue starts as soon as enough free GPUs satisfy it,
and nothing behind it jumps ahead (so a big request is never starved by small ones). A request
no GPU set of this machine could ever satisfy is refused at once instead of waiting forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attrs import frozen

from flow.domain.instances.gpu_inventory import Gpu


@frozen
class GpuRequest:
    task_id: str
    count: int
    model: str | None = None  # None: any model
    min_memory_gb: int = 0

    def accepts(self, gpu: Gpu) -> bool:
        return (self.model is None or gpu.model == self.model) and gpu.memory_gb >= self.min_memory_gb

    def describe(self) -> str:
        what = self.model or "GPU"
        memory = f" with at least {self.min_memory_gb} GB" if self.min_memory_gb else ""
        return f"{self.count}x {what}{memory}"


def fits_ever(request: GpuRequest, inventory: Sequence[Gpu]) -> bool:
    """Whether the machine, fully idle, could run the request."""
    return sum(1 for gpu in inventory if request.accepts(gpu)) >= request.count


def choose_gpus(request: GpuRequest, free: Sequence[Gpu]) -> tuple[int, ...] | None:
    """The GPUs for a request among the free ones, or None. Prefers the smallest GPUs that
    qualify (keeping big ones for requests that need them), then the lowest indexes."""
    eligible = sorted((g for g in free if request.accepts(g)), key=lambda g: (g.memory_gb, g.index))
    if len(eligible) < request.count:
        return None
    return tuple(sorted(g.index for g in eligible[: request.count]))


def next_starts(
    inventory: Sequence[Gpu],
    busy: Mapping[str, tuple[int, ...]],
    queue: Sequence[GpuRequest],
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Which queued requests start now, with their GPUs: the queue's head while it fits, in order.
    `busy` maps running tasks to their GPU indexes."""
    taken = {index for indexes in busy.values() for index in indexes}
    free = [gpu for gpu in inventory if gpu.index not in taken]
    starts: list[tuple[str, tuple[int, ...]]] = []
    for request in queue:
        chosen = choose_gpus(request, free)
        if chosen is None:
            break  # FIFO: nothing overtakes a waiting request
        starts.append((request.task_id, chosen))
        free = [gpu for gpu in free if gpu.index not in chosen]
    return tuple(starts)
