"""A configured provider that cannot be used: its settings are wrong (a malformed API key, no key
at all, an unknown setting, a key in a file others can read). flowd starts anyway and keeps
serving every other provider; this one answers every request that needs it (run, find_instances,
volumes) with the error that says what is wrong and how to fix it, and `flow daemon status` shows
it. Tasks it had before are left as they are (not watched, not failed) until flowd starts again
with settings that work, and then found again as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from returns.result import Failure, Result

from flow.domain.errors import DomainError
from flow.domain.instances.matching import Offer
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import TaskRecord, TaskState
from flow.domain.volumes.rules import Volume
from flowd.providers.base import Capabilities, Launched, Placement, Queued, Recovered, Refused, Running, StateType
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)


class UnusableProvider:
    def __init__(self, name: str, kind: str, error: DomainError, state_type: StateType, tasks_root: Path) -> None:
        self.name = name
        self.kind = kind
        self._error = error
        self._state_type = state_type
        self._tasks_root = tasks_root
        self.capabilities = Capabilities(offers=self, volumes=self, health=self)

    @property
    def state_type(self) -> StateType:
        return self._state_type

    def problem(self) -> DomainError:
        return self._error

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        return Failure(self._error)

    def launch(self, record: TaskRecord) -> Launched[Any]:
        return Refused(self._error)

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        return Failure(self._error)

    def watch(self, record: TaskRecord, state: Any) -> None:
        log.warning(
            "task %s stays as it is: its provider %s cannot be used until its settings are fixed",
            record.task_id,
            self.name,
        )

    def cancel(self, record: TaskRecord, state: Any) -> None:
        log.warning("cannot cancel task %s: provider %s cannot be used: %s", record.task_id, self.name, self._error)

    def recover(self, record: TaskRecord, state: Any) -> Recovered[Any]:
        return Running(state) if record.state is TaskState.RUNNING else Queued(state)

    def recovered(self) -> None:
        pass

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        return [TaskDir(self._tasks_root / record.task_id).output]

    def close(self) -> None:
        pass

    # --- volumes (a provider that keeps its own answers for them too) ---------------------

    def create_volume(
        self, name: object, size_gb: object, interface: object, iops: object, region: str | None = None
    ) -> Result[Volume, DomainError]:
        return Failure(self._error)

    def list_volumes(self) -> Result[list[tuple[Volume, tuple[str, ...]]], DomainError]:
        return Failure(self._error)

    def get_volume(self, volume_id: str) -> Result[tuple[Volume, tuple[str, ...]], DomainError]:
        return Failure(self._error)

    def delete_volume(self, volume_id: str) -> Result[Volume, DomainError]:
        return Failure(self._error)
