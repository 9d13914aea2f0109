"""Function calls and their results at the wire: FunctionCall <-> proto, FunctionResult <-> proto,
and the GetTaskResult call.

JSON values travel as google.protobuf.Value, whose numbers are doubles; `restore_integers`
turns integral numbers back into ints on the way in, as json.loads would.

The client's side (a call built from plain values, a result read back) loads neither the core's
attrs values nor json_format: `flow invoke` is mostly start-up. The core's values are imported
where one is built."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

from google.protobuf import struct_pb2

from flow.domain.task.json_values import restore_integers
from flow.wire.calls import Call, method_path
from flow.wire.task_snapshot_codec import TaskSnapshot, task_resource_name, task_snapshot_from_proto
from flowapi.v1 import task_pb2, task_service_pb2

if TYPE_CHECKING:
    from flow.domain.task.function_call import FunctionCall, FunctionResult, RemoteError

FunctionCallProto = task_pb2.FunctionCall  # for callers above the wire, which name no generated type

GET_TASK_RESULT: Final = method_path(task_service_pb2.DESCRIPTOR.services_by_name["TaskService"], "GetTaskResult")

_ENCODING_TO_PROTO = {"json": task_pb2.VALUE_ENCODING_JSON, "pickle": task_pb2.VALUE_ENCODING_PICKLE}
_ENCODING_FROM_PROTO: dict[int, str] = {
    task_pb2.VALUE_ENCODING_UNSPECIFIED: "json",
    task_pb2.VALUE_ENCODING_JSON: "json",
    task_pb2.VALUE_ENCODING_PICKLE: "pickle",
}


def encoding_from_proto(value: int) -> str:
    return _ENCODING_FROM_PROTO.get(value, f"unknown({value})")


def encoding_to_proto(encoding: str) -> task_pb2.ValueEncoding.ValueType:
    return _ENCODING_TO_PROTO.get(encoding, task_pb2.VALUE_ENCODING_UNSPECIFIED)


def value_to_proto(value: Any) -> struct_pb2.Value:
    from google.protobuf import json_format

    message = struct_pb2.Value()
    json_format.ParseDict(value, message)
    return message


def value_from_proto(message: struct_pb2.Value) -> Any:
    return restore_integers(_plain(message))


def function_call_to_proto(call: FunctionCall, with_arguments: bool = True) -> task_pb2.FunctionCall:
    """The wire form; `with_arguments=False` for task listings (arguments can be megabytes)."""
    message = task_pb2.FunctionCall(
        path=call.path or "",
        module=call.module or "",
        function=call.function,
        encoding=encoding_to_proto(call.encoding),
        python=call.python or "",
        keep_warm=call.keep_warm,
    )
    if with_arguments:
        if call.encoding == "pickle":
            message.pickled_arguments = call.pickled_arguments
        else:
            message.args.extend(list(call.args))
            message.kwargs.update(dict(call.kwargs))
    return message


def _plain(message: struct_pb2.Value | struct_pb2.ListValue | struct_pb2.Struct) -> Any:
    """A Value, ListValue or Struct as plain Python. Unlike json_format this keeps NaN and
    infinity (which json_format refuses with a ValueError), so validation names them instead."""
    if isinstance(message, struct_pb2.Struct):
        return {key: _plain(value) for key, value in message.fields.items()}
    if isinstance(message, struct_pb2.ListValue):
        return [_plain(value) for value in message.values]
    kind = message.WhichOneof("kind")
    if kind == "struct_value":
        return _plain(message.struct_value)
    if kind == "list_value":
        return _plain(message.list_value)
    if kind in ("number_value", "string_value", "bool_value"):
        return getattr(message, kind)
    return None  # null_value, or no kind at all


def json_call_to_proto(
    function: str, path: str, args: list[Any], kwargs: dict[str, Any], python: str | None
) -> task_pb2.FunctionCall:
    """A JSON call of `function` in the file `path`, from plain values that already passed
    `json_problem` (flow invoke's, read by json.loads), without building a FunctionCall."""
    message = task_pb2.FunctionCall(
        path=path, function=function, encoding=task_pb2.VALUE_ENCODING_JSON, python=python or ""
    )
    message.args.extend(args)
    message.kwargs.update(kwargs)
    return message


def function_call_from_proto(message: task_pb2.FunctionCall) -> FunctionCall:
    from flow.domain.task.function_call import FunctionCall

    return FunctionCall(
        function=message.function,
        path=message.path or None,
        module=message.module or None,
        args=tuple(restore_integers(_plain(message.args))) if message.HasField("args") else (),
        kwargs=restore_integers(_plain(message.kwargs)) if message.HasField("kwargs") else {},
        encoding=encoding_from_proto(message.encoding),
        pickled_arguments=message.pickled_arguments,
        python=message.python or None,
        keep_warm=message.keep_warm,
    )


def result_to_proto(result: FunctionResult) -> task_service_pb2.GetTaskResultResponse:
    reply = task_service_pb2.GetTaskResultResponse(encoding=encoding_to_proto(result.encoding))
    if result.error is not None:
        reply.error.CopyFrom(
            task_service_pb2.RemoteError(
                type=result.error.type,
                message=result.error.message,
                traceback=result.error.traceback,
                pickled_exception=result.error.pickled,
            )
        )
    elif result.encoding == "pickle":
        reply.pickled_value = result.pickled
    else:
        reply.json_value.CopyFrom(value_to_proto(result.value))
    return reply


def remote_error_from_proto(error: task_service_pb2.RemoteError) -> RemoteError:
    from flow.domain.task.function_call import RemoteError

    return RemoteError(
        type=error.type, message=error.message, traceback=error.traceback, pickled=error.pickled_exception
    )


class Returned(NamedTuple):
    """A GetTaskResult reply as the client reads it: the JSON value, the pickled bytes, or the
    error. A plain tuple, not the core's FunctionResult, so that reading a result loads no attrs
    (start-up is most of what `flow invoke` costs); the error, when there is one, is the core's."""

    value: Any
    pickled: bytes
    error: RemoteError | None


def returned_from_proto(reply: task_service_pb2.GetTaskResultResponse) -> Returned:
    if reply.HasField("error"):
        return Returned(None, b"", remote_error_from_proto(reply.error))
    if reply.pickled_value:
        return Returned(None, reply.pickled_value, None)
    return Returned(value_from_proto(reply.json_value), b"", None)


def result_from_proto(reply: task_service_pb2.GetTaskResultResponse) -> FunctionResult:
    from flow.domain.task.function_call import FunctionResult

    value, pickled, error = returned_from_proto(reply)
    return FunctionResult(encoding=encoding_from_proto(reply.encoding), value=value, pickled=pickled, error=error)


def task_result_call(task_id: str) -> Call[Returned]:
    request = task_service_pb2.GetTaskResultRequest(name=task_resource_name(task_id))
    return Call(
        GET_TASK_RESULT,
        request.SerializeToString(),
        lambda raw: returned_from_proto(task_service_pb2.GetTaskResultResponse.FromString(raw)),
    )


def waited_result_call(task_id: str, seconds: float) -> Call[tuple[Returned, TaskSnapshot | None]]:
    """GetTaskResult after flowd has waited up to `seconds` for the task to finish (one round
    trip instead of WaitTask then GetTaskResult), with the finished task (None from a flowd that
    predates it)."""
    request = task_service_pb2.GetTaskResultRequest(name=task_resource_name(task_id))
    request.wait.FromNanoseconds(int(seconds * 1e9))

    def read(raw: bytes) -> tuple[Returned, TaskSnapshot | None]:
        reply = task_service_pb2.GetTaskResultResponse.FromString(raw)
        return returned_from_proto(reply), task_snapshot_from_proto(reply.task) if reply.HasField("task") else None

    return Call(GET_TASK_RESULT, request.SerializeToString(), read)
