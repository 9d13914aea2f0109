"""Task: a handle on one task in flowd. Reading `status` asks the daemon, so it is always current."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

from google.protobuf.duration_pb2 import Duration

from flow import errors
from flow.domain.task.states import TaskState
from flow.wire.task_state_codec import (
    micros_to_dollars,
    task_resource_name,
    task_state_from_proto,
    timestamp_to_seconds,
)
from flowapi.v1 import task_pb2, task_service_pb2

if TYPE_CHECKING:
    from flow.config import TaskConfig
    from flow.connection import DaemonConnection
    from flow.exec_client import ExecResult

TaskStatus = TaskState
WAIT_SLICE = 30.0  # one WaitTask call waits at most this long on the server


class LogChunk(NamedTuple):
    """Output and the cursor that resumes right after it: whole lines, except where a line is
    longer than a chunk (256 KiB), which then comes in pieces."""

    data: bytes
    cursor: str

    @property
    def lines(self) -> list[str]:
        text = self.data.decode("utf-8", errors="replace")
        parts = text.split("\n")
        if parts and parts[-1] == "":
            parts.pop()
        return parts


def _when(stamp: Any, present: bool) -> datetime | None:
    if not present:
        return None
    return datetime.fromtimestamp(timestamp_to_seconds(stamp), tz=UTC)


class Task:
    """A task submitted to flowd. Attributes describe it as of the last refresh; `status`,
    `is_running` and `is_terminal` refresh it first."""

    def __init__(self, connection: DaemonConnection, message: task_pb2.Task) -> None:
        self._conn = connection
        self._update(message)

    def _update(self, message: task_pb2.Task) -> None:
        self._message = message
        self.task_id: str = message.task_id
        self.name: str = message.spec.name or message.task_id
        self.provider: str = message.provider
        self.instance_type: str = message.instance_type
        self.cost_per_hour: float = micros_to_dollars(message.cost_per_hour_micros)
        self.exit_code: int | None = message.exit_code if message.HasField("exit_code") else None
        self.state_reason: str = message.state_reason
        self.created_at = _when(message.create_time, message.HasField("create_time"))
        self.started_at = _when(message.start_time, message.HasField("start_time"))
        self.completed_at = _when(message.end_time, message.HasField("end_time"))
        self._state = task_state_from_proto(message.state) or TaskStatus.PENDING

    @property
    def config(self) -> TaskConfig:
        from flow.config import TaskConfig
        from flow.wire.task_codec import task_config_from_proto

        return TaskConfig.from_core(task_config_from_proto(self._message.spec))

    @property
    def _resource(self) -> str:
        return task_resource_name(self.task_id)

    def refresh(self) -> Task:
        request = task_service_pb2.GetTaskRequest(name=self._resource)
        reply = self._conn.call(lambda c: c.tasks.GetTask(request, timeout=30))
        self._update(reply.task)
        return self

    @property
    def status(self) -> TaskStatus:
        """The current state (asks flowd)."""
        return self.refresh()._state

    @property
    def last_status(self) -> TaskStatus:
        """The state as of the last refresh (no call)."""
        return self._state

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_running(self) -> bool:
        return self.status is TaskStatus.RUNNING

    def wait(self, timeout: float | None = None) -> Task:
        """Blocks until the task is COMPLETED, FAILED, CANCELLED or PREEMPTED; returns it.
        Raises flow.TimeoutError when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            self._update(self._wait_once(max(left, 0.0)))
            if self._state.is_terminal:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.TimeoutError(
                    f"task {self.task_id} is still {self._state} after {timeout:g} s",
                    suggestions=["wait longer", f"check progress with `flow logs {self.task_id}`"],
                )

    def _wait_once(self, seconds: float) -> task_pb2.Task:
        wait_for = Duration()
        wait_for.FromNanoseconds(int(seconds * 1e9))
        request = task_service_pb2.WaitTaskRequest(name=self._resource, timeout=wait_for)
        reply = self._conn.call(lambda c: c.tasks.WaitTask(request, timeout=seconds + 30))
        return reply.task

    def result(self, timeout: float | None = None) -> Any:
        """What the task's function returned (FlowApp `.spawn()`, `invoke`): waits for the task,
        then returns the value, or raises what the function raised (with its remote traceback).
        Works from any process that knows the task id: `Flow().get_task(task_id).result()`."""
        from flow.remote_call import decode_result

        self.wait(timeout=timeout)
        request = task_service_pb2.GetTaskResultRequest(name=self._resource)
        reply = self._conn.call(lambda c: c.tasks.GetTaskResult(request, timeout=120))
        return decode_result(self.task_id, reply)

    def ssh(self, command: str | Sequence[str] | None = None) -> int:
        """Opens an interactive terminal in the running task (no command), or runs one command
        there, its output on this terminal; returns the exit code. The command runs in the task's
        working directory with its environment and GPUs. Works on every provider."""
        from flow import exec_client

        argv = exec_client.as_argv(command)
        if command is None and sys.stdin.isatty():
            return exec_client.interactive(self._conn, self._resource, argv)
        stdin = None if command is not None or sys.stdin.isatty() else sys.stdin.buffer.read()
        return exec_client.run(self._conn, self._resource, argv, stdin, sys.stdout.buffer, sys.stderr.buffer).exit_code

    def exec(self, command: str | Sequence[str], stdin: bytes | None = None) -> ExecResult:
        """Runs a command in the running task and returns its exit code and output."""
        from flow import exec_client

        return exec_client.run(self._conn, self._resource, exec_client.as_argv(command), stdin)

    def cancel(self) -> None:
        """Stops the task (SIGTERM to its processes, SIGKILL after a grace period). Cancelling a
        finished task does nothing."""
        request = task_service_pb2.CancelTaskRequest(name=self._resource)
        reply = self._conn.call(lambda c: c.tasks.CancelTask(request, timeout=30))
        self._update(reply.task)

    def log_chunks(
        self, cursor: str = "", follow: bool = True, tail: int = 0, node: int | None = None
    ) -> Iterator[LogChunk]:
        """The output as chunks of whole lines, each with a cursor. Pass a chunk's cursor back to
        resume right after it; if the daemon restarts meanwhile, the stream resumes by itself.
        `node` selects one node of a multi-node task (None: all, each line "[node K] ...")."""
        while True:
            try:
                for chunk in self._stream_once(cursor, follow, tail, node):
                    cursor = chunk.cursor
                    yield chunk
                return
            except errors.DaemonUnavailableError:
                if not self._conn.auto_start:
                    raise
                self._conn.ensure_daemon()

    def _stream_once(self, cursor: str, follow: bool, tail: int, node: int | None = None) -> Iterator[LogChunk]:
        request = task_service_pb2.StreamTaskLogsRequest(
            name=self._resource, cursor=cursor, follow=follow, tail_lines=0 if cursor else tail
        )
        if node is not None:
            request.node = node
        for reply in self._conn.stream(lambda: self._conn.tasks.StreamTaskLogs(request)):
            yield LogChunk(data=reply.data, cursor=reply.cursor)

    @overload
    def logs(self, follow: Literal[False] = False, tail: int | None = None, node: int | None = None) -> str: ...

    @overload
    def logs(self, follow: Literal[True], tail: int | None = None, node: int | None = None) -> Iterator[str]: ...

    def logs(self, follow: bool = False, tail: int | None = None, node: int | None = None) -> str | Iterator[str]:
        """The task's output (stdout and stderr). With follow=True, an iterator of lines (without
        their newline) that ends when the task is terminal; otherwise the output so far as one
        string. `tail` limits it to the last N lines. For a multi-node task (num_instances > 1),
        `node=K` gives node K's output alone; by default every node's, each line prefixed with
        "[node K] " (and `tail` counts per node)."""
        if follow:
            return self._follow_lines(tail or 0, node)
        chunks = self.log_chunks(follow=False, tail=tail or 0, node=node)
        return b"".join(c.data for c in chunks).decode("utf-8", errors="replace")

    def _follow_lines(self, tail: int, node: int | None = None) -> Iterator[str]:
        # A chunk may end mid-line (a line longer than a chunk): lines are cut at newlines only.
        pending = b""
        for chunk in self.log_chunks(follow=True, tail=tail, node=node):
            *lines, pending = (pending + chunk.data).split(b"\n")
            for line in lines:
                yield line.decode("utf-8", errors="replace")
        if pending:
            yield pending.decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "name": self.name,
            "status": str(self._state),
            "exit_code": self.exit_code,
            "state_reason": self.state_reason,
            "provider": self.provider,
            "instance_type": self.instance_type,
            "cost_per_hour": self.cost_per_hour,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
        }

    def __repr__(self) -> str:
        return f"Task(task_id={self.task_id!r}, name={self.name!r}, status={self._state})"


__all__ = ["LogChunk", "Task", "TaskStatus"]
