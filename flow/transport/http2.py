"""gRPC over HTTP/2 on flowd's Unix socket, in pure Python, without grpcio: the CLI's transport.

Why a second transport: importing grpcio alone costs a `flow` command two to three times what
the whole command may take (its C extension pulls in asyncio and more). So the CLI's calls to the
local daemon go over this channel first (flow.connection decides), all four kinds: unary,
server-streaming (`flow logs`), client-streaming (code upload) and bidirectional (`flow ssh`).
grpcio stays the transport of the SDK and of remote daemons, and the fallback: on ANY surprise
here (a protocol detail this client does not handle, a socket it cannot use) the channel raises
FastPathUnusableError and the connection makes the same call over grpcio. Only the speed differs.

What it speaks, one call per connection (stream 1; connecting to a Unix socket costs microseconds):
- the client preface and SETTINGS (no push; our receive window; 1 MiB frames), a WINDOW_UPDATE
  opening the connection's window as wide, HEADERS (never more than one frame), then the requests
  as DATA, each with the 5-byte gRPC message prefix, END_STREAM on the last;
- flow control both ways: DATA goes up only within the smaller of the connection's and the
  stream's send windows (the server's SETTINGS_INITIAL_WINDOW_SIZE, changed by later SETTINGS,
  grown by WINDOW_UPDATE), cut to the server's SETTINGS_MAX_FRAME_SIZE; and for what comes down,
  a WINDOW_UPDATE for the connection and the stream whenever half of our window is consumed;
- it answers SETTINGS and PING, reads HEADERS + CONTINUATION, padded DATA, trailers (or a
  trailers-only answer), RST_STREAM (an end without a status: a surprise), GOAWAY (a stream the
  server never took: a surprise; one it took runs to its end);
- a non-OK grpc-status, grpc-message (percent-decoded) and grpc-status-details-bin (a
  google.rpc.Status) become the SDK's exception by the rules both transports share
  (flow.transport.channel.call_failure, then the one error table, flow.wire.error_table).
Header blocks are HPACK (flow.transport.header_block).

Streams whose requests are produced while replies arrive (client-streaming, bidirectional) send
from a thread of their own, as grpcio does; the caller's thread reads. The other two send their
one request from the caller's thread before reading (reading meanwhile, if the window is short).
"""

from __future__ import annotations

import _socket  # not `socket`: its Python wrapper costs ~5 ms of import, and we need none of it
import _thread
import binascii
import contextlib
import errno
import struct
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from flow.transport.channel import FastPathUnusableError, call_failure, unreachable
from flow.transport.header_block import HeaderBlockDecoder, HeaderBlockError, encode_headers

if TYPE_CHECKING:
    import threading

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
# gRPC's own setting: binary metadata may come as raw bytes after a 0 byte, not base64. grpc's
# C-core otherwise sends grpc-status-details-bin base64 and Huffman coded, and Huffman decoding
# costs an import (flow.transport.header_block).
SETTINGS_GRPC_ALLOW_TRUE_BINARY_METADATA: Final = 0xFE03

CANCEL: Final = 0x8  # RST_STREAM error code: we no longer want the stream

DEFAULT_WINDOW: Final = 65_535
MAX_WINDOW: Final = (1 << 31) - 1
DEFAULT_MAX_FRAME: Final = 16_384
LARGEST_FRAME: Final = (1 << 24) - 1
OUR_MAX_FRAME: Final = 1 << 20  # we accept frames up to 1 MiB: fewer, larger reads
RECEIVE_WINDOW: Final = 16 << 20  # what the server may send before we say we consumed it
MAX_HEADER_BLOCK: Final = 1 << 20  # grpc's own limit is 8-16 KiB; refuse a CONTINUATION flood
MAX_MESSAGE: Final = 64 * 1024 * 1024  # as the grpcio channel's max_receive_message_length
STREAM: Final = 1
DEADLINE_EXCEEDED: Final = 4  # google.rpc.Code
GRPC_DEADLINE_MESSAGE: Final = "Deadline Exceeded"  # what grpcio says when its own deadline passes
NO_DAEMON: Final = (errno.ENOENT, errno.ECONNREFUSED)  # nothing listens there: start one
CONNECT_RETRY: Final = 0.005  # first pause between connects while waiting for a daemon to serve


class CallFailedError(Exception):
    """The server answered the call with a non-OK grpc-status."""

    def __init__(self, code: int, message: str, details: bytes | None) -> None:
        super().__init__(f"grpc-status {code}: {message}")
        self.code = code
        self.message = message
        self.details = details  # a serialized google.rpc.Status, when the server sent one


class NoDaemonError(Exception):
    """Nothing listens on the socket (it does not exist, or nobody accepts on it)."""


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
    """Binary metadata arrives base64 encoded, padding optional, or (as we allow) as the raw
    bytes after a 0 byte, which base64 never starts with."""
    if value.startswith(b"\x00"):
        return value[1:]
    try:
        return binascii.a2b_base64(value + b"=" * (-len(value) % 4), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise FastPathUnusableError(f"bad binary metadata: {exc}") from None


def grpc_message(message: bytes) -> bytes:
    """One message as gRPC frames it in DATA: uncompressed flag, 4-byte length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def request_preamble(
    path: str, timeout: float | None, window: int = RECEIVE_WINDOW, authority: str = "localhost"
) -> bytes:
    """What opens a call: preface, SETTINGS, the connection's window, and the HEADERS frame."""
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", authority.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *([(b"grpc-timeout", grpc_timeout(timeout).encode())] if timeout is not None else []),
        (b"user-agent", b"flow-cli-http2"),
    ]
    block = encode_headers(headers)
    if len(block) > DEFAULT_MAX_FRAME:
        raise FastPathUnusableError("request headers larger than one frame")
    opening = [
        PREFACE,
        _settings(
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, window),
            (SETTINGS_MAX_FRAME_SIZE, OUR_MAX_FRAME),
            (SETTINGS_GRPC_ALLOW_TRUE_BINARY_METADATA, 1),
        ),
    ]
    if window > DEFAULT_WINDOW:
        opening.append(_window_update(0, window - DEFAULT_WINDOW))
    opening.append(_frame(HEADERS, END_HEADERS, STREAM, block))
    return b"".join(opening)


def _connect(socket_path: str, deadline: float | None) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(None if deadline is None else max(0.001, deadline - time.monotonic()))
        sock.connect(socket_path)
    except OSError as exc:
        sock.close()
        if exc.errno in NO_DAEMON:
            raise NoDaemonError(exc.strerror or str(exc)) from None
        raise FastPathUnusableError(f"cannot use {socket_path}: {exc}") from None
    return sock


class _DeadlineError(Exception):
    """The call's deadline passed before it ended."""


class _Reader:
    """Frames off a blocking socket, with a deadline (None: none)."""

    def __init__(self, sock: _socket.socket, deadline: float | None) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = bytearray()

    def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted:
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise _DeadlineError
                self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(max(262_144, wanted - len(self._buffer)))
            except TimeoutError:
                raise _DeadlineError from None
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


def _field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in fields:
        if key == name:
            return value
    return None


class _Unlocked:
    """The lock of a call whose one thread both sends and reads: nothing to wait for."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None

    def notify_all(self) -> None:
        return None


class Http2Call:
    """One gRPC call on a connection of its own. The caller's thread reads (`next_message`);
    requests go up through `send` from that thread or, with `threaded`, from one other thread."""

    def __init__(
        self,
        socket_path: str,
        method: str,
        timeout: float | None,
        threaded: bool = False,
        window: int = RECEIVE_WINDOW,
    ) -> None:
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._sock = _connect(socket_path, self._deadline)
        self._reader = _Reader(self._sock, self._deadline)
        self._decoder = HeaderBlockDecoder()
        self._write_lock = _thread.allocate_lock()
        self._state: threading.Condition | _Unlocked
        if threaded:
            import threading

            self._state = threading.Condition()
        else:
            self._state = _Unlocked()
        self._threaded = threaded
        # Sending: the server's limits, as its SETTINGS and WINDOW_UPDATEs say.
        self._peer_settings_seen = False
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._connection_window = DEFAULT_WINDOW
        self._stream_window = DEFAULT_WINDOW
        self._sent_end = False
        # Receiving.
        self._window = window
        self._unacknowledged = 0
        self._block = bytearray()
        self._block_flags = 0
        self._in_block = False
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self._body = bytearray()
        self._messages: deque[bytes] = deque()
        self._broken: BaseException | None = None  # why the reading side gave up
        try:
            self._write(request_preamble(method, timeout, window))
        except BaseException:
            self.close()
            raise

    # --- the socket ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            try:
                self._sock.sendall(data)
            except TimeoutError:
                raise _DeadlineError from None
            except OSError as exc:
                raise FastPathUnusableError(f"write failed: {exc}") from None

    def _answer(self, data: bytes) -> None:
        """A frame the protocol owes the server (SETTINGS and PING acknowledgements, window
        updates). If the server no longer reads, what it already sent is still read: whether the
        call ended well is up to the frames that follow."""
        with contextlib.suppress(FastPathUnusableError):
            self._write(data)

    def close(self) -> None:
        """Ends the call: a stream that has not ended is cancelled (RST_STREAM), then the
        connection is closed."""
        if self.trailers is None and self._broken is None:
            self._broken = FastPathUnusableError("the call was closed")
            # Best effort, never waiting to say goodbye: not for the lock, not for the socket.
            if self._write_lock.acquire(True, 0.2):
                try:
                    self._sock.send(_frame(RST_STREAM, 0, STREAM, CANCEL.to_bytes(4, "big")), _socket.MSG_DONTWAIT)
                except OSError:
                    pass
                finally:
                    self._write_lock.release()
        with self._state:
            self._state.notify_all()
        with contextlib.suppress(OSError):
            self._sock.shutdown(_socket.SHUT_RDWR)
        self._sock.close()

    @property
    def ended(self) -> bool:
        return self.trailers is not None

    # --- sending ------------------------------------------------------------------------------

    def send(self, message: bytes, last: bool = False) -> None:
        """One request message, cut to the server's frame size and sent within its windows."""
        data = memoryview(grpc_message(message))
        at = 0
        while at < len(data) or (last and not self._sent_end):
            allowed = self._await_window() if at < len(data) else 0
            if self.trailers is not None:
                return  # the server has answered: it wants nothing more
            piece = data[at : at + min(allowed, self._peer_max_frame)] if allowed else data[at:at]
            at += len(piece)
            end = last and at >= len(data)
            with self._state:
                self._connection_window -= len(piece)
                self._stream_window -= len(piece)
            self._write(_frame(DATA, END_STREAM if end else 0, STREAM, bytes(piece)))
            if end:
                self._sent_end = True

    def finish(self) -> None:
        """Half-closes the stream: no more requests (an empty DATA frame with END_STREAM)."""
        if not self._sent_end and self.trailers is None:
            self._sent_end = True
            self._write(_frame(DATA, END_STREAM, STREAM))

    def _await_window(self) -> int:
        """Bytes that may go up now (> 0), waiting for the server to open its windows."""
        while True:
            with self._state:
                if self._broken is not None:
                    raise FastPathUnusableError(f"the call broke: {self._broken}")
                allowed = min(self._connection_window, self._stream_window)
                if allowed > 0 or self.trailers is not None:
                    return max(allowed, 0)
                if self._threaded:
                    assert not isinstance(self._state, _Unlocked)
                    self._state.wait()
                    continue
            self._pump()  # this thread also reads: read until a WINDOW_UPDATE comes

    def await_server_settings(self) -> None:
        """Reads until the server's SETTINGS came: it speaks HTTP/2, and its limits are known."""
        while not self._peer_settings_seen:
            self._pump()

    # --- receiving ----------------------------------------------------------------------------

    def next_message(self) -> bytes | None:
        """The next reply message; None once the server has ended the call (then `status`)."""
        while not self._messages:
            if self.trailers is not None:
                if self._body:
                    raise FastPathUnusableError("the stream ended inside a message")
                return None
            self._pump()
        return self._messages.popleft()

    def status(self) -> None:
        """Raises CallFailedError unless the call ended with grpc-status 0."""
        trailers = self.trailers or []
        raw = _field(trailers, b"grpc-status")
        if raw is None or not raw.isdigit():
            raise FastPathUnusableError("no grpc-status")
        code = int(raw)
        if code != 0:
            details = _field(trailers, b"grpc-status-details-bin")
            raise CallFailedError(
                code,
                percent_decode(_field(trailers, b"grpc-message") or b""),
                None if details is None else _b64(details),
            )

    def _pump(self) -> None:
        """Reads and handles one frame."""
        try:
            self._handle(*self._reader.frame())
        except BaseException as exc:
            with self._state:
                self._broken = exc
                self._state.notify_all()
            raise

    def _handle(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._in_block and kind != CONTINUATION:
            raise FastPathUnusableError("header block interrupted")
        if kind == DATA:
            self._data(flags, stream, payload)
        elif kind in (HEADERS, CONTINUATION):
            self._header_block(kind, flags, stream, payload)
        elif kind == SETTINGS:
            if stream != 0:
                raise FastPathUnusableError("SETTINGS on a stream")
            if not flags & ACK:
                self._apply_settings(payload)
                self._answer(_frame(SETTINGS, ACK, 0))
        elif kind == WINDOW_UPDATE:
            if len(payload) != 4:
                raise FastPathUnusableError("bad WINDOW_UPDATE")
            increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if increment == 0:
                raise FastPathUnusableError("WINDOW_UPDATE of 0")
            with self._state:
                if stream == 0:
                    self._connection_window += increment
                    grown = self._connection_window
                elif stream == STREAM:
                    self._stream_window += increment
                    grown = self._stream_window
                else:
                    grown = 0  # a stream that is not ours: nothing to do
                if grown > MAX_WINDOW:
                    raise FastPathUnusableError("window above 2^31-1")
                self._state.notify_all()
        elif kind == PING:
            if len(payload) != 8:
                raise FastPathUnusableError("bad PING")
            if not flags & ACK:
                self._answer(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if stream == STREAM and self.trailers is None:
                code = int.from_bytes(payload[:4], "big") if len(payload) >= 4 else -1
                raise FastPathUnusableError(f"stream reset (error code {code})")
        elif kind == GOAWAY:
            last_stream = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF if len(payload) >= 4 else 0
            if last_stream < STREAM and self.trailers is None:
                raise FastPathUnusableError("server refused the stream (GOAWAY)")
        elif kind == PUSH_PROMISE:
            raise FastPathUnusableError("PUSH_PROMISE although push is off")
        # PRIORITY and unknown frame types are ignored (RFC 9113 4.1, 5.5).

    def _apply_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise FastPathUnusableError("bad SETTINGS frame")
        with self._state:
            for at in range(0, len(payload), 6):
                key, value = struct.unpack(">HI", payload[at : at + 6])
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    if value > MAX_WINDOW:
                        raise FastPathUnusableError("SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                    self._stream_window += value - self._peer_initial_window  # RFC 9113 6.9.2
                    self._peer_initial_window = value
                elif key == SETTINGS_MAX_FRAME_SIZE:
                    if not DEFAULT_MAX_FRAME <= value <= LARGEST_FRAME:
                        raise FastPathUnusableError("bad SETTINGS_MAX_FRAME_SIZE")
                    self._peer_max_frame = value
            self._peer_settings_seen = True
            self._state.notify_all()

    def _header_block(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if stream != STREAM:
            raise FastPathUnusableError("headers on an unexpected stream")
        if kind == HEADERS:
            payload = _unpad(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._block = bytearray(payload)
            self._block_flags = flags
        else:
            if not self._in_block:
                raise FastPathUnusableError("CONTINUATION without HEADERS")
            self._block += payload
        if len(self._block) > MAX_HEADER_BLOCK:
            raise FastPathUnusableError("header block too large")
        self._in_block = not flags & END_HEADERS
        if self._in_block:
            return
        try:
            fields = self._decoder.decode(bytes(self._block))
        except HeaderBlockError as exc:
            raise FastPathUnusableError(f"bad header block: {exc}") from None
        ends = bool(self._block_flags & END_STREAM)
        if self.headers is None:
            self._check_headers(fields)
            self.headers = fields
            if ends:  # trailers-only: the status is in these headers
                self._ended(fields)
        elif ends:
            self._ended(fields)
        else:
            raise FastPathUnusableError("a third header block")

    def _check_headers(self, fields: list[tuple[bytes, bytes]]) -> None:
        status = _field(fields, b":status")
        if status != b"200":
            raise FastPathUnusableError(f"HTTP status {status!r}")
        content_type = _field(fields, b"content-type") or b""
        if not content_type.startswith(b"application/grpc"):
            raise FastPathUnusableError(f"content-type {content_type!r}")
        encoding = _field(fields, b"grpc-encoding")
        if encoding not in (None, b"identity"):
            raise FastPathUnusableError(f"grpc-encoding {encoding!r}")

    def _ended(self, trailers: list[tuple[bytes, bytes]]) -> None:
        with self._state:
            self.trailers = trailers
            self._state.notify_all()

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        if stream != STREAM or self.headers is None or self.trailers is not None:
            raise FastPathUnusableError("DATA before headers, after trailers or on another stream")
        if flags & END_STREAM:
            raise FastPathUnusableError("stream ended without trailers")
        # Flow control counts the whole payload, padding included (RFC 9113 6.9.1).
        self._unacknowledged += len(payload)
        if self._unacknowledged >= self._window // 2:
            consumed, self._unacknowledged = self._unacknowledged, 0
            self._answer(_window_update(0, consumed) + _window_update(STREAM, consumed))
        body = self._body
        body += _unpad(flags, payload)
        while len(body) >= 5:
            if body[0] != 0:
                raise FastPathUnusableError("a compressed message")
            length = int.from_bytes(body[1:5], "big")
            if length > MAX_MESSAGE:
                raise FastPathUnusableError("message too large")
            if len(body) < 5 + length:
                break
            self._messages.append(bytes(body[5 : 5 + length]))
            del body[: 5 + length]


def unary_call(socket_path: str, path: str, message: bytes, timeout: float) -> bytes:
    """Calls `path` (e.g. "/flowapi.v1.TaskService/GetTask") with a serialized request; returns
    the serialized response. Raises CallFailedError for a non-OK status, NoDaemonError where no
    daemon listens, FastPathUnusableError for anything else (a passed deadline is a status:
    DEADLINE_EXCEEDED, as grpcio reports it)."""
    call = Http2Call(socket_path, path, timeout)
    try:
        call.send(message, last=True)
        replies = []
        while (reply := call.next_message()) is not None:
            replies.append(reply)
        call.status()
    except _DeadlineError:
        raise CallFailedError(DEADLINE_EXCEEDED, GRPC_DEADLINE_MESSAGE, None) from None
    finally:
        call.close()
    if len(replies) != 1:
        raise FastPathUnusableError(f"{len(replies)} replies to a unary call")
    return replies[0]


class Http2Channel:
    """A Channel (flow.transport.channel) to the local daemon's socket, without grpcio. Each call
    either answers exactly what the grpcio channel would (the same replies; the same SDK exception
    for a failed call, DaemonUnavailableError where no daemon listens) or raises
    FastPathUnusableError, and the caller makes the call over grpcio instead."""

    def __init__(self, socket_path: str, where: str | None = None) -> None:
        self._socket = socket_path
        self._where = where or socket_path  # for error messages, as the grpcio channel says it

    def _failure(self, failed: CallFailedError) -> FlowError:
        return call_failure(failed.code, failed.message, failed.details, self._where)

    def _open(self, method: str, timeout: float | None, threaded: bool = False) -> Http2Call:
        try:
            return Http2Call(self._socket, method, timeout, threaded)
        except NoDaemonError as exc:
            raise unreachable(self._where, str(exc)) from None

    def unary(self, method: str, request: bytes, timeout: float, wait_for_ready: bool = False) -> bytes:
        deadline = time.monotonic() + timeout
        pause = CONNECT_RETRY
        while True:
            try:
                return unary_call(self._socket, method, request, max(0.001, deadline - time.monotonic()))
            except NoDaemonError as exc:
                # A daemon being started has not bound its socket yet: grpcio's wait_for_ready.
                if not wait_for_ready or time.monotonic() + pause >= deadline:
                    raise unreachable(self._where, str(exc)) from None
            except CallFailedError as failed:
                raise self._failure(failed) from None
            except FastPathUnusableError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever went wrong here, grpcio gets its turn
                raise FastPathUnusableError(f"unexpected: {exc!r}") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def server_stream(self, method: str, request: bytes, timeout: float | None = None) -> Iterator[bytes]:
        call = self._open(method, timeout)
        try:
            try:
                call.send(request, last=True)
                while (reply := call.next_message()) is not None:
                    yield reply
                call.status()
            except Exception as exc:  # noqa: BLE001 - sorted out by _outcome
                raise self._outcome(exc) from None
        finally:
            call.close()

    def client_stream(self, method: str, requests: Iterator[bytes], timeout: float) -> bytes:
        replies = list(self._streaming(method, requests, timeout))
        if len(replies) != 1:
            raise FastPathUnusableError(f"{len(replies)} replies to a client-streaming call")
        return replies[0]

    def bidi_stream(self, method: str, requests: Iterator[bytes]) -> Iterator[bytes]:
        return self._streaming(method, requests, None)

    def _streaming(self, method: str, requests: Iterator[bytes], timeout: float | None) -> Iterator[bytes]:
        """Requests go up from a thread of their own while this one reads the replies. The
        server's SETTINGS are awaited before the first request is taken from `requests`, so a
        server that is not what we expect sends the caller to grpcio with the requests intact."""
        call = self._open(method, timeout, threaded=True)
        failed: list[BaseException] = []
        try:
            try:
                call.await_server_settings()
                _thread.start_new_thread(_send_all, (call, requests, failed))
                while (reply := call.next_message()) is not None:
                    yield reply
                if not failed:
                    call.status()
            except Exception as exc:  # noqa: BLE001 - sorted out by _outcome
                if not failed:
                    raise self._outcome(exc) from None
            if failed:
                raise failed[0]  # the requests' own iterator failed: its error, not a transport's
        finally:
            call.close()

    def _outcome(self, error: Exception) -> Exception:
        """What the caller hears of a call that did not end well: the SDK's exception for a
        status (a passed deadline is DEADLINE_EXCEEDED, as grpcio reports it), else that the
        fast path cannot make this call."""
        if isinstance(error, CallFailedError):
            return self._failure(error)
        if isinstance(error, _DeadlineError):
            return self._failure(CallFailedError(DEADLINE_EXCEEDED, GRPC_DEADLINE_MESSAGE, None))
        if isinstance(error, FastPathUnusableError):
            return error
        return FastPathUnusableError(f"unexpected: {error!r}")

    def close(self) -> None:
        """Nothing stays open between calls."""


def _send_all(call: Http2Call, requests: Iterator[bytes], failed: list[BaseException]) -> None:
    """The sending thread of a streaming call: every request, then END_STREAM. A transport error
    here also ends the reading side (the call is closed); an error of `requests` is kept for the
    caller."""
    try:
        for request in requests:
            if call.ended:
                return
            call.send(request)
        call.finish()
    except (FastPathUnusableError, _DeadlineError):
        pass  # the reading side has, or will have, its own account of what went wrong
    except BaseException as exc:  # noqa: BLE001 - the caller's iterator failed: the caller hears of it
        failed.append(exc)
        call.close()


__all__ = [
    "CallFailedError",
    "FastPathUnusableError",
    "Http2Call",
    "Http2Channel",
    "NoDaemonError",
    "grpc_message",
    "grpc_timeout",
    "percent_decode",
    "request_preamble",
    "unary_call",
]
