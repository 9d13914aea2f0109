"""Task output at the wire: the StreamTaskLogs call, its replies as LogChunk."""

from __future__ import annotations

from typing import Final, NamedTuple

from flow.wire.calls import Call, method_path
from flow.wire.task_snapshot_codec import task_resource_name
from flowapi.v1 import task_service_pb2

STREAM_TASK_LOGS: Final = method_path(task_service_pb2.DESCRIPTOR.services_by_name["TaskService"], "StreamTaskLogs")


class LogChunk(NamedTuple):
    """Whole lines of output and the cursor that resumes right after them."""

    data: bytes
    cursor: str

    @property
    def lines(self) -> list[str]:
        text = self.data.decode("utf-8", errors="replace")
        parts = text.split("\n")
        if parts and parts[-1] == "":
            parts.pop()
        return parts


def log_chunk_from_proto(message: task_service_pb2.StreamTaskLogsResponse) -> LogChunk:
    return LogChunk(data=message.data, cursor=message.cursor)


def stream_logs_call(task_id: str, cursor: str, follow: bool, tail_lines: int, node: int | None) -> Call[LogChunk]:
    """From `cursor` ("": the beginning, or the last `tail_lines` lines); `node` picks one node of
    a multi-node task (None: every node's output, each line prefixed "[node K] ")."""
    request = task_service_pb2.StreamTaskLogsRequest(
        name=task_resource_name(task_id), cursor=cursor, follow=follow, tail_lines=tail_lines
    )
    if node is not None:
        request.node = node
    return Call(
        STREAM_TASK_LOGS,
        request.SerializeToString(),
        lambda raw: log_chunk_from_proto(task_service_pb2.StreamTaskLogsResponse.FromString(raw)),
    )


__all__ = ["LogChunk", "log_chunk_from_proto", "stream_logs_call"]
