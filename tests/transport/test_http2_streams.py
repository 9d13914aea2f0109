"""flow.transport.http2's streams against an independent HTTP/2 server (the `h2` package, as the
server, on a real Unix socket): server-streaming, client-streaming and bidirectional calls, with
flow control both ways (a server that grants small windows and opens them slowly, one that shrinks
them mid-call, a client window smaller than what the server sends), trailers, resets, GOAWAY, a
passed deadline, a request iterator that fails and a reader that stops early. h2 checks, as the
server, that every frame the client sends is valid HTTP/2 and within the windows it granted."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import short_tmpdir
from flow import errors
from flow.transport.http2 import (
    CallFailedError,
    FastPathUnusableError,
    Http2Call,
    Http2Channel,
    grpc_message,
)

METHOD = "/flowapi.v1.TaskService/StreamTaskLogs"
OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
CANCEL = 8


def messages_of(body: bytes) -> list[bytes]:
    found = []
    while body:
        assert body[0] == 0
        length = int.from_bytes(body[1:5], "big")
        found.append(body[5 : 5 + length])
        body = body[5 + length :]
    return found


class Peer:
    """One HTTP/2 server connection, driven by `on_event(event, peer)` for every h2 event.
    `settings` are the server's initial SETTINGS; received DATA is acknowledged (opening the
    client's window again) unless `acknowledge` is False, and collected in `received`."""

    def __init__(
        self,
        path: Path,
        on_event: Callable[[Any, Peer], None],
        settings: dict[int, int] | None = None,
        acknowledge: bool = True,
    ) -> None:
        self.path = path
        self.on_event = on_event
        self.acknowledge = acknowledge
        self.received = b""
        self.events: list[Any] = []
        self.error: BaseException | None = None
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self.sock: socket.socket | None = None
        self.lock = threading.RLock()  # on_event may run a thread of its own that sends too
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def flush(self) -> None:
        with self.lock:
            data = self.conn.data_to_send()
            if data and self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.sendall(data)

    def _serve(self) -> None:
        try:
            self.sock, _ = self._listener.accept()
            self.sock.settimeout(20)
            with self.lock:
                self.conn.initiate_connection()
            self.flush()
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    events = self.conn.receive_data(data)
                for event in events:
                    self.events.append(event)
                    if isinstance(event, h2.events.DataReceived):
                        self.received += event.data
                        if self.acknowledge:
                            with self.lock:
                                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    with self.lock:
                        self.on_event(event, self)
                self.flush()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            if self.sock is not None:
                self.sock.close()

    def close(self) -> None:
        self._thread.join(20)
        self._listener.close()
        if self.error is not None:
            raise self.error

    def reset_codes(self) -> list[int]:
        return [e.error_code for e in self.events if isinstance(e, h2.events.StreamReset)]


@pytest.fixture
def peer() -> Iterator[Callable[..., Peer]]:
    root = short_tmpdir("flow-h2s-")
    peers: list[Peer] = []

    def start(on_event: Callable[[Any, Peer], None], **kwargs: Any) -> Peer:
        made = Peer(root / f"s{len(peers)}.sock", on_event, **kwargs)
        peers.append(made)
        return made

    yield start
    for made in peers:
        made.close()
        made.path.unlink(missing_ok=True)
    root.rmdir()


def send_window_limited(peer: Peer, stream: int, body: bytes, then: Callable[[], None]) -> Callable[[Any, Peer], None]:
    """A sender that never exceeds the client's windows: it sends what they allow, then waits for
    the client's WINDOW_UPDATEs (without them the call would never end), then calls `then`."""
    left = [body]

    def pump() -> None:
        while left[0]:
            allowed = min(peer.conn.local_flow_control_window(stream), peer.conn.max_outbound_frame_size)
            if allowed <= 0:
                return
            chunk, left[0] = left[0][:allowed], left[0][allowed:]
            peer.conn.send_data(stream, chunk)
        then()
        left.append(b"done")

    def on_event(event: Any, _: Peer) -> None:
        if isinstance(event, h2.events.WindowUpdated) and len(left) == 1:
            pump()

    pump()
    return on_event


# --- server streaming --------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(replies=st.lists(st.binary(max_size=40_000), max_size=12))
def test_server_stream_delivers_every_message_in_order(replies: list[bytes]) -> None:
    root = short_tmpdir("flow-h2ss-")

    def on_event(event: Any, peer: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            peer.conn.send_headers(event.stream_id, OK_HEADERS)
            for reply in replies:
                peer.conn.send_data(event.stream_id, grpc_message(reply))
            peer.conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)

    peer = Peer(root / "s.sock", on_event)
    try:
        got = list(Http2Channel(str(peer.path)).server_stream(METHOD, b"request", timeout=10))
    finally:
        peer.close()
        peer.path.unlink()
        root.rmdir()
    assert got == replies
    assert messages_of(peer.received) == [b"request"]


def test_a_stream_larger_than_the_window_is_read_with_window_updates(peer: Callable[..., Peer]) -> None:
    """The client grants a 64 KiB window and 3 MB come down: the server may only send on as the
    client reports what it consumed, connection and stream alike."""
    replies = [bytes([i]) * 100_000 for i in range(30)]
    body = b"".join(grpc_message(r) for r in replies)
    state: dict[str, Any] = {}

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            stream = event.stream_id
            server.conn.send_headers(stream, OK_HEADERS)

            def trailers() -> None:
                server.conn.send_headers(stream, [("grpc-status", "0")], end_stream=True)

            state["pump"] = send_window_limited(server, stream, body, trailers)
        elif "pump" in state:
            state["pump"](event, server)

    server = peer(on_event)
    call = Http2Call(str(server.path), METHOD, timeout=30, window=65_535)
    try:
        call.send(b"", last=True)
        got = []
        while (reply := call.next_message()) is not None:
            got.append(reply)
        call.status()
    finally:
        call.close()
    assert got == replies
    updates = [e for e in server.events if isinstance(e, h2.events.WindowUpdated)]
    assert {e.stream_id for e in updates} == {0, 1}  # both windows were opened again


def test_a_failed_status_after_some_replies_raises_the_sdk_exception(peer: Callable[..., Peer]) -> None:
    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
            server.conn.send_data(event.stream_id, grpc_message(b"one"))
            server.conn.send_headers(
                event.stream_id, [("grpc-status", "5"), ("grpc-message", "no%20such%20task")], end_stream=True
            )

    server = peer(on_event)
    got = []
    with pytest.raises(errors.ResourceNotFoundError, match="no such task"):
        for reply in Http2Channel(str(server.path)).server_stream(METHOD, b"", timeout=10):
            got.append(reply)
    assert got == [b"one"]


def test_a_reset_in_the_middle_of_a_stream_is_a_surprise(peer: Callable[..., Peer]) -> None:
    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
            server.conn.send_data(event.stream_id, grpc_message(b"one"))
            server.conn.reset_stream(event.stream_id, error_code=2)

    server = peer(on_event)
    got = []
    with pytest.raises(FastPathUnusableError, match="reset"):
        for reply in Http2Channel(str(server.path)).server_stream(METHOD, b"", timeout=10):
            got.append(reply)
    assert got == [b"one"]


def test_goaway_after_our_stream_lets_it_finish(peer: Callable[..., Peer]) -> None:
    """A server going away gracefully (GOAWAY naming our stream as processed) still ends it."""

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
            server.conn.send_data(event.stream_id, grpc_message(b"one"))
            server.flush()
            # GOAWAY (last stream 1, NO_ERROR) by hand: h2 itself sends nothing after its own.
            assert server.sock is not None
            server.sock.sendall(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + (1).to_bytes(4, "big") + bytes(4))
            server.conn.send_data(event.stream_id, grpc_message(b"two"))
            server.conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)

    server = peer(on_event)
    assert list(Http2Channel(str(server.path)).server_stream(METHOD, b"", timeout=10)) == [b"one", b"two"]


def test_a_stream_past_its_deadline_is_deadline_exceeded(peer: Callable[..., Peer]) -> None:
    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
            server.conn.send_data(event.stream_id, grpc_message(b"one"))  # and then nothing

    server = peer(on_event)
    got = []
    with pytest.raises(errors.TimeoutError):
        for reply in Http2Channel(str(server.path)).server_stream(METHOD, b"", timeout=0.5):
            got.append(reply)
    assert got == [b"one"]


def test_a_reader_that_stops_early_cancels_the_stream(peer: Callable[..., Peer]) -> None:
    reset = threading.Event()

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
            server.conn.send_data(event.stream_id, grpc_message(b"one"))
        elif isinstance(event, h2.events.StreamReset):
            reset.set()

    server = peer(on_event)
    stream = Http2Channel(str(server.path)).server_stream(METHOD, b"", timeout=None)
    assert next(stream) == b"one"
    stream.close()  # what `for ... in` does when the loop breaks
    assert reset.wait(20)
    server.close()
    assert server.reset_codes() == [CANCEL]


def test_no_socket_is_no_daemon_not_a_surprise(tmp_path: Path) -> None:
    """Where nothing listens, the channel says so as grpcio does (DaemonUnavailableError), so
    the connection starts a daemon without grpcio."""
    channel = Http2Channel(str(tmp_path / "none.sock"))
    with pytest.raises(errors.DaemonUnavailableError, match="cannot reach flowd"):
        list(channel.server_stream(METHOD, b""))
    with pytest.raises(errors.DaemonUnavailableError):
        channel.unary(METHOD, b"", timeout=1)
    with pytest.raises(errors.DaemonUnavailableError):
        channel.client_stream(METHOD, iter([b"x"]), timeout=1)


# --- client streaming --------------------------------------------------------------------------


def reply_at_end(reply: bytes) -> Callable[[Any, Peer], None]:
    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamEnded):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
            server.conn.send_data(event.stream_id, grpc_message(reply))
            server.conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)

    return on_event


@settings(max_examples=20, deadline=None)
@given(
    requests=st.lists(st.binary(max_size=70_000), max_size=10),
    window=st.integers(min_value=1, max_value=100_000),
    frame=st.integers(min_value=16_384, max_value=40_000),
)
def test_client_stream_sends_every_request_within_the_windows_granted(
    requests: list[bytes], window: int, frame: int
) -> None:
    """The server grants `window` bytes per stream and `frame`-byte frames; h2 refuses the
    connection if the client sends a byte more than granted, or a frame too large."""
    root = short_tmpdir("flow-h2cs-")
    peer = Peer(
        root / "s.sock",
        reply_at_end(b"done"),
        settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window, h2.settings.SettingCodes.MAX_FRAME_SIZE: frame},
    )
    try:
        assert Http2Channel(str(peer.path)).client_stream(METHOD, iter(requests), timeout=30) == b"done"
    finally:
        peer.close()
        peer.path.unlink()
        root.rmdir()
    assert messages_of(peer.received) == requests


def test_a_window_shrunk_mid_call_is_respected(peer: Callable[..., Peer]) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE lowered to 0 while the client sends (its window goes to zero
    or below), then raised again: the client waits, then finishes."""
    blob = bytes(range(256)) * 2000  # 512 KB
    changed: list[int] = []

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.DataReceived) and not changed:
            changed.append(0)
            server.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        elif isinstance(event, h2.events.SettingsAcknowledged) and changed == [0]:
            changed.append(1)
            server.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 200_000})
        reply_at_end(b"ok")(event, server)

    server = peer(on_event)
    assert Http2Channel(str(server.path)).client_stream(METHOD, iter([blob, blob]), timeout=30) == b"ok"
    server.close()
    assert messages_of(server.received) == [blob, blob]
    assert changed == [0, 1]


def test_an_early_answer_stops_the_upload(peer: Callable[..., Peer]) -> None:
    """The server refuses the call before the client is done sending: the caller gets the
    refusal (not a hang on a window that will never open), and no more is taken from it."""
    taken = []

    def requests() -> Iterator[bytes]:
        for i in range(1000):
            taken.append(i)
            yield b"x" * 50_000

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.RequestReceived):
            server.conn.send_headers(
                event.stream_id, [*OK_HEADERS, ("grpc-status", "3"), ("grpc-message", "bad blob")], end_stream=True
            )

    server = peer(on_event, acknowledge=False)
    with pytest.raises(errors.ValidationError, match="bad blob"):
        Http2Channel(str(server.path)).client_stream(METHOD, requests(), timeout=30)
    assert len(taken) < 1000


def test_a_failing_request_iterator_raises_its_own_error_and_cancels(peer: Callable[..., Peer]) -> None:
    reset = threading.Event()

    def requests() -> Iterator[bytes]:
        yield b"first"
        raise ValueError("the file vanished")

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.StreamReset):
            reset.set()

    server = peer(on_event)
    with pytest.raises(ValueError, match="the file vanished"):
        Http2Channel(str(server.path)).client_stream(METHOD, requests(), timeout=30)
    assert reset.wait(20)
    assert server.reset_codes() == [CANCEL]


def test_not_http2_at_all_leaves_the_requests_untouched(tmp_path: Path) -> None:
    """A server that is not HTTP/2: the caller goes to grpcio before one request was taken."""
    root = short_tmpdir("flow-h2x-")
    path = str(root / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    taken = []

    def requests() -> Iterator[bytes]:
        taken.append(1)
        yield b"x"

    try:
        with pytest.raises(FastPathUnusableError):
            list(Http2Channel(path).bidi_stream(METHOD, requests()))
    finally:
        thread.join(10)
        listener.close()
        Path(path).unlink()
        root.rmdir()
    assert taken == []


# --- bidirectional -----------------------------------------------------------------------------


def test_bidi_replies_arrive_while_requests_still_go_up(peer: Callable[..., Peer]) -> None:
    """Ping-pong: each request is produced only after the reply to the one before arrived, which
    only works when sending and reading really run at once."""
    buffered = bytearray()

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.RequestReceived):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
        elif isinstance(event, h2.events.DataReceived):
            buffered.extend(event.data)
            while len(buffered) >= 5 and len(buffered) >= 5 + int.from_bytes(buffered[1:5], "big"):
                length = int.from_bytes(buffered[1:5], "big")
                message = bytes(buffered[5 : 5 + length])
                del buffered[: 5 + length]
                server.conn.send_data(event.stream_id, grpc_message(b"echo:" + message))
        elif isinstance(event, h2.events.StreamEnded):
            server.conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)

    server = peer(on_event)
    replies: queue.Queue[bytes] = queue.Queue()

    def requests() -> Iterator[bytes]:
        for i in range(20):
            yield f"n{i}".encode()
            assert replies.get(timeout=20) == f"echo:n{i}".encode()

    got = []
    for reply in Http2Channel(str(server.path)).bidi_stream(METHOD, requests()):
        got.append(reply)
        replies.put(reply)
    assert got == [f"echo:n{i}".encode() for i in range(20)]


def test_bidi_closed_by_the_reader_cancels_and_frees_the_sender(peer: Callable[..., Peer]) -> None:
    reset = threading.Event()
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (item := outbox.get()) is not None:
            yield item

    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.RequestReceived):
            server.conn.send_headers(event.stream_id, OK_HEADERS)
            server.conn.send_data(event.stream_id, grpc_message(b"hello"))
        elif isinstance(event, h2.events.StreamReset):
            reset.set()

    server = peer(on_event)
    stream = Http2Channel(str(server.path)).bidi_stream(METHOD, requests())
    outbox.put(b"start")
    assert next(stream) == b"hello"
    stream.close()
    outbox.put(None)  # as exec_client does when its reader is done
    assert reset.wait(20)
    server.close()
    assert server.reset_codes() == [CANCEL]


def test_call_failed_error_carries_the_status(peer: Callable[..., Peer]) -> None:
    def on_event(event: Any, server: Peer) -> None:
        if isinstance(event, h2.events.RequestReceived):
            server.conn.send_headers(
                event.stream_id, [*OK_HEADERS, ("grpc-status", "9"), ("grpc-message", "not running")], end_stream=True
            )

    server = peer(on_event)
    call = Http2Call(str(server.path), METHOD, timeout=10, threaded=True)
    try:
        call.await_server_settings()
        assert call.next_message() is None
        with pytest.raises(CallFailedError) as failed:
            call.status()
    finally:
        call.close()
    assert (failed.value.code, failed.value.message) == (9, "not running")
