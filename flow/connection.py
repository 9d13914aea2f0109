"""The SDK's one transport seam: a connection to the user's flowd, started on first use.

Every call goes through `DaemonConnection`: the SDK hands it encoded calls (flow.wire builds
them and reads their replies into SDK values) and it sends them over a channel (flow.transport):
grpcio by default, opened on the first call, or whatever channel the caller passes (the CLI's
HTTP/2 fast path, a test's). When the daemon is gone, it starts it again and retries: all Flow
calls are safe to retry (CreateTask carries a request_id, log streams resume from their cursor).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, TypeVar

from flow.errors import DaemonUnavailableError, ValidationError
from flow.home import FlowHome, UnsafeHomeError, check_ownership, resolve_home

if TYPE_CHECKING:
    from flow.transport.channel import Channel, Remote
    from flow.wire.calls import Call, StreamingCall
    from flow.wire.daemon_codec import DaemonInfo

T = TypeVar("T")
START_TIMEOUT: Final = 30.0
EXIT_ALREADY_RUNNING: Final = 3  # flowd's exit status when another daemon holds the lock
RETRY_WINDOW: Final = 30.0


def _flowd_command(home: FlowHome) -> list[str]:
    return [sys.executable, "-m", "flowd", "--detach", "--home", str(home.root)]


def start_daemon(home: FlowHome) -> None:
    """Starts flowd in the background and returns once it serves (or another one does).

    Race-free: when two clients start one at once, flowd's flock lets exactly one serve; the
    other exits with EXIT_ALREADY_RUNNING and its caller simply waits for the winner."""
    import subprocess  # here: `flow status` imports this module and must start fast

    try:
        done = subprocess.run(
            _flowd_command(home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise DaemonUnavailableError(
            f"flowd did not start within {START_TIMEOUT:g} s",
            suggestions=[f"look at {home.daemon_log}", "run `flowd` in a terminal to see why"],
        ) from None
    if done.returncode not in (0, EXIT_ALREADY_RUNNING):
        detail = done.stderr.strip() or f"exit status {done.returncode}"
        raise DaemonUnavailableError(
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
        return call.read(self.channel.unary(call.method, call.request, timeout, wait_for_ready))

    def unary(self, call: Call[T], timeout: float) -> T:
        """The answer to one call. If the daemon has gone away, it is started again and the call
        repeated, for up to RETRY_WINDOW seconds."""
        return self._retrying(lambda: self._unary_once(call, timeout))

    def client_stream(self, call: StreamingCall[T], timeout: float) -> T:
        """The answer to a stream of requests (sent again, from the start, on a retry)."""
        return self._retrying(lambda: call.read(self.channel.client_stream(call.method, call.requests(), timeout)))

    def server_stream(self, call: Call[T], timeout: float | None = None) -> Iterator[T]:
        """The answers to one request, as they come. Resuming a broken stream is the caller's job."""
        for raw in self.channel.server_stream(call.method, call.request, timeout):
            yield call.read(raw)

    def bidi_stream(self, call: StreamingCall[T]) -> Iterator[T]:
        for raw in self.channel.bidi_stream(call.method, call.requests()):
            yield call.read(raw)

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
            except DaemonUnavailableError:
                time.sleep(0.2)


__all__ = ["DaemonConnection", "start_daemon"]
