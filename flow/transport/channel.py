"""A channel to flowd, as the connection (flow.connection) sees every transport, and where the
daemon is when it is not the local one.

A channel moves serialized messages (flow.wire encodes and decodes them) and raises the SDK's
exceptions, translated by the one error table (flow.wire.error_table). A daemon that does not
answer at all raises DaemonUnavailableError, which the connection answers by starting one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple, Protocol

from flow.errors import ValidationError


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


__all__ = ["Channel", "Remote"]
