"""flow.transport.http2 against an independent HTTP/2 server: the `h2` package (a dev dependency),
on a real Unix socket, answering the way a server may but flowd's rarely does (padding, PING and
SETTINGS mid-response, CONTINUATION, trailers-only errors) and the ways that must send the CLI
back to grpcio (resets, GOAWAY, wrong status, a closed or silent socket). h2 also checks, as the
server, that every frame the client sends is valid HTTP/2."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import short_tmpdir
from flow.transport.http2 import CallFailedError, FastPathUnusableError, unary_call

Respond = Callable[[Any, int, "H2Server"], None]
METHOD = "/flowapi.v1.TaskService/GetTask"


def grpc_body(message: bytes, compressed: bool = False) -> bytes:
    return bytes([1 if compressed else 0]) + len(message).to_bytes(4, "big") + message


class H2Server:
    """One connection, one request, answered by `respond(conn, stream_id, server)`."""

    def __init__(self, path: Path, respond: Respond) -> None:
        self.path = path
        self.respond = respond
        self.request_headers: dict[str, str] = {}
        self.request_body = b""
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self.sock: socket.socket | None = None
        self.hung_up = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def flush(self, conn: Any) -> None:
        assert self.sock is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client hangs up
            self.sock.sendall(conn.data_to_send())  # as soon as it has the trailers

    def _serve(self) -> None:
        try:
            self.sock, _ = self._listener.accept()
            self.sock.settimeout(10)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            self.flush(conn)
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    self.events.append(event)
                    if isinstance(event, h2.events.RequestReceived):
                        self.request_headers = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        self.request_body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self.flush(conn)
                        self.respond(conn, event.stream_id, self)
                self.flush(conn)
                if self.hung_up:
                    return  # after our GOAWAY, whatever the client still sends is moot
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            if self.sock is not None:
                self.sock.close()

    def close(self) -> None:
        self._thread.join(10)
        self._listener.close()
        if self.error is not None:
            raise self.error


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], H2Server]]:
    root = short_tmpdir("flow-h2-")
    servers: list[H2Server] = []

    def start(respond: Respond) -> H2Server:
        server = H2Server(root / f"s{len(servers)}.sock", respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
        server.path.unlink(missing_ok=True)
    root.rmdir()


def call(server: H2Server, message: bytes = b"\x0a\x03abc", timeout: float = 5.0) -> bytes:
    return unary_call(str(server.path), METHOD, message, timeout)


OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


def plain(reply: bytes) -> Respond:
    def respond(conn: Any, stream: int, server: H2Server) -> None:
        conn.send_headers(stream, OK_HEADERS)
        conn.send_data(stream, grpc_body(reply))
        conn.send_headers(stream, [("grpc-status", "0")], end_stream=True)

    return respond


def test_sends_a_valid_grpc_request_and_reads_the_reply(serve: Callable[[Respond], H2Server]) -> None:
    server = serve(plain(b"reply bytes"))
    assert call(server, b"request bytes", timeout=7.0) == b"reply bytes"
    server.close()
    assert server.request_headers[":method"] == "POST"
    assert server.request_headers[":path"] == METHOD
    assert server.request_headers["content-type"] == "application/grpc"
    assert server.request_headers["te"] == "trailers"
    assert server.request_headers["grpc-timeout"] == "7000m"
    assert server.request_body == grpc_body(b"request bytes")


@settings(max_examples=40, deadline=None)
@given(
    reply=st.binary(max_size=100_000),
    pieces=st.lists(st.integers(min_value=1, max_value=20_000), min_size=1, max_size=8),
    pad=st.integers(min_value=0, max_value=255),
)
def test_split_padded_data_with_pings_and_settings_in_between(reply: bytes, pieces: list[int], pad: int) -> None:
    """The reply cut into padded DATA frames, a PING and a SETTINGS change between them: the
    message comes back whole, and the client acknowledged both."""

    def respond(conn: Any, stream: int, server: H2Server) -> None:
        conn.send_headers(stream, OK_HEADERS)
        body = grpc_body(reply)
        at = 0
        for i, size in enumerate(pieces):
            part = body[at : at + size] if i < len(pieces) - 1 else body[at:]
            at += len(part)
            if part:
                conn.send_data(stream, part, pad_length=pad)
            conn.ping(i.to_bytes(8, "big"))
            server.flush(conn)
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 7})
        conn.send_headers(stream, [("grpc-status", "0"), ("x-extra", "y" * 100)], end_stream=True)

    root = short_tmpdir("flow-h2p-")
    server = H2Server(root / "s.sock", respond)
    try:
        assert unary_call(str(server.path), METHOD, b"", 10.0) == reply
    finally:
        server.close()
        server.path.unlink()
        root.rmdir()
    # Every PING and SETTINGS came before the trailers, so the client answered each before it
    # hung up (the server's own initial SETTINGS too).
    acks = [e.ping_data for e in server.events if isinstance(e, h2.events.PingAckReceived)]
    assert acks == [i.to_bytes(8, "big") for i in range(len(pieces))]
    assert sum(isinstance(e, h2.events.SettingsAcknowledged) for e in server.events) == 2


def test_trailers_in_continuation_frames_and_status_details(serve: Callable[[Respond], H2Server]) -> None:
    """A non-OK status whose trailers span HEADERS + CONTINUATION frames (h2 splits a block larger
    than a frame), with a percent-encoded message and base64 details (no padding)."""
    details = bytes(range(256)) * 10
    message = "tâche introuvable: " + "x" * 30_000

    def respond(conn: Any, stream: int, server: H2Server) -> None:
        conn.max_outbound_frame_size = 16_384  # as if the client had asked for 16 KiB frames
        conn.streams[stream].max_outbound_frame_size = 16_384
        encoded = "".join(c if 0x20 <= ord(c) <= 0x7E and c != "%" else _pct(c) for c in message)
        conn.send_headers(stream, OK_HEADERS)
        conn.send_headers(
            stream,
            [
                ("grpc-status", "5"),
                ("grpc-message", encoded),
                ("grpc-status-details-bin", base64.b64encode(details).decode().rstrip("=")),
            ],
            end_stream=True,
        )

    server = serve(respond)
    with pytest.raises(CallFailedError) as failed:
        call(server)
    assert failed.value.code == 5
    assert failed.value.message == message
    assert failed.value.details == details


def _pct(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode())


def test_a_trailers_only_error(serve: Callable[[Respond], H2Server]) -> None:
    def respond(conn: Any, stream: int, server: H2Server) -> None:
        conn.send_headers(stream, [*OK_HEADERS, ("grpc-status", "3"), ("grpc-message", "bad%20thing")], end_stream=True)

    with pytest.raises(CallFailedError) as failed:
        call(serve(respond))
    assert (failed.value.code, failed.value.message, failed.value.details) == (3, "bad thing", None)


def _reset(conn: Any, stream: int, server: H2Server) -> None:
    conn.reset_stream(stream)


def _goaway(conn: Any, stream: int, server: H2Server) -> None:
    conn.close_connection(last_stream_id=0)
    server.hung_up = True


def _http_503(conn: Any, stream: int, server: H2Server) -> None:
    conn.send_headers(stream, [(":status", "503"), ("content-type", "text/plain")], end_stream=True)


def _not_grpc(conn: Any, stream: int, server: H2Server) -> None:
    conn.send_headers(stream, [(":status", "200"), ("content-type", "text/html")])
    conn.send_data(stream, b"<html>", end_stream=True)


def _no_trailers(conn: Any, stream: int, server: H2Server) -> None:
    conn.send_headers(stream, OK_HEADERS)
    conn.send_data(stream, grpc_body(b"x"), end_stream=True)


def _two_messages(conn: Any, stream: int, server: H2Server) -> None:
    conn.send_headers(stream, OK_HEADERS)
    conn.send_data(stream, grpc_body(b"a") + grpc_body(b"b"))
    conn.send_headers(stream, [("grpc-status", "0")], end_stream=True)


def _compressed(conn: Any, stream: int, server: H2Server) -> None:
    conn.send_headers(stream, [*OK_HEADERS, ("grpc-encoding", "gzip")])
    conn.send_data(stream, grpc_body(b"zz", compressed=True))
    conn.send_headers(stream, [("grpc-status", "0")], end_stream=True)


def _hang_up(conn: Any, stream: int, server: H2Server) -> None:
    conn.send_headers(stream, OK_HEADERS)
    server.flush(conn)
    assert server.sock is not None
    server.sock.shutdown(socket.SHUT_RDWR)


def _bad_status_details(conn: Any, stream: int, server: H2Server) -> None:
    conn.send_headers(
        stream, [*OK_HEADERS, ("grpc-status", "5"), ("grpc-status-details-bin", "!!not base64!!")], end_stream=True
    )


@pytest.mark.parametrize(
    "respond",
    [_reset, _goaway, _http_503, _not_grpc, _no_trailers, _two_messages, _compressed, _hang_up, _bad_status_details],
)
def test_surprises_send_the_caller_back_to_grpcio(serve: Callable[[Respond], H2Server], respond: Respond) -> None:
    with pytest.raises(FastPathUnusableError):
        call(serve(respond))


def test_a_silent_server_runs_into_the_deadline(serve: Callable[[Respond], H2Server]) -> None:
    """As grpcio does when its own deadline passes: DEADLINE_EXCEEDED (which the channel turns into
    flow.errors.TimeoutError), not a fallback that would wait the whole time again."""
    server = serve(lambda conn, stream, srv: None)
    with pytest.raises(CallFailedError) as failed:
        call(server, timeout=0.5)
    assert (failed.value.code, failed.value.message) == (4, "Deadline Exceeded")


def test_true_binary_status_details(serve: Callable[[Respond], H2Server]) -> None:
    """We allow gRPC's true binary metadata (SETTINGS 0xFE03): grpc-status-details-bin may come
    as the raw bytes after a 0 byte, as flowd's grpc sends it to us, instead of base64."""
    details = bytes(range(256))

    trailers = [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"5"),
        (b"grpc-message", b"gone"),
        (b"grpc-status-details-bin", b"\x00" + details),
    ]

    def respond(conn: Any, stream: int, server: H2Server) -> None:
        conn.send_headers(stream, trailers, end_stream=True)

    server = serve(respond)
    with pytest.raises(CallFailedError) as failed:
        call(server)
    assert (failed.value.code, failed.value.message, failed.value.details) == (5, "gone", details)
    server.close()
    assert any(isinstance(e, h2.events.RemoteSettingsChanged) and 0xFE03 in e.changed_settings for e in server.events)
