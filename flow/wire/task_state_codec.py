"""Task states, resource names, money and times at the wire: what reading a Task needs, and
nothing heavier (the CLI's `flow status` imports only this)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from flow.domain.money import micros_to_dollars as micros_to_dollars
from flow.domain.money import price_to_micros as price_to_micros
from flow.domain.task.states import TaskState
from flowapi.v1 import task_pb2

TASK_NAME_PREFIX = "tasks/"

_STATE_TO_PROTO: dict[TaskState, task_pb2.TaskState.ValueType] = {
    TaskState.PENDING: task_pb2.TASK_STATE_PENDING,
    TaskState.PROVISIONING: task_pb2.TASK_STATE_PROVISIONING,
    TaskState.RUNNING: task_pb2.TASK_STATE_RUNNING,
    TaskState.COMPLETED: task_pb2.TASK_STATE_COMPLETED,
    TaskState.FAILED: task_pb2.TASK_STATE_FAILED,
    TaskState.CANCELLED: task_pb2.TASK_STATE_CANCELLED,
    TaskState.PREEMPTED: task_pb2.TASK_STATE_PREEMPTED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}


def task_state_to_proto(state: TaskState) -> task_pb2.TaskState.ValueType:
    return _STATE_TO_PROTO[state]


def task_state_from_proto(value: int) -> TaskState | None:
    """None for UNSPECIFIED and for numbers this version does not know."""
    for proto_value, state in _STATE_FROM_PROTO.items():
        if proto_value == value:
            return state
    return None


def task_resource_name(task_id: str) -> str:
    return f"{TASK_NAME_PREFIX}{task_id}"


def timestamp_to_seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9
