"""`invoke_async` and `InvokeTask`: the Mithril platform's SDK (flow-compute) spelling of
`flow.invoke.spawn_invocation(...)` and `task.result()`.

    job = flow.invoke_async("train.py", "train_model", args=["s3://bucket/data"], instance_type="a100")
    print(job.task.task_id, job.get_result())
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flow.task import Task


class InvokeTask:
    """A function call running in a task: `.task` is the Task, `.get_result()` its value."""

    def __init__(self, task: Task) -> None:
        self.task = task

    @property
    def task_id(self) -> str:
        return self.task.task_id

    def get_result(self, timeout: float | None = None) -> Any:
        """Waits for the task and returns what the function returned (or raises what it raised:
        TaskExecutionError, also an instance of the remote builtin exception type)."""
        return self.task.result(timeout=timeout)

    def __repr__(self) -> str:
        return f"InvokeTask({self.task!r})"


def invoke_async(
    path: str | Path,
    function: str,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> InvokeTask:
    """Starts `function(*args, **kwargs)` from the file `path` in a task and returns at once;
    other keywords are those of `flow.invoke` (gpu, encoding, flow and TaskConfig fields)."""
    from flow.invoke import spawn_invocation

    return InvokeTask(spawn_invocation(path, function, args, kwargs, **options))


__all__ = ["InvokeTask", "invoke_async"]
