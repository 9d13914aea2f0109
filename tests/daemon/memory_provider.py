"""A provider whose tasks live in this process: a real implementation of flowd's provider contract
(flowd.providers.base), driven by the test instead of by processes or a cluster.

Tasks are accepted (`Queued`) or refused as the test decides; the test then starts them, writes
their output (to real files, which the engine streams), and ends them, exactly as a provider's
own threads would report it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason
from flow.domain.instances.instance_types import CPU_INSTANCE
from flow.domain.instances.matching import Offer
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import Exited, Lost, Preempted, Started, TaskRecord
from flowd.providers.base import (
    Capabilities,
    Launched,
    Placement,
    Queued,
    Recovered,
    Refused,
    Reporter,
    Running,
    StateType,
)

REGION = "memory"


@frozen
class MemoryTask:
    task_id: str
    started: bool = False


def _legacy(data: Mapping[str, Any]) -> MemoryTask | None:
    return MemoryTask(str(data["id"])) if "id" in data else None


class MemoryProvider:
    kind = "memory"

    def __init__(self, root: Path, reporter: Reporter, name: str = "memory") -> None:
        self.name = name
        self._root = root
        self._report = reporter
        self.capabilities = Capabilities(offers=self, results=self)
        self.refusal: DomainError | None = None  # what the next launches answer
        self.offers_error: DomainError | None = None  # what find_instances answers instead
        self.launch_raises: Exception | None = None
        self.launched: list[str] = []
        self.watched: list[str] = []
        self.cancelled: list[str] = []
        self.recovered_states: list[MemoryTask | None] = []
        self.results: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def state_type(self) -> StateType:
        return StateType(classes=(MemoryTask,), legacy=_legacy)

    # --- the contract ------------------------------------------------------------------------

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        if self.offers_error is not None:
            return Failure(self.offers_error)
        return Success((Offer("memory-cpu", self.name, CPU_INSTANCE, 0, REGION, 1),))

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        if config.region not in (None, REGION):
            return Failure(
                DomainError(ErrorReason.RESOURCE_NOT_AVAILABLE, f"no region {config.region}", ("use region memory",))
            )
        return Success(Placement(instance_type="cpu"))

    def launch(self, record: TaskRecord) -> Launched[MemoryTask]:
        if self.launch_raises is not None:
            raise self.launch_raises
        if self.refusal is not None:
            return Refused(self.refusal)
        with self._lock:
            self.launched.append(record.task_id)
        self.log(record.task_id).parent.mkdir(parents=True, exist_ok=True)
        self.log(record.task_id).touch()
        return Queued(MemoryTask(record.task_id))

    def watch(self, record: TaskRecord, state: MemoryTask) -> None:
        with self._lock:
            self.watched.append(record.task_id)

    def cancel(self, record: TaskRecord, state: MemoryTask) -> None:
        with self._lock:
            self.cancelled.append(record.task_id)
        self._report(record.task_id, Lost(reason="cancelled"))

    def recover(self, record: TaskRecord, state: MemoryTask | None) -> Recovered[MemoryTask]:
        self.recovered_states.append(state)
        if state is None:
            return self.launch(record)
        return Running(state) if state.started else Queued(state)

    def recovered(self) -> None:
        pass

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        return [self.log(record.task_id)]

    def read_result(self, task_id: str) -> bytes | None:
        return self.results.get(task_id)

    def close(self) -> None:
        pass

    # --- what the test drives ----------------------------------------------------------------

    def log(self, task_id: str) -> Path:
        return self._root / task_id / "output.log"

    def start(self, task_id: str) -> None:
        self._report(task_id, Started(), MemoryTask(task_id, started=True))

    def write(self, task_id: str, data: bytes) -> None:
        with open(self.log(task_id), "ab") as handle:
            handle.write(data)

    def end(self, task_id: str, code: int) -> None:
        self._report(task_id, Exited(exit_code=code))

    def preempt(self, task_id: str, reason: str = "capacity reclaimed") -> None:
        self._report(task_id, Preempted(reason=reason))
