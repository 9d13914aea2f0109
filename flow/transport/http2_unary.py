"""One gRPC unary call over HTTP/2 on flowd's Unix socket, in pure Python, without grpcio.

Why a second transport: a cold `flow status` must answer in under 150 ms, and importing grpcio
alone takes 110-200 ms on our 2-core VMs (its C extension pulls in asyncio and more), most of
that budget before any work is done. The CLI's read-only unary calls (`flow status`, with or
without a task id) therefore try this transport first (`Http2UnaryChannel`), only against the
local daemon's Unix socket. grpcio stays the transport for everything else (the SDK, streams,
writes, remote daemons): on ANY surprise here (no socket, a protocol detail this client does not
handle, a daemon that is gone) the channel raises `FastPathUnusableError` and the caller does the
same work over grpcio, which behaves as it always did, autostart included. Only the speed differs.

What it speaks: the client preface, SETTINGS (+ ACK of the server's), one HEADERS frame, one DATA
frame with the 5-byte gRPC message prefix; it reads HEADERS/CONTINUATION, DATA and the trailers,
answers PING, opens the receive windows wide up front (SETTINGS, WINDOW_UPDATE), and returns the
one response message, or raises `CallFailedError` with grpc-status, grpc-message and
grpc-status-details-bin (which the channel turns into the SDK's exception through the one error
table, flow.wire.error_table). Header blocks are HPACK, by the `hpack` package.
"""

from __future__ import annotations

import _socket  # not `socket`: its Python wrapper costs ~5 ms of import, and we need none of it
import binascii
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import hpack

if TYPE_CHECKING:
    from flow.errors import FlowError

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5

DEFAULT_WINDOW: Final = 65_535
MAX_WINDOW: Final = (1 << 31) - 1
DEFAULT_MAX_FRAME: Final = 16_384
OUR_MAX_FRAME: Final = 1 << 20  # we accept frames up to 1 MiB: fewer, larger reads
MAX_HEADER_BLOCK: Final = 1 << 20  # grpc's own limit is 8-16 KiB; refuse a CONTINUATION flood
# As the grpcio channel's max_receive_message_length. Our SETTINGS and WINDOW_UPDATE open both
# windows to 2^31-1 bytes before the server sends anything, so a response this size never needs
# a window topped up: the client sends no WINDOW_UPDATE after the first.
MAX_RESPONSE: Final = 64 * 1024 * 1024
STREAM: Final = 1


class FastPathUnusableError(Exception):
    """This path cannot make the call (no daemon, a protocol surprise): use grpcio instead."""


class CallFailedError(Exception):
    """The server answered the call with a non-OK grpc-status."""

    def __init__(self, code: int, message: str, details: bytes | None) -> None:
        super().__init__(f"grpc-status {code}: {message}")
        self.code = code
        self.message = message
        self.details = details  # a serialized google.rpc.Status, when the server sent one


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _settings(*pairs: tuple[int, int]) -> bytes:
    return _frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", key, value) for key, value in pairs))


def _window_update(stream: int, increment: int) -> bytes:
    return _frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def grpc_timeout(seconds: float) -> str:
    """The grpc-timeout header: at most 8 digits and a unit."""
    millis = max(1, int(seconds * 1000))
    return f"{millis}m" if millis < 100_000_000 else f"{max(1, int(seconds))}S"


def percent_decode(value: bytes) -> str:
    """grpc-message is percent-encoded UTF-8 (bytes outside 0x20-0x7E, and '%')."""
    if b"%" not in value:
        return value.decode("utf-8", errors="replace")
    out = bytearray()
    i = 0
    while i < len(value):
        byte = value[i]
        if byte == 0x25 and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8", errors="replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def _b64(value: bytes) -> bytes:
    """Binary metadata arrives base64 encoded, padding optional."""
    try:
        return binascii.a2b_base64(value + b"=" * (-len(value) % 4), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise FastPathUnusableError(f"bad binary metadata: {exc}") from None


def request_frames(path: str, message: bytes, timeout: float, authority: str = "localhost") -> bytes:
    """Everything the client sends up front: preface, SETTINGS, window, HEADERS, DATA."""
    if len(message) + 5 > DEFAULT_MAX_FRAME:
        raise FastPathUnusableError("request larger than one frame")  # our read-only requests are tiny
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", authority.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", grpc_timeout(timeout).encode()),
        (b"user-agent", b"flow-cli-fastpath"),
    ]
    block = hpack.Encoder().encode(headers)  # a fresh table: one request per connection
    if len(block) > DEFAULT_MAX_FRAME:
        raise FastPathUnusableError("request headers larger than one frame")
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    return b"".join(
        (
            PREFACE,
            _settings(
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
                (SETTINGS_MAX_FRAME_SIZE, OUR_MAX_FRAME),
            ),
            _window_update(0, MAX_WINDOW - DEFAULT_WINDOW),
            _frame(HEADERS, END_HEADERS, STREAM, block),
            _frame(DATA, END_STREAM, STREAM, body),
        )
    )


class _Reader:
    """Frames off a blocking socket, with a deadline."""

    def __init__(self, sock: _socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = bytearray()

    def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise FastPathUnusableError("deadline passed")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(max(262_144, wanted - len(self._buffer)))
            except TimeoutError:
                raise FastPathUnusableError("deadline passed") from None
            except OSError as exc:
                raise FastPathUnusableError(f"read failed: {exc}") from None
            if not chunk:
                raise FastPathUnusableError("connection closed")
            self._buffer += chunk

    def frame(self) -> tuple[int, int, int, bytes]:
        self._fill(9)
        length = int.from_bytes(self._buffer[0:3], "big")
        kind = self._buffer[3]
        flags = self._buffer[4]
        stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
        if length > OUR_MAX_FRAME:
            raise FastPathUnusableError(f"frame of {length} bytes above our SETTINGS_MAX_FRAME_SIZE")
        self._fill(9 + length)
        payload = bytes(self._buffer[9 : 9 + length])
        del self._buffer[: 9 + length]
        return kind, flags, stream, payload


def _unpad(flags: int, payload: bytes) -> bytes:
    if flags & PADDED:
        if not payload or payload[0] >= len(payload):
            raise FastPathUnusableError("bad padding")
        return payload[1 : len(payload) - payload[0]]
    return payload


class _Response:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.body = bytearray()


def unary_call(socket_path: str, path: str, message: bytes, timeout: float) -> bytes:
    """Calls `path` (e.g. "/flowapi.v1.TaskService/GetTask") with a serialized request; returns
    the serialized response. Raises CallFailedError for a non-OK status, FastPathUnusableError for anything else."""
    deadline = time.monotonic() + timeout
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
            sock.sendall(request_frames(path, message, timeout))
        except OSError as exc:
            raise FastPathUnusableError(f"cannot reach {socket_path}: {exc}") from None
        response = _exchange(sock, _Reader(sock, deadline))
    finally:
        sock.close()
    return _result(response)


def _send(sock: _socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise FastPathUnusableError(f"write failed: {exc}") from None


def _exchange(sock: _socket.socket, reader: _Reader) -> _Response:
    decoder = hpack.Decoder()
    response = _Response()
    block = bytearray()
    block_flags = 0
    in_block = False
    while True:
        kind, flags, stream, payload = reader.frame()
        if in_block and kind != CONTINUATION:
            raise FastPathUnusableError("header block interrupted")
        if kind == SETTINGS:
            if not flags & ACK:
                if len(payload) % 6:
                    raise FastPathUnusableError("bad SETTINGS frame")
                _send(sock, _frame(SETTINGS, ACK, 0))
        elif kind == PING:
            if not flags & ACK:
                _send(sock, _frame(PING, ACK, 0, payload))
        elif kind in (WINDOW_UPDATE, PRIORITY):
            pass  # our request is already sent whole
        elif kind == GOAWAY:
            last_stream = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF if len(payload) >= 4 else 0
            if last_stream < STREAM:
                raise FastPathUnusableError("server refused the stream (GOAWAY)")
        elif kind == RST_STREAM:
            if stream == STREAM:
                raise FastPathUnusableError("stream reset")
        elif kind in (HEADERS, CONTINUATION):
            if stream != STREAM:
                raise FastPathUnusableError("headers on an unexpected stream")
            if kind == HEADERS:
                if in_block:
                    raise FastPathUnusableError("HEADERS inside a header block")
                payload = _unpad(flags, payload)
                if flags & PRIORITY_FLAG:
                    payload = payload[5:]
                block = bytearray(payload)
                block_flags = flags
            else:
                if not in_block:
                    raise FastPathUnusableError("CONTINUATION without HEADERS")
                block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise FastPathUnusableError("header block too large")
            in_block = not flags & END_HEADERS
            if not in_block:
                try:
                    fields = [(bytes(k), bytes(v)) for k, v in decoder.decode(bytes(block), raw=True)]
                except hpack.HPACKError as exc:
                    raise FastPathUnusableError(f"bad header block: {exc}") from None
                if response.headers is None:
                    response.headers = fields
                    if block_flags & END_STREAM:  # trailers-only: the status is in these headers
                        response.trailers = fields
                        return response
                elif block_flags & END_STREAM:
                    response.trailers = fields
                    return response
                else:
                    raise FastPathUnusableError("a third header block")
        elif kind == DATA:
            if stream != STREAM or response.headers is None:
                raise FastPathUnusableError("DATA before headers or on another stream")
            response.body += _unpad(flags, payload)
            if len(response.body) > MAX_RESPONSE + 5:
                raise FastPathUnusableError("response too large")
            if flags & END_STREAM:
                raise FastPathUnusableError("stream ended without trailers")
        elif kind == PUSH_PROMISE:
            raise FastPathUnusableError("PUSH_PROMISE although push is off")
        # Unknown frame types are ignored (RFC 9113 4.1).


def _field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in fields:
        if key == name:
            return value
    return None


def _result(response: _Response) -> bytes:
    headers = response.headers or []
    trailers = response.trailers or []
    if _field(headers, b":status") != b"200":
        raise FastPathUnusableError(f"HTTP status {_field(headers, b':status')!r}")
    content_type = _field(headers, b"content-type") or b""
    if not content_type.startswith(b"application/grpc"):
        raise FastPathUnusableError(f"content-type {content_type!r}")
    raw_status = _field(trailers, b"grpc-status")
    if raw_status is None or not raw_status.isdigit():
        raise FastPathUnusableError("no grpc-status")
    code = int(raw_status)
    if code != 0:
        details = _field(trailers, b"grpc-status-details-bin")
        raise CallFailedError(
            code,
            percent_decode(_field(trailers, b"grpc-message") or b""),
            None if details is None else _b64(details),
        )
    body = bytes(response.body)
    if len(body) < 5 or body[0] != 0:
        raise FastPathUnusableError("no message, or a compressed one")
    length = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + length:
        raise FastPathUnusableError("not exactly one message")
    return body[5:]


_UNAVAILABLE: Final = 14  # google.rpc.Code.UNAVAILABLE


class Http2UnaryChannel:
    """A Channel (flow.transport.channel) for unary calls to the local daemon's socket, without
    grpcio. Each call either answers exactly what the grpcio channel would (the same reply; the
    same SDK exception, by the one error table, for a failed call) or raises FastPathUnusableError,
    and the caller makes the call over grpcio instead. It never starts a daemon."""

    def __init__(self, socket_path: str) -> None:
        self._socket = socket_path

    def unary(self, method: str, request: bytes, timeout: float, wait_for_ready: bool = False) -> bytes:
        if wait_for_ready:
            raise FastPathUnusableError("waiting for a daemon to start is grpcio's job")
        try:
            return unary_call(self._socket, method, request, timeout)
        except CallFailedError as failed:
            raise _failure(failed) from None
        except FastPathUnusableError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever went wrong here, grpcio gets its turn
            raise FastPathUnusableError(f"unexpected: {exc!r}") from None

    def server_stream(self, method: str, request: bytes, timeout: float | None = None) -> Iterator[bytes]:
        raise FastPathUnusableError("streams go over grpcio")

    def client_stream(self, method: str, requests: Iterator[bytes], timeout: float) -> bytes:
        raise FastPathUnusableError("streams go over grpcio")

    def bidi_stream(self, method: str, requests: Iterator[bytes]) -> Iterator[bytes]:
        raise FastPathUnusableError("streams go over grpcio")

    def close(self) -> None:
        """Nothing stays open between calls."""


def _failure(failed: CallFailedError) -> FlowError:
    """What the grpcio channel makes of the same status, or FastPathUnusableError where the
    grpcio path would start the daemon and retry (UNAVAILABLE without a status of flowd's)."""
    if failed.code == _UNAVAILABLE and failed.details is None:
        raise FastPathUnusableError("daemon unavailable")
    from flow.wire.error_table import exception_from_call

    return exception_from_call(failed.code, failed.message, failed.details)


__all__ = [
    "CallFailedError",
    "FastPathUnusableError",
    "Http2UnaryChannel",
    "grpc_timeout",
    "percent_decode",
    "request_frames",
    "unary_call",
]
