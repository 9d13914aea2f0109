"""What `flow` exits with: one code per outcome, so a script can tell them apart.

A task's own exit code passes through when it FAILED with one, as a shell passes a command's on;
every other outcome has its code here (shown by `flow --help` and the README's table). Nothing here
imports more than the standard library: every command loads this module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from flow.errors import FlowError
    from flow.task import Task

COMPLETED: Final = 0
FAILED: Final = 1
USAGE: Final = 2
DAEMON_UNAVAILABLE: Final = 69  # EX_UNAVAILABLE of sysexits.h: "a service is unavailable"
PREEMPTED: Final = 75  # EX_TEMPFAIL: a temporary failure, run it again
TIMED_OUT: Final = 124  # as timeout(1)
CANCELLED: Final = 125  # as timeout(1), docker and git bisect: the command gave no verdict of its own
DETACHED: Final = 130  # 128 + SIGINT: Ctrl-C, the task keeps running

TABLE: Final = (
    (COMPLETED, "the task COMPLETED (or the command did what it was asked)"),
    ("N", "the task FAILED with exit code N (its own; a process killed by signal S reports 128+S)"),
    (FAILED, "the task FAILED without an exit code (could not start, lost), or another error (unknown task, ...)"),
    (USAGE, "usage: a bad option, no program, an invalid configuration; nothing was launched"),
    (DAEMON_UNAVAILABLE, "flowd could not be reached or started"),
    (PREEMPTED, "the task was PREEMPTED by its provider: run it again"),
    (TIMED_OUT, "timed out: `flow wait --timeout` ran out while the task still runs"),
    (CANCELLED, "the task was CANCELLED"),
    (DETACHED, "Ctrl-C: detached from the task, which keeps running"),
)


def of_task(task: Task) -> int:
    """How a finished task's outcome reads as this process's exit status."""
    status = str(task.last_status)
    if status == "COMPLETED":
        return COMPLETED
    if status == "CANCELLED":
        return CANCELLED
    if status == "PREEMPTED":
        return PREEMPTED
    if task.exit_code and 0 < task.exit_code < 256:
        return task.exit_code
    return FAILED


def of_error(error: FlowError) -> int:
    from flow import errors

    if isinstance(error, errors.ValidationError):
        return USAGE
    if isinstance(error, errors.DaemonUnavailableError):
        return DAEMON_UNAVAILABLE
    if isinstance(error, errors.TimeoutError):
        return TIMED_OUT
    return FAILED


def epilog() -> str:
    rows = "\n".join(f"  {code!s:>4}  {meaning}" for code, meaning in TABLE)
    return f"exit status:\n{rows}"


__all__ = ["TABLE", "epilog", "of_error", "of_task"]
