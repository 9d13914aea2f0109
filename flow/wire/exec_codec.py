"""ExecTask at the wire (`task.ssh()`, `task.exec()`, `flow ssh`): the requests a session sends,
each already encoded, and ExecTaskResponse -> ExecOutput."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Final, NamedTuple

from flow.wire.calls import StreamingCall, method_path
from flow.wire.task_snapshot_codec import task_resource_name
from flowapi.v1 import task_service_pb2

EXEC_TASK: Final = method_path(task_service_pb2.DESCRIPTOR.services_by_name["TaskService"], "ExecTask")


class ExecOutput(NamedTuple):
    """One answer of a session: output on stdout or stderr, or (last) the exit code."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = None


def exec_start_request(task_id: str, argv: Sequence[str], tty: bool, rows: int, columns: int, term: str) -> bytes:
    start = task_service_pb2.ExecStart(
        name=task_resource_name(task_id),
        command=list(argv),
        tty=tty,
        window=task_service_pb2.WindowSize(rows=rows, columns=columns),
        term=term,
    )
    return task_service_pb2.ExecTaskRequest(start=start).SerializeToString()


def exec_stdin_request(data: bytes) -> bytes:
    return task_service_pb2.ExecTaskRequest(stdin=data).SerializeToString()


def exec_stdin_closed_request() -> bytes:
    return task_service_pb2.ExecTaskRequest(stdin_closed=True).SerializeToString()


def exec_resize_request(rows: int, columns: int) -> bytes:
    window = task_service_pb2.WindowSize(rows=rows, columns=columns)
    return task_service_pb2.ExecTaskRequest(resize=window).SerializeToString()


def exec_output_from_proto(message: task_service_pb2.ExecTaskResponse) -> ExecOutput:
    kind = message.WhichOneof("kind")
    if kind == "stdout":
        return ExecOutput(stdout=message.stdout)
    if kind == "stderr":
        return ExecOutput(stderr=message.stderr)
    if kind == "exit_code":
        return ExecOutput(exit_code=message.exit_code)
    return ExecOutput()  # a kind this version does not know: nothing to show


def exec_call(requests: Callable[[], Iterator[bytes]]) -> StreamingCall[ExecOutput]:
    return StreamingCall(
        EXEC_TASK, requests, lambda raw: exec_output_from_proto(task_service_pb2.ExecTaskResponse.FromString(raw))
    )


__all__ = [
    "ExecOutput",
    "exec_call",
    "exec_output_from_proto",
    "exec_resize_request",
    "exec_start_request",
    "exec_stdin_closed_request",
    "exec_stdin_request",
]
