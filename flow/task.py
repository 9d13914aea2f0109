"""Task: a handle on one task in flowd. Reading `status` asks the daemon, so it is always current."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, overload

from flow import errors
from flow.domain.money import micros_to_dollars
from flow.domain.task.states import TaskState
from flow.wire.log_codec import LogChunk, stream_logs_call
from flow.wire.task_snapshot_codec import (
    AttemptSnapshot,
    TaskSnapshot,
    cancel_task_call,
    get_task_call,
    list_tasks_call,
    wait_task_call,
)

if TYPE_CHECKING:
    from flow.config import TaskConfig
    from flow.connection import DaemonConnection
    from flow.exec_result import ExecResult

TaskStatus = TaskState
# What run(..., wait_until=...) and wait(until=...) wait for: nothing, the task running (or already
# finished), or the task finished. (The spelling of the Mithril platform's SDK, flow-compute.)
WaitUntil = Literal["submitted", "running", "terminal"]
WAIT_UNTIL: Final = ("submitted", "running", "terminal")
WAIT_SLICE = 30.0  # one WaitTask call waits at most this long on the server
PAGE_MAX = 1000  # ListTasks' largest page
RUNNING_POLL_MAX = 1.0  # wait(until="running") looks at least this often


def check_wait_until(until: object) -> None:
    if until not in WAIT_UNTIL:
        raise errors.ValidationError(
            f"until={until!r} is not something to wait for",
            suggestions=[f"use one of {', '.join(map(repr, WAIT_UNTIL))}"],
        )


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _iso(seconds: float | None) -> str | None:
    when = _when(seconds)
    return when.isoformat() if when else None


class Task:
    """A task submitted to flowd. Attributes describe it as of the last refresh; `status`,
    `is_running` and `is_terminal` refresh it first.

    A Task keeps working after the Flow client that made it is closed (its calls reopen the
    connection). `dry_run` is True for the handle of a dry run (`Flow.validate`, `run(...,
    dry_run=True)`): nothing was submitted, so it answers from memory (PENDING, no task_id)."""

    def __init__(self, connection: DaemonConnection, snapshot: TaskSnapshot) -> None:
        self._conn = connection
        self.dry_run: bool = not snapshot.task_id
        self._update(snapshot)

    def _update(self, snapshot: TaskSnapshot) -> None:
        self._snapshot = snapshot
        self.task_id: str = snapshot.task_id
        self.name: str = snapshot.name
        self.provider: str = snapshot.provider
        self.instance_type: str = snapshot.instance_type
        self.cost_per_hour: float = micros_to_dollars(snapshot.cost_per_hour_micros)
        self.exit_code: int | None = snapshot.exit_code
        self.state_reason: str = snapshot.state_reason
        self.created_at = _when(snapshot.created_at)
        self.started_at = _when(snapshot.started_at)
        self.completed_at = _when(snapshot.ended_at)
        self._state = snapshot.state
        # Earlier runs, oldest first, when the task ran again (TaskConfig.max_retries): each was
        # preempted or asked to run again (exit status 75). The attributes above are the current run's.
        self.attempts: tuple[AttemptSnapshot, ...] = snapshot.attempts

    @property
    def config(self) -> TaskConfig:
        from flow.config import TaskConfig
        from flow.wire.task_codec import task_config_from_spec

        return TaskConfig.from_core(task_config_from_spec(self._snapshot.spec))

    def refresh(self) -> Task:
        if not self.dry_run:
            self._update(self._conn.unary(get_task_call(self.task_id), timeout=30))
        return self

    def _submitted(self, what: str) -> None:
        if self.dry_run:
            raise errors.ValidationError(
                f"{what}: this Task is the handle of a dry run, so no task was submitted",
                suggestions=["submit it without dry_run=True (or with Flow.run instead of Flow.validate)"],
            )

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

    def wait(self, timeout: float | None = None, *, until: WaitUntil = "terminal") -> Task:
        """Blocks until the task is COMPLETED, FAILED, CANCELLED or PREEMPTED; returns it.
        Raises flow.TimeoutError when `timeout` seconds pass first. `until="running"` returns as
        soon as it runs (or has already finished); `until="submitted"` at once."""
        check_wait_until(until)
        self._submitted("wait()")
        deadline = None if timeout is None else time.monotonic() + timeout
        if until == "submitted":
            return self
        if until == "running":
            return self._wait_running(timeout, deadline)
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

    def _wait_running(self, timeout: float | None, deadline: float | None) -> Task:
        pause = 0.05
        while not (self.status is TaskStatus.RUNNING or self._state.is_terminal):
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.TimeoutError(
                    f"task {self.task_id} is still {self._state} after {timeout:g} s",
                    suggestions=["wait longer", f"see why with `flow status {self.task_id}`"],
                )
            left = RUNNING_POLL_MAX if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(min(pause, left))
            pause = min(pause * 2, RUNNING_POLL_MAX)
        return self

    def _wait_once(self, seconds: float) -> TaskSnapshot:
        return self._conn.unary(wait_task_call(self.task_id, seconds), timeout=seconds + 30)

    def result(self, timeout: float | None = None) -> Any:
        """What the task's function returned (FlowApp `.spawn()`, `invoke`): waits for the task,
        then returns the value, or raises what the function raised (with its remote traceback).
        Works from any process that knows the task id: `Flow().get_task(task_id).result()`."""
        from flow.remote_call import decode_result
        from flow.wire.function_codec import task_result_call, waited_result_call

        self._submitted("result()")
        started = time.monotonic()
        first = WAIT_SLICE if timeout is None else max(0.0, min(WAIT_SLICE, timeout))
        try:  # one round trip when the task finishes within the first slice: flowd waits, then answers
            result, finished = self._conn.unary(waited_result_call(self.task_id, first), timeout=first + 120)
        except errors.FlowError:
            # Not finished yet, or no value to give (a command's task, a function that never
            # returned): the two calls below, which also learn how the task ended, and raise
            # what flowd says then.
            pass
        else:
            if finished is not None:
                self._update(finished)
            return decode_result(self.task_id, result)
        self.wait(timeout=None if timeout is None else max(0.0, timeout - (time.monotonic() - started)))
        return decode_result(self.task_id, self._conn.unary(task_result_call(self.task_id), timeout=120))

    def ssh(self, command: str | Sequence[str] | None = None) -> int:
        """Opens an interactive terminal in the running task (no command), or runs one command
        there, its output on this terminal; returns the exit code. The command runs in the task's
        working directory with its environment and GPUs. Works on every provider."""
        from flow import exec_client

        self._submitted("ssh()")
        argv = exec_client.as_argv(command)
        if command is None and sys.stdin.isatty():
            return exec_client.interactive(self._conn, self.task_id, argv)
        stdin = None if command is not None or sys.stdin.isatty() else sys.stdin.buffer.read()
        # The one SDK call that writes to this terminal: showing the command's output is what it is for.
        return exec_client.run(self._conn, self.task_id, argv, stdin, sys.stdout.buffer, sys.stderr.buffer).exit_code

    def exec(self, command: str | Sequence[str], stdin: bytes | None = None) -> ExecResult:
        """Runs a command in the running task and returns its exit code and output."""
        from flow import exec_client

        self._submitted("exec()")
        return exec_client.run(self._conn, self.task_id, exec_client.as_argv(command), stdin)

    def cancel(self) -> None:
        """Stops the task (SIGTERM to its processes, SIGKILL after a grace period). Cancelling a
        finished task does nothing."""
        self._submitted("cancel()")
        self._update(self._conn.unary(cancel_task_call(self.task_id), timeout=30))

    def log_chunks(
        self, cursor: str = "", follow: bool = True, tail: int = 0, node: int | None = None
    ) -> Iterator[LogChunk]:
        """The output as chunks of whole lines, each with a cursor. Pass a chunk's cursor back to
        resume right after it; if the daemon restarts meanwhile, the stream resumes by itself.
        `node` selects one node of a multi-node task (None: all, each line "[node K] ...")."""
        self._submitted("logs()")
        while True:
            closings = self._conn.closings  # not .channel: that opens grpcio, which the CLI avoids
            try:
                for chunk in self._stream_once(cursor, follow, tail, node):
                    cursor = chunk.cursor
                    yield chunk
                return
            except errors.DaemonUnavailableError:
                if not self._conn.auto_start:
                    raise
                self._conn.ensure_daemon()
            except (errors.FlowError, ValueError):  # grpcio: ValueError on a channel closed before the call
                if self._conn.closings == closings:
                    raise
                # The client was closed under this stream (a `with Flow()` block ended): the
                # connection reopens, and the stream resumes after the last chunk it gave.

    def _stream_once(self, cursor: str, follow: bool, tail: int, node: int | None = None) -> Iterator[LogChunk]:
        return self._conn.server_stream(stream_logs_call(self.task_id, cursor, follow, 0 if cursor else tail, node))

    @overload
    def logs(self, follow: Literal[False] = False, tail: int | None = None, node: int | None = None) -> str: ...

    @overload
    def logs(self, follow: Literal[True], tail: int | None = None, node: int | None = None) -> Iterator[str]: ...

    def logs(self, follow: bool = False, tail: int | None = None, node: int | None = None) -> str | Iterator[str]:
        """The task's output (stdout and stderr). With follow=True, an iterator of lines (without
        their newline) that ends when the task is terminal; otherwise the output so far as one
        string. `tail` limits it to the last N lines. For a multi-node task (num_instances > 1),
        `node=K` gives node K's output alone; by default every node's, each line prefixed with
        "[node K] " (and `tail` counts per node). A number in follow's place is a tail, as in
        flow-compute's `task.logs(50)`."""
        if isinstance(follow, int) and not isinstance(follow, bool):
            follow, tail = False, follow
        if follow:
            return self._follow_lines(tail or 0, node)
        chunks = self.log_chunks(follow=False, tail=tail or 0, node=node)
        return b"".join(c.data for c in chunks).decode("utf-8", errors="replace")

    def log_stream(
        self, tail: int = 100, *, node: int | None = None, source: str | None = None, stream: str | None = None
    ) -> Iterator[str]:
        """flow-compute's way to follow the output: its last `tail` lines, then each new line until
        the task ends, without newlines; empty lines are left out. Output here is stdout and
        stderr together, as it was written (stream="combined"); `source` has no equivalent."""
        if source is not None or stream not in (None, "combined"):
            keyword, value = ("source", source) if source is not None else ("stream", stream)
            raise errors.ValidationError(
                f"log_stream({keyword}={value!r}): a task's output here is its stdout and stderr together",
                suggestions=[f"leave {keyword} out", "to keep stderr apart, redirect it to a file in the command"],
            )
        return (line for line in self._follow_lines(tail, node) if line)

    def shell(self, command: str | None = None, node: int | None = None, capture_output: bool = False) -> Any:
        """flow-compute's `task.shell`: an interactive terminal (no command), or one command, its
        output shown here (returns the exit code) or, with capture_output=True, returned as text
        (RemoteExecutionError if it exits non-zero). Same as `ssh()` and `exec()`."""
        if node is not None:
            raise errors.ValidationError(
                f"shell(node={node!r}): commands run on the task's first node",
                suggestions=["leave node out"],
            )
        if command is None or not capture_output:
            return self.ssh(command)
        done = self.exec(command)
        if done.exit_code != 0:
            failed = errors.RemoteExecutionError(
                f"{command!r} exited with code {done.exit_code} in task {self.task_id}: "
                f"{done.stderr.decode('utf-8', errors='replace').strip()}",
                suggestions=[f"run it with `flow ssh {self.task_id} -- {command}` to see its output"],
            )
            failed.exit_code = done.exit_code
            raise failed
        return done.stdout.decode("utf-8", errors="replace")

    def _follow_lines(self, tail: int, node: int | None = None) -> Iterator[str]:
        # A chunk may end mid-line (a line longer than a chunk): lines are cut at newlines only.
        pending = b""
        for chunk in self.log_chunks(follow=True, tail=tail, node=node):
            *lines, pending = (pending + chunk.data).split(b"\n")
            for line in lines:
                yield line.decode("utf-8", errors="replace")
        if pending:
            yield pending.decode("utf-8", errors="replace")

    def __getattr__(self, name: str) -> Any:
        # Only for names a Task lacks: those flow-compute's Task has say what to use instead.
        from flow.flow_compute import absent_task_attribute

        raise absent_task_attribute(name)

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
            "attempts": [
                {
                    "status": str(a.state),
                    "state_reason": a.state_reason,
                    "exit_code": a.exit_code,
                    "started_at": _iso(a.started_at),
                    "completed_at": _iso(a.ended_at),
                }
                for a in self.attempts
            ],
        }

    def __repr__(self) -> str:
        return f"Task(task_id={self.task_id!r}, name={self.name!r}, status={self._state})"


def get_task(conn: DaemonConnection, task_id: str) -> Task:
    return Task(conn, conn.unary(get_task_call(task_id), timeout=30))


def list_tasks(conn: DaemonConnection, limit: int, states: Sequence[TaskState] = ()) -> list[Task]:
    """Tasks, newest first, optionally only those in the given states."""
    found: list[Task] = []
    token = ""
    while len(found) < limit:
        page = conn.unary(list_tasks_call(min(limit - len(found), PAGE_MAX), token, states), timeout=30)
        found.extend(Task(conn, snapshot) for snapshot in page.items)
        token = page.next_page_token
        if not token:
            break
    return found


__all__ = ["LogChunk", "Task", "TaskStatus", "WaitUntil", "get_task", "list_tasks"]
