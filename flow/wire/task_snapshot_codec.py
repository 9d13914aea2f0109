"""The Task resource as clients read it: flowapi.v1.Task -> TaskSnapshot, and the calls that
answer one (GetTask, ListTasks, WaitTask, CancelTask).

This is all `flow status` needs, so it stays light: the task's spec is kept encoded and decoded
only when asked for (`task_config_from_spec` in flow.wire.task_codec, which needs the whole core).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from flow.domain.task.states import TaskState
from flow.wire.calls import Call, Page, method_path
from flow.wire.task_state_codec import task_state_from_proto, task_state_to_proto
from flow.wire.timestamps import seconds_from_proto
from flowapi.v1 import task_pb2, task_service_pb2

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

TASK_NAME_PREFIX: Final = "tasks/"
_SERVICE: Final = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
GET_TASK: Final = method_path(_SERVICE, "GetTask")
LIST_TASKS: Final = method_path(_SERVICE, "ListTasks")
WAIT_TASK: Final = method_path(_SERVICE, "WaitTask")
CANCEL_TASK: Final = method_path(_SERVICE, "CancelTask")


class AttemptSnapshot(NamedTuple):
    """One earlier run of a task that then ran again (spec max_retries)."""

    state: TaskState
    state_reason: str
    exit_code: int | None
    started_at: float | None
    ended_at: float | None


class TaskSnapshot(NamedTuple):
    """One task as flowd last described it. Times are seconds since the epoch.

    (A NamedTuple rather than attrs: `flow status` builds one per task it lists.)"""

    task_id: str
    name: str  # the configured name, else the task id
    state: TaskState
    provider: str
    instance_type: str
    cost_per_hour_micros: int
    exit_code: int | None
    state_reason: str
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    spec: bytes  # the task's TaskSpec, still encoded (see the module docstring)
    attempts: tuple[AttemptSnapshot, ...] = ()  # earlier runs, oldest first


def task_resource_name(task_id: str) -> str:
    return f"{TASK_NAME_PREFIX}{task_id}"


def _seconds(stamp: Timestamp, present: bool) -> float | None:
    return seconds_from_proto(stamp) if present else None


def task_snapshot_from_proto(message: task_pb2.Task) -> TaskSnapshot:
    return TaskSnapshot(
        task_id=message.task_id,
        name=message.spec.name or message.task_id,
        state=task_state_from_proto(message.state) or TaskState.PENDING,
        provider=message.provider,
        instance_type=message.instance_type,
        cost_per_hour_micros=message.cost_per_hour_micros,
        exit_code=message.exit_code if message.HasField("exit_code") else None,
        state_reason=message.state_reason,
        created_at=_seconds(message.create_time, message.HasField("create_time")),
        started_at=_seconds(message.start_time, message.HasField("start_time")),
        ended_at=_seconds(message.end_time, message.HasField("end_time")),
        spec=message.spec.SerializeToString(),
        attempts=tuple(
            AttemptSnapshot(
                state=task_state_from_proto(a.state) or TaskState.FAILED,
                state_reason=a.state_reason,
                exit_code=a.exit_code if a.HasField("exit_code") else None,
                started_at=_seconds(a.start_time, a.HasField("start_time")),
                ended_at=_seconds(a.end_time, a.HasField("end_time")),
            )
            for a in message.attempts
        ),
    )


_TaskReply = task_service_pb2.GetTaskResponse | task_service_pb2.WaitTaskResponse | task_service_pb2.CancelTaskResponse


def _task_reader(reply: type[_TaskReply]) -> Callable[[bytes], TaskSnapshot]:
    return lambda raw: task_snapshot_from_proto(reply.FromString(raw).task)


def _read_page(raw: bytes) -> Page[TaskSnapshot]:
    reply = task_service_pb2.ListTasksResponse.FromString(raw)
    return Page(tuple(task_snapshot_from_proto(t) for t in reply.tasks), reply.next_page_token)


def get_task_call(task_id: str) -> Call[TaskSnapshot]:
    request = task_service_pb2.GetTaskRequest(name=task_resource_name(task_id))
    return Call(GET_TASK, request.SerializeToString(), _task_reader(task_service_pb2.GetTaskResponse))


def list_tasks_call(page_size: int, page_token: str, states: Sequence[TaskState] = ()) -> Call[Page[TaskSnapshot]]:
    request = task_service_pb2.ListTasksRequest(
        page_size=page_size, page_token=page_token, states=[task_state_to_proto(s) for s in states]
    )
    return Call(LIST_TASKS, request.SerializeToString(), _read_page)


def wait_task_call(task_id: str, seconds: float) -> Call[TaskSnapshot]:
    request = task_service_pb2.WaitTaskRequest(name=task_resource_name(task_id))
    request.timeout.FromNanoseconds(int(seconds * 1e9))
    return Call(WAIT_TASK, request.SerializeToString(), _task_reader(task_service_pb2.WaitTaskResponse))


def cancel_task_call(task_id: str) -> Call[TaskSnapshot]:
    request = task_service_pb2.CancelTaskRequest(name=task_resource_name(task_id))
    return Call(CANCEL_TASK, request.SerializeToString(), _task_reader(task_service_pb2.CancelTaskResponse))


__all__ = [
    "AttemptSnapshot",
    "TaskSnapshot",
    "cancel_task_call",
    "get_task_call",
    "list_tasks_call",
    "task_resource_name",
    "task_snapshot_from_proto",
    "wait_task_call",
]
