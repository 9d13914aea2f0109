"""Task states: the names every client sees. (Its own small module: the CLI's start-up imports it
without the rest of the core.)"""

from __future__ import annotations

import enum
from typing import Final


class TaskState(enum.StrEnum):
    """Also the SDK's public `flow.TaskStatus`; prints as its name, e.g. "RUNNING".

    Compares equal to its name in any case (`== "completed"` and `== "COMPLETED"`), and
    `TaskState("completed")` is COMPLETED: code written for the lower-case states of the Mithril
    platform's SDK (flow-compute) works unchanged. Its hash stays that of the upper-case name, so
    set and dict lookups by a lower-case string (`state in {"completed"}`) still miss."""

    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str) and not isinstance(other, TaskState):
            return self.value == other.upper()
        return self is other if isinstance(other, TaskState) else NotImplemented

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.value)

    @classmethod
    def _missing_(cls, value: object) -> TaskState | None:
        return cls.__members__.get(value.upper()) if isinstance(value, str) else None


TERMINAL_STATES: Final = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.PREEMPTED})
