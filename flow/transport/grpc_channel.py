"""The grpcio transport: a Channel over grpcio, to the local socket or a remote daemon (TCP with
its token, TLS when asked). Messages travel as bytes: grpcio's generic calls, no stubs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import grpc

from flow.errors import FlowError, ValidationError
from flow.home import FlowHome
from flow.transport.channel import Remote, call_failure

CHANNEL_OPTIONS: Final = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.enable_retries", 0)]
STATUS_DETAILS: Final = "grpc-status-details-bin"


def _status_details(call: Any) -> bytes | None:
    metadata = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    return next((value for key, value in metadata or () if key == STATUS_DETAILS), None)


def translate(error: grpc.RpcError, where: str, remote: Remote | None = None) -> FlowError:
    """The SDK exception for a failed call to the daemon at `where` (`remote`: one reached over
    TCP), by the rules every transport shares (flow.transport.channel.call_failure)."""
    call: Any = error
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message = (call.details() if hasattr(call, "details") else str(error)) or ""
    return call_failure(code.value[0], message, _status_details(call), where, remote)


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (works with and without TLS)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata: list[tuple[str, str]] = [*(details.metadata or ()), self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = tuple(metadata)
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = getattr(base, "compression", None)


def _open(home: FlowHome, remote: Remote | None) -> grpc.Channel:
    if remote is None:
        return grpc.insecure_channel(home.address, options=CHANNEL_OPTIONS)
    if remote.tls:
        try:
            ca = Path(remote.ca_file).read_bytes() if remote.ca_file else None
        except OSError as exc:
            raise ValidationError(
                f"FLOW_DAEMON_CA={remote.ca_file!r} cannot be read: {exc.strerror or exc}",
                suggestions=["give the PEM file of the CA that signed the daemon's certificate, or unset it"],
            ) from None
        base = grpc.secure_channel(remote.address, grpc.ssl_channel_credentials(ca), options=CHANNEL_OPTIONS)
    else:
        base = grpc.insecure_channel(remote.address, options=CHANNEL_OPTIONS)
    return grpc.intercept_channel(base, _BearerToken(remote.token))


class GrpcChannel:
    """A Channel over grpcio. `GrpcChannel.open(home, remote)` reaches the user's daemon; tests
    may wrap a grpc.Channel of their own."""

    def __init__(self, channel: grpc.Channel, where: str, remote: Remote | None = None) -> None:
        self._channel = channel
        self._where = where  # the socket or host:port, for error messages
        self._remote = remote  # and the settings that reach it, when over TCP
        self._unary: dict[str, Any] = {}

    @classmethod
    def open(cls, home: FlowHome, remote: Remote | None = None) -> GrpcChannel:
        return cls(_open(home, remote), str(home.socket) if remote is None else remote.address, remote)

    def unary(self, method: str, request: bytes, timeout: float, wait_for_ready: bool = False) -> bytes:
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self._channel.unary_unary(method)
        try:
            reply: bytes = call(request, timeout=timeout, wait_for_ready=wait_for_ready)
        except grpc.RpcError as error:
            raise translate(error, self._where, self._remote) from None
        return reply

    def server_stream(self, method: str, request: bytes, timeout: float | None = None) -> Iterator[bytes]:
        call: grpc.UnaryStreamMultiCallable[bytes, bytes] = self._channel.unary_stream(method)
        return self._translated(lambda: call(request, timeout=timeout))

    def client_stream(self, method: str, requests: Iterator[bytes], timeout: float) -> bytes:
        try:
            call: grpc.StreamUnaryMultiCallable[bytes, bytes] = self._channel.stream_unary(method)
            reply: bytes = call(requests, timeout=timeout)
        except grpc.RpcError as error:
            raise translate(error, self._where, self._remote) from None
        return reply

    def bidi_stream(self, method: str, requests: Iterator[bytes]) -> Iterator[bytes]:
        call: grpc.StreamStreamMultiCallable[bytes, bytes] = self._channel.stream_stream(method)
        return self._translated(lambda: call(requests))

    def _translated(self, open_stream: Any) -> Iterator[bytes]:
        try:
            yield from open_stream()
        except grpc.RpcError as error:
            raise translate(error, self._where, self._remote) from None

    def close(self) -> None:
        self._channel.close()


__all__ = ["CHANNEL_OPTIONS", "GrpcChannel", "translate"]
