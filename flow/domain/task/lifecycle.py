"""The task life cycle as a pure transition function.

    PENDING -> (PROVISIONING) -> RUNNING -> COMPLETED | FAILED | CANCELLED | PREEMPTED

A `TaskRecord` changes only through `apply(record, event, now)`, which returns the new record or
an ILLEGAL_STATE error value (a late "started" for a cancelled task, a second "exited"): the
daemon logs and drops those instead of crashing. Terminal records never change again, so a
state reported twice (after a daemon restart, by two pollers) is harmless.

Like Slurm's job states, each terminal state carries a reason a human can act on
(`state_reason`), and the exit code of the command where there is one.

A task can run more than once (TaskConfig.max_retries): `run_again` turns a run's end that is
not the task's end into an `Attempt` in the task's history and a PENDING record, which flowd
launches anew under the same task id, with the same config and code snapshot. A run's end is not
the task's end when it was preempted, or when the command asked to run again by exiting with
REQUEUE_EXIT_STATUS (also when that was its answer to the SIGTERM of max_run_time_hours: how a
checkpointing program, such as submitit's Checkpointable, requeues itself), and while the task's
max_retries allows another run and nobody asked to cancel it.
"""

from __future__ import annotations

from typing import Final

from attrs import evolve, field, frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import FunctionCall
from flow.domain.task.states import TERMINAL_STATES as TERMINAL_STATES
from flow.domain.task.states import TaskState as TaskState

# EX_TEMPFAIL in sysexits.h ("temporary failure; the user is invited to retry"): a command that
# exits with it asks to run again from the start (honoured while max_retries allows).
REQUEUE_EXIT_STATUS: Final = 75


@frozen
class Attempt:
    """One earlier run of a task that then ran again: how it ended and when."""

    state: TaskState
    state_reason: str
    started_at: float | None
    ended_at: float
    exit_code: int | None = None


@frozen
class TaskRecord:
    """What flowd knows about one task. Times are seconds since the epoch, passed in by the shell."""

    task_id: str
    config: TaskConfig
    provider: str
    created_at: float
    state: TaskState = TaskState.PENDING
    instance_type: str = "cpu"
    cost_per_hour_micros: int = 0
    exit_code: int | None = None
    state_reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    cancel_requested: bool = False
    request_id: str | None = None
    code_digest: str | None = None  # the code snapshot the task runs in
    # Values of config.secret_env; never shown (repr, listings, logs).
    secrets: dict[str, str] = field(factory=dict, hash=False, repr=False)
    function_call: FunctionCall | None = None  # a function to call instead of a command
    attempts: tuple[Attempt, ...] = ()  # earlier runs, oldest first (the current one is the record)

    @property
    def name(self) -> str:
        return self.config.name or self.task_id

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


# --- events -----------------------------------------------------------------------------------


@frozen
class Provisioning:
    """Resources are being prepared."""


@frozen
class Preparing:
    """The task has not started yet and says why in its state_reason (e.g. its data is being
    copied in: "syncing s3://bucket/prefix (3 files, 65.0 MB)"). The reason goes when it starts."""

    reason: str


@frozen
class Started:
    """The command is running."""


@frozen
class Exited:
    """The command ended on its own with this status (128+N when killed by signal N); `detail`
    is what the provider adds to the reason (e.g. Kubernetes' OOMKilled)."""

    exit_code: int
    detail: str = ""


@frozen
class CancelRequested:
    """The user asked to cancel; a running task ends as CANCELLED once it has stopped."""


@frozen
class TimedOut:
    """The task ran past max_run_time_hours and was stopped."""

    exit_code: int | None = None


@frozen
class Preempted:
    reason: str


@frozen
class LaunchFailed:
    """The command could not be started at all (no such working dir, no interpreter, ...)."""

    reason: str


@frozen
class Lost:
    """The process is gone and left no exit status (e.g. killed while flowd was down)."""

    reason: str


@frozen
class Unsatisfiable:
    """A dependency can never be met (flow.domain.task.dependencies): the task never runs and
    ends CANCELLED with this reason, which names the dependency."""

    reason: str


TaskEvent = (
    Provisioning
    | Preparing
    | Started
    | Exited
    | CancelRequested
    | TimedOut
    | Preempted
    | LaunchFailed
    | Lost
    | Unsatisfiable
)


def _illegal(record: TaskRecord, event: TaskEvent) -> Result[TaskRecord, DomainError]:
    return Failure(
        DomainError(
            reason=ErrorReason.ILLEGAL_STATE,
            message=f"task {record.task_id} is {record.state.value}; cannot apply {type(event).__name__}",
        )
    )


def _finish(record: TaskRecord, state: TaskState, now: float, reason: str, exit_code: int | None) -> TaskRecord:
    return evolve(record, state=state, ended_at=now, state_reason=reason, exit_code=exit_code)


def _time_limit_reason(record: TaskRecord) -> str:
    hours = record.config.max_run_time_hours
    return f"TIMEOUT: ran past max_run_time_hours={hours:g}" if hours else "TIMEOUT"


def describe_exit(exit_code: int) -> str:
    if exit_code == 0:
        return "exited with code 0"
    if exit_code > 128:
        return f"exited with code {exit_code} (killed by signal {exit_code - 128})"
    return f"exited with code {exit_code}"


def apply(record: TaskRecord, event: TaskEvent, now: float) -> Result[TaskRecord, DomainError]:
    """The next record after `event`, or ILLEGAL_STATE when the event does not fit the state."""
    state = record.state
    if state.is_terminal:
        if isinstance(event, CancelRequested):
            return Success(record)  # cancelling a finished task is a no-op, not an error
        return _illegal(record, event)
    match event:
        case Provisioning():
            if state is TaskState.PENDING:
                return Success(evolve(record, state=TaskState.PROVISIONING))
            return _illegal(record, event)
        case Preparing(reason=why):
            if state in (TaskState.PENDING, TaskState.PROVISIONING):
                return Success(evolve(record, state_reason=why))
            return _illegal(record, event)
        case Started():
            if state in (TaskState.PENDING, TaskState.PROVISIONING):
                return Success(evolve(record, state=TaskState.RUNNING, started_at=now, state_reason=""))
            return _illegal(record, event)
        case CancelRequested():
            if state is TaskState.RUNNING:
                return Success(evolve(record, cancel_requested=True))
            return Success(_finish(record, TaskState.CANCELLED, now, "cancelled before it started", None))
        case Exited(exit_code=code, detail=detail):
            if record.cancel_requested:
                return Success(_finish(record, TaskState.CANCELLED, now, "cancelled by user", code))
            said = f"{describe_exit(code)}: {detail}" if detail else describe_exit(code)
            if code == 0:
                return Success(_finish(record, TaskState.COMPLETED, now, said, 0))
            return Success(_finish(record, TaskState.FAILED, now, said, code))
        case TimedOut(exit_code=code):
            return Success(_finish(record, TaskState.FAILED, now, _time_limit_reason(record), code))
        case Preempted(reason=why):
            return Success(_finish(record, TaskState.PREEMPTED, now, why, None))
        case Unsatisfiable(reason=why):
            if state in (TaskState.PENDING, TaskState.PROVISIONING):
                return Success(_finish(record, TaskState.CANCELLED, now, why, None))
            return _illegal(record, event)
        case LaunchFailed(reason=why):
            return Success(_finish(record, TaskState.FAILED, now, f"could not start: {why}", None))
        case Lost(reason=why):
            if record.cancel_requested:
                return Success(_finish(record, TaskState.CANCELLED, now, "cancelled by user", None))
            return Success(_finish(record, TaskState.FAILED, now, why, None))
    return _illegal(record, event)


def _why_again(ended: TaskRecord) -> str | None:
    if ended.state is TaskState.PREEMPTED:
        return f"preempted: {ended.state_reason}" if ended.state_reason else "preempted"
    if ended.state is TaskState.FAILED and ended.exit_code == REQUEUE_EXIT_STATUS:
        return f"it asked to run again (exit status {REQUEUE_EXIT_STATUS})"
    return None


def run_again(before: TaskRecord, ended: TaskRecord) -> TaskRecord | None:
    """The task PENDING again, its run that just ended (`before` -> `ended`) kept as an Attempt,
    when that end is not the task's end (see the module docstring); None when it is."""
    why = _why_again(ended)
    if why is None or before.is_terminal or before.cancel_requested or ended.cancel_requested:
        return None
    retries = before.config.max_retries
    if not isinstance(retries, int) or len(before.attempts) >= retries:
        return None
    ended_at = ended.ended_at if ended.ended_at is not None else ended.created_at
    attempt = Attempt(ended.state, ended.state_reason, ended.started_at, ended_at, ended.exit_code)
    number = len(before.attempts) + 2
    return evolve(
        ended,
        state=TaskState.PENDING,
        state_reason=f"attempt {number} of at most {retries + 1}: to run again, {why}",
        started_at=None,
        ended_at=None,
        exit_code=None,
        attempts=(*before.attempts, attempt),
    )


def deadline_of(record: TaskRecord) -> float | None:
    """When a running task must be stopped, from its start and max_run_time_hours."""
    hours = record.config.max_run_time_hours
    if record.started_at is None or not isinstance(hours, (int, float)) or hours <= 0:
        return None
    return record.started_at + float(hours) * 3600.0
