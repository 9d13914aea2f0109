"""The provider seam: what flowd asks of local, slurm and mithril alike.

Providers speak domain types only (no protobuf, no gRPC). They never change task state
themselves: they report what they observe (`Started`, `Exited`, `Lost`, ...) through the
`Reporter` the engine gives them, and the engine applies it through the pure state machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from attrs import frozen
from returns.result import Result

from flow.domain.errors import DomainError
from flow.domain.instances.matching import Offer
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import TaskEvent, TaskRecord
from flowd.exec_session import ExecSession


class Reporter(Protocol):
    """How providers tell the engine what they observed; `runtime` replaces the facts stored
    for the task (e.g. the pid of a task that waited for GPUs and has just started)."""

    def __call__(self, task_id: str, event: TaskEvent, runtime: Runtime | None = None) -> None: ...


Runtime = dict[str, Any]


@frozen
class Placement:
    """Where a task will run: the canonical instance type and its price."""

    instance_type: str
    cost_per_hour_micros: int = 0


class LaunchError(Exception):
    """The task could not be started; the message says why, in words a user can act on."""


class Provider(Protocol):
    name: str
    kind: str

    def offers(self) -> tuple[Offer, ...]:
        """What this provider can run now (find_instances and placement match against these)."""
        ...

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        """Decides, before anything is launched, whether and where the task can run."""
        ...

    def launch(self, record: TaskRecord) -> Runtime:
        """Starts the task and returns the facts needed to find it again (raises LaunchError).
        A runtime with "queued": True means it waits (for GPUs, in a Slurm queue): the task stays
        PENDING until the provider reports Started."""
        ...

    def watch(self, record: TaskRecord, runtime: Runtime) -> None:
        """Begins observing a launched task; its end is reported through the Reporter."""
        ...

    def cancel(self, record: TaskRecord, runtime: Runtime) -> None:
        """Asks the task to stop; the end is reported through the Reporter as usual."""
        ...

    def recover(self, record: TaskRecord, runtime: Runtime) -> Runtime | None:
        """After a daemon restart: report how a task that ended meanwhile ended (and return
        None), or return the runtime of a task that is running, found running, or had never
        started and was launched now; the engine then watches it."""
        ...

    def exec(
        self, record: TaskRecord, runtime: Runtime, argv: Sequence[str], tty: bool, rows: int, columns: int, term: str
    ) -> ExecSession:
        """Starts `argv` (empty: a shell) inside the running task's environment; raises
        LaunchError when it cannot."""
        ...

    def recovered(self) -> None:
        """Called once every unfinished task has been through `recover` after a restart."""
        ...

    def log_path(self, task_id: str) -> Path: ...

    def read_result(self, task_id: str) -> bytes | None:
        """The result document a finished function-call task wrote, if it wrote one."""
        ...

    def close(self) -> None: ...
