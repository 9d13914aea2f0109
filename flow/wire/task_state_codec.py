"""Task states at the wire: TaskState <-> flowapi.v1.TaskState."""

from __future__ import annotations

from flow.domain.task.states import TaskState
from flowapi.v1 import task_pb2

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


__all__ = ["task_state_from_proto", "task_state_to_proto"]
