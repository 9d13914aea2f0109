"""Task states: the names every client sees. (Its own small module: the CLI's start-up imports it
without the rest of the core.)"""

from __future__ import annotations

import enum
from typing import Final


class TaskState(enum.StrEnum):
    """Also the SDK's public `flow.TaskStatus`; prints as its name, e.g. "RUNNING"."""

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


TERMINAL_STATES: Final = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.PREEMPTED})
