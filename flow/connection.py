"""The SDK's one transport seam: a connection to the user's flowd, started on first use.

Every call goes through `DaemonConnection`: the SDK hands it encoded calls (flow.wire builds
them and reads their replies into SDK values) and it sends them over a channel (flow.transport):
grpcio by default, opened on the first call, or whatever channel the caller passes (a test's).
When the daemon is gone, it starts it again and retries: all Flow calls are safe to retry
(CreateTask carries a request_id, log streams resume from their cursor).

The CLI asks for HTTP/2 first (`prefer_http2`): calls to the local daemon then go over
flow.transport.http2, without importing grpcio, and any call that channel cannot make
(FastPathUnusableError) is made over grpcio instead, as are all later calls of that connection.
Bidirectional streams (exec sessions) to the local daemon take HTTP/2 first for every client, the
SDK's too: grpcio starts two threads for each such call, which made a one-shot `task.exec("true")`
4x `subprocess.run(["true"])` where HTTP/2, one connection per call, makes it 3x.
A call is handed over whole, before any of its effects could be seen twice: a unary or
client-streaming call is simply made again (a fresh request stream), a server stream only before
its first reply, a bidirectional one only before its first request was taken. Past that point a
broken stream is reported as grpcio reports a daemon gone mid-stream (DaemonUnavailableError), and
log streams resume from their cursor as they always do.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, TypeVar

from flow.errors import DaemonUnavailableError, ValidationError
from flow.home import FlowHome, UnsafeHomeError, check_ownership, resolve_home
from flow.transport.channel import FastPathUnusableError

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from flow.transport.channel import Channel, Remote
    from flow.wire.calls import Call, StreamingCall
    from flow.wire.daemon_codec import DaemonInfo

T = TypeVar("T")
START_TIMEOUT: Final = 30.0
EXIT_ALREADY_RUNNING: Final = 3  # flowd's exit status when another daemon holds the lock
RETRY_WINDOW: Final = 30.0

_http2_first = False  # set by prefer_http2: the CLI's choice, for the connections made after it
_early_starts: dict[Path, subprocess.Popen[str]] = {}  # flowd processes start_daemon_early began


def prefer_http2(enabled: bool = True) -> None:
    """Connections to the local daemon made from now on in this process try HTTP/2 without
    grpcio first (the CLI: its start-up cannot afford importing grpcio). The SDK keeps grpcio,
    whose one channel a long-lived program reuses for all its calls."""
    global _http2_first
    _http2_first = enabled


class DaemonStartError(DaemonUnavailableError):
    """flowd was started and did not come up (it exited with an error, or never said it serves):
    final, unlike a daemon that is merely not there yet, so calls stop retrying and show why."""


def _flowd_command(home: FlowHome) -> list[str]:
    return [sys.executable, "-m", "flowd", "--detach", "--home", str(home.root)]


def _spawn_flowd(home: FlowHome) -> subprocess.Popen[str]:
    import subprocess  # here: `flow status` imports this module and must start fast

    return subprocess.Popen(
        _flowd_command(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_daemon_early(home: FlowHome) -> None:
    """Starts flowd for `home` now, without waiting, when its socket is missing (no daemon can be
    serving it): the caller goes on importing what its first call needs while flowd starts, and
    `start_daemon` later waits for this one instead of starting another."""
    if home.root not in _early_starts and not os.path.lexists(home.socket):
        _early_starts[home.root] = _spawn_flowd(home)


def start_daemon(home: FlowHome) -> None:
    """Starts flowd in the background and returns once it serves (or another one does).

    Race-free: when two clients start one at once, flowd's flock lets exactly one serve; the
    other exits with EXIT_ALREADY_RUNNING and its caller simply waits for the winner."""
    import subprocess

    process = _early_starts.pop(home.root, None) or _spawn_flowd(home)
    try:
        _, stderr = process.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise DaemonStartError(
            f"flowd did not start within {START_TIMEOUT:g} s",
            suggestions=[f"look at {home.daemon_log}", "run `flowd` in a terminal to see why"],
        ) from None
    if process.returncode not in (0, EXIT_ALREADY_RUNNING):
        detail = stderr.strip() or f"exit status {process.returncode}"
        raise DaemonStartError(
            f"flowd could not be started: {detail}",
            suggestions=[f"look at {home.daemon_log}", "run `flowd` in a terminal to see why"],
        )


def _check_ownership(home: FlowHome) -> None:
    """A home another user controls is refused before its socket is used (see flow.home)."""
    try:
        check_ownership(home)
    except UnsafeHomeError as exc:
        raise ValidationError(
            str(exc), suggestions=[f"check the owner with `ls -ld {home.root} {home.socket}`"]
        ) from None


class DaemonConnection:
    """Calls to one flowd. `channel` replaces the grpcio channel (and is never reopened); without
    one, `remote` (FLOW_DAEMON_ADDRESS) or else the daemon of `home` is reached over grpcio."""

    def __init__(
        self,
        home: FlowHome | None = None,
        auto_start: bool = True,
        remote: Remote | None = None,
        channel: Channel | None = None,
    ) -> None:
        self.home = home or resolve_home()
        if remote is None:  # this user's own daemon, through its socket in the home
            _check_ownership(self.home)
        self.remote = remote
        self.auto_start = auto_start and remote is None  # a remote daemon is not ours to start
        self._injected = channel is not None
        self._channel = channel
        self._http2: Channel | None = None
        self._http2_usable = channel is None and remote is None  # until its first surprise
        self._http2_allowed = _http2_first and self._http2_usable
        self.closings = 0  # channels close() closed for good: a stream broken by that resumes
        if self.auto_start and not self._injected:
            start_daemon_early(self.home)

    def _first_channel(self, bidirectional: bool = False) -> Channel | None:
        """The HTTP/2 channel while this connection may still use it (for a bidirectional
        stream, whenever the daemon is the local one)."""
        if not (self._http2_allowed or (bidirectional and self._http2_usable)):
            return None
        if self._http2 is None:
            from flow.transport.http2 import Http2Channel

            self._http2 = Http2Channel(str(self.home.socket))
        return self._http2

    def _give_up_http2(self) -> None:
        """After one surprise, this connection's calls all go over grpcio."""
        self._http2_allowed = self._http2_usable = False
        self._http2 = None

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            from flow.transport.grpc_channel import GrpcChannel  # grpcio only once a call needs it

            self._channel = GrpcChannel.open(self.home, self.remote)
        return self._channel

    def _reopen(self) -> None:
        """A fresh grpcio channel: the old one may be backing off from the dead socket."""
        if not self._injected:
            self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            if not self._injected:
                self._channel = None
                self.closings += 1

    def ensure_daemon(self) -> DaemonInfo:
        """Answers the daemon's info, starting flowd first when none serves this home."""
        from flow.wire.daemon_codec import daemon_info_call

        try:
            return self._unary_once(daemon_info_call(), timeout=5.0)
        except DaemonUnavailableError:
            if not self.auto_start:
                raise
        return self._restart()

    def _restart(self) -> DaemonInfo:
        from flow.wire.daemon_codec import daemon_info_call

        start_daemon(self.home)
        self._reopen()
        return self._unary_once(daemon_info_call(), timeout=START_TIMEOUT, wait_for_ready=True)

    def _unary_once(self, call: Call[T], timeout: float, wait_for_ready: bool = False) -> T:
        first = self._first_channel()
        if first is not None:
            try:
                return call.read(first.unary(call.method, call.request, timeout, wait_for_ready))
            except FastPathUnusableError:
                self._give_up_http2()
        return call.read(self.channel.unary(call.method, call.request, timeout, wait_for_ready))

    def unary(self, call: Call[T], timeout: float) -> T:
        """The answer to one call. If the daemon has gone away, it is started again and the call
        repeated, for up to RETRY_WINDOW seconds."""
        return self._retrying(lambda: self._unary_once(call, timeout))

    def client_stream(self, call: StreamingCall[T], timeout: float) -> T:
        """The answer to a stream of requests (sent again, from the start, on a retry)."""
        return self._retrying(lambda: self._client_stream_once(call, timeout))

    def _client_stream_once(self, call: StreamingCall[T], timeout: float) -> T:
        first = self._first_channel()
        if first is not None:
            try:
                return call.read(first.client_stream(call.method, call.requests(), timeout))
            except FastPathUnusableError:
                self._give_up_http2()
        return call.read(self.channel.client_stream(call.method, call.requests(), timeout))

    def server_stream(self, call: Call[T], timeout: float | None = None) -> Iterator[T]:
        """The answers to one request, as they come. Resuming a broken stream is the caller's job."""
        first = self._first_channel()
        if first is not None:
            replied = False
            try:
                for raw in first.server_stream(call.method, call.request, timeout):
                    replied = True
                    yield call.read(raw)
                return
            except FastPathUnusableError as exc:
                self._give_up_http2()
                if replied:
                    raise self._broken_stream(exc) from None
        for raw in self.channel.server_stream(call.method, call.request, timeout):
            yield call.read(raw)

    def bidi_stream(self, call: StreamingCall[T]) -> Iterator[T]:
        first = self._first_channel(bidirectional=True)
        if first is not None:
            taken = False

            def requests() -> Iterator[bytes]:
                nonlocal taken
                taken = True  # from here on, the requests are this attempt's
                yield from call.requests()

            try:
                for raw in first.bidi_stream(call.method, requests()):
                    yield call.read(raw)
                return
            except FastPathUnusableError as exc:
                self._give_up_http2()
                if taken:
                    raise self._broken_stream(exc) from None
        for raw in self.channel.bidi_stream(call.method, call.requests()):
            yield call.read(raw)

    def _broken_stream(self, why: Exception) -> DaemonUnavailableError:
        return DaemonUnavailableError(
            f"the stream from flowd at {self.home.socket} broke: {why}",
            suggestions=["try again", f"if it keeps happening, look at {self.home.daemon_log}"],
        )

    def _retrying(self, attempt: Callable[[], T]) -> T:
        deadline = time.monotonic() + RETRY_WINDOW
        while True:
            try:
                return attempt()
            except DaemonUnavailableError:
                if not (self.auto_start and time.monotonic() < deadline):
                    raise
            try:
                self._restart()
            except DaemonStartError:
                raise
            except DaemonUnavailableError:
                time.sleep(0.2)


__all__ = ["DaemonConnection", "DaemonStartError", "prefer_http2", "start_daemon", "start_daemon_early"]
