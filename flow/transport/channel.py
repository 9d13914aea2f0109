"""A channel to flowd, as the connection (flow.connection) sees every transport, and where the
daemon is when it is not the local one.

A channel moves serialized messages (flow.wire encodes and decodes them) and raises the SDK's
exceptions, translated by the one error table (flow.wire.error_table). A daemon that does not
answer at all raises DaemonUnavailableError, which the connection answers by starting one.
A channel that cannot make a call at all, for reasons of its own (the HTTP/2 channel meeting
something it does not handle), raises FastPathUnusableError, and the connection makes the call
over grpcio instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, NamedTuple, Protocol

from flow.errors import DaemonUnavailableError, FlowError, ValidationError

UNAVAILABLE: Final = 14  # google.rpc.Code.UNAVAILABLE (grpc.StatusCode.UNAVAILABLE)


class FastPathUnusableError(Exception):
    """This channel cannot make the call (a protocol surprise, a socket it cannot use): the
    caller makes it over grpcio instead. Never reaches a user."""


class Channel(Protocol):
    def unary(self, method: str, request: bytes, timeout: float, wait_for_ready: bool = False) -> bytes:
        """The reply to one request; `wait_for_ready` waits for a daemon still starting."""

    def server_stream(self, method: str, request: bytes, timeout: float | None = None) -> Iterator[bytes]:
        """The replies to one request, as they come."""

    def client_stream(self, method: str, requests: Iterator[bytes], timeout: float) -> bytes:
        """The one reply to a stream of requests."""

    def bidi_stream(self, method: str, requests: Iterator[bytes]) -> Iterator[bytes]:
        """Replies while requests still go up (ExecTask)."""

    def close(self) -> None: ...


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

    def settings(self) -> str:
        """The settings in play, for errors (the token's length only, never the token)."""
        scheme = "tls" if self.tls else "tcp"
        if not self.tls:
            trust = "no TLS"
        elif self.ca_file:
            trust = f"TLS trusting the CA in FLOW_DAEMON_CA={self.ca_file}"
        else:
            trust = "TLS trusting the system's CA certificates (FLOW_DAEMON_CA is not set)"
        return (
            f"FLOW_DAEMON_ADDRESS={scheme}://{self.address}, FLOW_DAEMON_TOKEN set ({len(self.token)} characters), "
            + trust
        )

    def unreachable_hints(self) -> list[str]:
        host = self.address.rpartition(":")[0] or self.address
        listen = f"flowd --tcp {self.address}" + (" --tls-cert CERT --tls-key KEY" if self.tls else "")
        hints = [f"check that flowd runs on {host} as `{listen}` and that this machine can reach it"]
        if self.tls:
            hints.append("check that FLOW_DAEMON_CA names the CA that signed the daemon's certificate")
        hints.append("unset FLOW_DAEMON_ADDRESS to use the daemon of this machine ($FLOW_HOME/flowd.sock)")
        return hints


def unreachable(where: str, detail: str, remote: Remote | None = None) -> DaemonUnavailableError:
    """No daemon answers at `where` (the local socket, or `remote`'s address)."""
    if remote is not None:
        return DaemonUnavailableError(
            f"cannot reach the remote flowd at {where}: {detail or 'unavailable'} (settings: {remote.settings()})",
            suggestions=remote.unreachable_hints(),
        )
    return DaemonUnavailableError(
        f"cannot reach flowd at {where}: {detail or 'unavailable'}",
        suggestions=[
            "start it with `flow daemon start` (or run `flowd` in a terminal)",
            "check FLOW_HOME if the daemon runs with another state directory",
        ],
    )


def call_failure(code: int, message: str, details: bytes | None, where: str, remote: Remote | None = None) -> FlowError:
    """The SDK exception for a call that ended with a non-OK status, whichever transport carried
    it. UNAVAILABLE without a status of flowd's is no daemon at all: DaemonUnavailableError."""
    if code == UNAVAILABLE and details is None:
        return unreachable(where, message, remote)
    from flow.wire.error_table import exception_from_call

    return exception_from_call(code, message, details)


__all__ = ["Channel", "FastPathUnusableError", "Remote", "call_failure", "unreachable"]
