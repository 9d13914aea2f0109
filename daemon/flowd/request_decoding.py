"""flowd decodes requests itself, so bytes that are not a message of the method's request type get
a clear INVALID_ARGUMENT (our ErrorInfo, BadRequest and a fix), not gRPC's own INTERNAL
"Exception deserializing request!".

`RequestDecodingInterceptor` wraps every method handler of a server: its request deserializer
never raises (a message it cannot parse becomes an `Undecodable` value), and its behavior refuses
such a value before the servicer sees it. A unary request is refused at once. In a request
stream (UploadBlobs, ExecTask) the servicer receives the good messages before it; at the bad one
its iterator raises `UndecodableRequestError`, the servicer cleans up as for any broken stream (a
half-written blob is removed), and the call ends with the refusal. (An ExecTask message that is
unreadable after `start` is read by the thread that forwards input: that input ends there, and
the refusal is the call's answer once the session yields its next output or ends.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from attrs import frozen
from google.protobuf import descriptor_pool
from grpc_status import rpc_status

from flow.domain.errors import DomainError, show_value, validation_error, violation
from flow.wire.error_table import domain_error_to_status

FIX = "regenerate your client from proto/flowapi/v1 (`make gen`) and send a message of that type"


@frozen
class Undecodable:
    """A message that could not be parsed as the method's request type."""

    method: str
    type_name: str
    size: int
    problem: str


class UndecodableRequestError(ValueError):
    """Raised by a request stream at a message it could not parse (see the module docstring).
    A ValueError, so that code reading a stream defensively stops there quietly."""

    def __init__(self, bad: Undecodable) -> None:
        super().__init__(f"{bad.method}: the request is not a valid {bad.type_name} message")
        self.bad = bad


def request_type_name(method: str) -> str:
    """'/flowapi.v1.TaskService/CreateTask' -> 'flowapi.v1.CreateTaskRequest', from the
    descriptors (so a new method needs nothing here); the method itself when unknown."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return "request"
    return str(found.input_type.full_name)


def refusal(bad: Undecodable) -> DomainError:
    """The ValidationError for an unparseable request: which method, which type, what went wrong."""
    return validation_error(
        [
            violation(
                "request",
                f"<{bad.size} bytes>",
                f"the request to {bad.method} is not a valid {bad.type_name} message ({show_value(bad.problem)[1:-1]})",
                FIX,
            )
        ],
        subject=f"request to {bad.method}",
        suggestions=(FIX,),
    )


def safe_deserializer(deserialize: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    """`deserialize` that returns an `Undecodable` instead of raising."""
    type_name = request_type_name(method)

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001  # DecodeError, invalid UTF-8, nesting too deep, ...
            return Undecodable(method, type_name, len(data), f"{type(exc).__name__}: {exc}"[:200])

    return decode


def _abort(context: grpc.ServicerContext, bad: Undecodable) -> None:
    context.abort_with_status(rpc_status.to_status(domain_error_to_status(refusal(bad))))


class _Requests:
    """A request stream that raises UndecodableRequestError at the first message it could not parse,
    and remembers it."""

    def __init__(self, requests: Iterator[Any]) -> None:
        self._requests = requests
        self.bad: Undecodable | None = None

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self.bad is not None:
            raise UndecodableRequestError(self.bad)
        item = next(self._requests)
        if isinstance(item, Undecodable):
            self.bad = item
            raise UndecodableRequestError(item)
        return item


def _unary_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            _abort(context, request)
        return behavior(request, context)

    return handle


def _stream_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        stream = _Requests(requests)
        reply = None
        with contextlib.suppress(UndecodableRequestError):
            reply = behavior(stream, context)
        if stream.bad is not None:
            _abort(context, stream.bad)
        return reply

    return handle


def _stream_stream(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        stream = _Requests(requests)
        try:
            for reply in behavior(stream, context):
                if stream.bad is not None:
                    break
                yield reply
        except UndecodableRequestError:
            pass
        if stream.bad is not None:
            _abort(context, stream.bad)

    return handle


def decoding_handler(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with flowd's own request decoding (see the module docstring)."""
    deserialize = handler.request_deserializer
    if deserialize is None:  # the method takes raw bytes: nothing to decode
        return handler
    decode = safe_deserializer(deserialize, method)
    serialize = handler.response_serializer
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_stream_stream(handler.stream_stream), decode, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_stream_unary(handler.stream_unary), decode, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_unary_request(handler.unary_stream), decode, serialize)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary_request(handler.unary_unary), decode, serialize)
    return handler


class RequestDecodingInterceptor(grpc.ServerInterceptor):
    """Gives every method of the server flowd's own request decoding."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = continuation(details)
        wrapped = None if handler is None else decoding_handler(handler, method)
        if handler is not None:  # handlers never change once the server runs: built once per method
            self._handlers[method] = wrapped
        return wrapped
