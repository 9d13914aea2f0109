"""The SDK's one transport seam: a gRPC channel to the user's flowd, started on first use.

Every call goes through `DaemonConnection.call` (or `.stream`), which turns gRPC failures into
the SDK's exceptions (one table, flow.wire.error_table) and, when the daemon is gone, starts it
again and retries: all Flow calls are safe to retry (CreateTask carries a request_id, log
streams resume from their cursor).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, NamedTuple, TypeVar

import grpc
from grpc_status import rpc_status

from flow.errors import DaemonUnavailableError, FlowError, ValidationError
from flow.home import FlowHome, UnsafeHomeError, check_ownership, resolve_home
from flow.wire.error_table import exception_from_status
from flowapi.v1 import (
    code_service_pb2_grpc,
    daemon_service_pb2,
    daemon_service_pb2_grpc,
    instance_service_pb2_grpc,
    task_service_pb2_grpc,
    volume_pb2_grpc,
)

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


def _unavailable(home: FlowHome, cause: str) -> DaemonUnavailableError:
    return DaemonUnavailableError(
        f"cannot reach flowd at {home.socket}: {cause}",
        suggestions=[
            "start it with `flow daemon start` (or run `flowd` in a terminal)",
            "check FLOW_HOME if the daemon runs with another state directory",
        ],
    )


def translate(error: grpc.RpcError, home: FlowHome) -> FlowError:
    """The SDK exception for a failed call."""
    call: Any = error
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    details = call.details() if hasattr(call, "details") else str(error)
    if code == grpc.StatusCode.UNAVAILABLE and not _has_status_details(call):
        return _unavailable(home, details or "unavailable")
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        status = None
    return exception_from_status(code.value[0], details or "", status)


def _has_status_details(call: Any) -> bool:
    metadata = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    return any(key == "grpc-status-details-bin" for key, _ in metadata or ())


def _is_daemon_gone(error: grpc.RpcError) -> bool:
    call: Any = error
    return bool(hasattr(call, "code") and call.code() == grpc.StatusCode.UNAVAILABLE and not _has_status_details(call))


class Remote(NamedTuple):
    """A flowd reached over TCP: `tcp://host:port` (loopback) or `tls://host:port`, its token,
    and for TLS the CA certificate (PEM) that signed the daemon's certificate."""

    address: str
    token: str
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Remote | None:
        """FLOW_DAEMON_ADDRESS, FLOW_DAEMON_TOKEN and FLOW_DAEMON_CA; None: the local socket."""
        target = env.get("FLOW_DAEMON_ADDRESS", "")
        if not target or target.startswith("unix:"):
            return None
        scheme, sep, rest = target.partition("://")
        if not sep or scheme not in ("tcp", "tls") or not rest:
            raise ValidationError(
                f"FLOW_DAEMON_ADDRESS={target!r} is not tcp://HOST:PORT or tls://HOST:PORT",
                suggestions=["e.g. FLOW_DAEMON_ADDRESS=tls://gpu-box:50051 (and FLOW_DAEMON_TOKEN, FLOW_DAEMON_CA)"],
            )
        token = env.get("FLOW_DAEMON_TOKEN", "")
        if not token:
            raise ValidationError(
                "FLOW_DAEMON_TOKEN is not set: a TCP daemon answers only calls that carry its token",
                suggestions=["copy it from $FLOW_HOME/daemon-token on the daemon's machine"],
            )
        return cls(address=rest, token=token, tls=scheme == "tls", ca_file=env.get("FLOW_DAEMON_CA") or None)


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


CHANNEL_OPTIONS: Final = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.enable_retries", 0)]


def _check_ownership(home: FlowHome) -> None:
    """A home another user controls is refused before its socket is used (see flow.home)."""
    try:
        check_ownership(home)
    except UnsafeHomeError as exc:
        raise ValidationError(
            str(exc), suggestions=[f"check the owner with `ls -ld {home.root} {home.socket}`"]
        ) from None


class DaemonConnection:
    def __init__(self, home: FlowHome | None = None, auto_start: bool = True, remote: Remote | None = None) -> None:
        self.home = home or resolve_home()
        if remote is None:
            _check_ownership(self.home)
        self.remote = remote
        self.auto_start = auto_start and remote is None  # a remote daemon is not ours to start
        self._channel: grpc.Channel | None = None
        self._open()

    def _open(self) -> None:
        if self._channel is not None:
            self._channel.close()
        remote = self.remote
        if remote is None:
            self._channel = grpc.insecure_channel(self.home.address, options=CHANNEL_OPTIONS)
        else:
            if remote.tls:
                ca = open(remote.ca_file, "rb").read() if remote.ca_file else None  # noqa: SIM115
                base = grpc.secure_channel(remote.address, grpc.ssl_channel_credentials(ca), options=CHANNEL_OPTIONS)
            else:
                base = grpc.insecure_channel(remote.address, options=CHANNEL_OPTIONS)
            self._channel = grpc.intercept_channel(base, _BearerToken(remote.token))
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self.daemon = daemon_service_pb2_grpc.DaemonServiceStub(self._channel)
        self.instances = instance_service_pb2_grpc.InstanceServiceStub(self._channel)
        self.code = code_service_pb2_grpc.CodeServiceStub(self._channel)
        self.volumes = volume_pb2_grpc.VolumeServiceStub(self._channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def ensure_daemon(self) -> daemon_service_pb2.GetDaemonInfoResponse:
        """Answers the daemon's info, starting flowd first when none serves this home."""
        try:
            reply: daemon_service_pb2.GetDaemonInfoResponse = self.daemon.GetDaemonInfo(
                daemon_service_pb2.GetDaemonInfoRequest(), timeout=5.0
            )
            return reply
        except grpc.RpcError as error:
            if not _is_daemon_gone(error):
                raise translate(error, self.home) from None
            if not self.auto_start:
                raise translate(error, self.home) from None
        return self._restart()

    def _restart(self) -> daemon_service_pb2.GetDaemonInfoResponse:
        start_daemon(self.home)
        self._open()  # a fresh channel: the old one may be backing off from the dead socket
        try:
            reply: daemon_service_pb2.GetDaemonInfoResponse = self.daemon.GetDaemonInfo(
                daemon_service_pb2.GetDaemonInfoRequest(), timeout=START_TIMEOUT, wait_for_ready=True
            )
            return reply
        except grpc.RpcError as error:
            raise translate(error, self.home) from None

    def call(self, invoke: Callable[[DaemonConnection], T]) -> T:
        """Runs `invoke` (one unary call on self.tasks or self.daemon). If the daemon has gone
        away, it is started again and the call repeated, for up to RETRY_WINDOW seconds."""
        deadline = time.monotonic() + RETRY_WINDOW
        while True:
            try:
                return invoke(self)
            except grpc.RpcError as error:
                if not (_is_daemon_gone(error) and self.auto_start and time.monotonic() < deadline):
                    raise translate(error, self.home) from None
            try:
                self._restart()
            except DaemonUnavailableError:
                time.sleep(0.2)

    def stream(self, open_stream: Callable[[], Iterator[T]]) -> Iterator[T]:
        """Iterates a server stream, translating its failure. Resuming is the caller's job."""
        try:
            yield from open_stream()
        except grpc.RpcError as error:
            raise translate(error, self.home) from None


__all__ = ["DaemonConnection", "start_daemon", "translate"]
