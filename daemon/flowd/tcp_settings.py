"""TCP settings of flowd (no gRPC here: flowd parses them before it forks).

TCP access to flowd is off unless asked for; then every call needs the daemon's token.

The Unix socket needs no token: its 0600 mode in a 0700 directory is the access control. A TCP
listener is opened only with `flowd --tcp HOST:PORT` (or FLOW_DAEMON_TCP), every call on it must
carry `authorization: Bearer <token>` (compared in constant time), and TLS is used when a
certificate and key are given. Binding beyond loopback without TLS is refused: the token would
cross the network in clear.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

TOKEN_FILE = "daemon-token"


class AccessConfigError(Exception):
    """The TCP settings are unusable; the message says why and what to do."""


@frozen
class TcpSettings:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcp_settings(listen: str | None, cert: str | None, key: str | None) -> TcpSettings | None:
    """From flags or FLOW_DAEMON_TCP / FLOW_DAEMON_TLS_CERT / FLOW_DAEMON_TLS_KEY; None: no TCP."""
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AccessConfigError(f"--tcp {listen!r} is not HOST:PORT; give e.g. --tcp 127.0.0.1:50051")
    if (cert is None) != (key is None):
        raise AccessConfigError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
    for path in (cert, key):
        if path is not None and not Path(path).is_file():
            raise AccessConfigError(f"TLS file {path!r} does not exist")
    if cert is None and not _is_loopback(host):
        raise AccessConfigError(
            f"refusing to listen on {host} without TLS: the token would cross the network in clear; "
            "give --tls-cert and --tls-key, or listen on 127.0.0.1"
        )
    return TcpSettings(host, int(port), Path(cert) if cert else None, Path(key) if key else None)


def load_or_create_token(root: Path, env: Mapping[str, str]) -> str:
    """FLOW_DAEMON_TOKEN if set, else $FLOW_HOME/daemon-token (created 0600 on first use)."""
    given = env.get("FLOW_DAEMON_TOKEN")
    if given:
        return given
    path = root / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return token
