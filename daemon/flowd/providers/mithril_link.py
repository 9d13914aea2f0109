"""One kept-open SSH connection (paramiko) to one Mithril instance address (`host:port`): short
commands, SFTP reads and writes, and long-lived channels (the log stream of flowd.providers.
mithril_stream). Every channel it opens is counted (`commands`), for the benchmark.

Host keys: the configured known_hosts file, else Flow's own, where an instance's key is recorded
the first time Flow sees it (OpenSSH's accept-new): every later connection must present the same
key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import paramiko
from attrs import frozen

from flowd.providers.ssh_connection import KeptConnection, drain
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 10.0
KEEPALIVE: Final = 15  # seconds: a connection to an instance that vanished is noticed


class LinkError(Exception):
    """The instance cannot be reached, or refused what was asked; the message says which."""


@frozen
class LinkSettings:
    host: str
    port: int
    user: str
    key_file: str | None
    known_hosts: str | None  # None: learnt on first use, in `learnt_hosts`
    learnt_hosts: Path
    host_key_checking: bool = True


@frozen
class Completed:
    rc: int
    stdout: bytes
    stderr: bytes


def learn_host(path: Path, host: str, port: int) -> None:
    """Records the host's key in `path` unless it is there already (accept-new)."""
    known = paramiko.HostKeys()
    with contextlib.suppress(FileNotFoundError):
        known.load(str(path))
    entry = host if port == 22 else f"[{host}]:{port}"
    if known.lookup(entry) is not None:
        return
    transport = paramiko.Transport((host, port))
    try:
        transport.start_client(timeout=CONNECT_TIMEOUT)
        key = transport.get_remote_server_key()
    finally:
        transport.close()
    known.add(entry, key.get_name(), key)
    TaskDir(path.parent).write(path.name, b"")
    known.save(str(path))


class InstanceLink(KeptConnection):
    def __init__(self, settings: LinkSettings) -> None:
        super().__init__(f"{settings.user}@{settings.host}:{settings.port}")
        self._settings = settings
        self.commands = 0  # channels opened (commands, streams), read by the benchmark

    @property
    def known_hosts(self) -> str:
        s = self._settings
        if s.known_hosts is not None:
            return os.path.expanduser(s.known_hosts)
        try:
            learn_host(s.learnt_hosts, s.host, s.port)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise LinkError(f"cannot reach {s.host}:{s.port} over SSH yet: {exc}") from None
        return str(s.learnt_hosts)

    # --- the connection ------------------------------------------------------------------

    def _open(self) -> Any:
        s = self._settings
        client = paramiko.SSHClient()
        if s.host_key_checking:
            known = self.known_hosts
            try:
                client.load_host_keys(known)
            except (OSError, paramiko.SSHException) as exc:
                raise LinkError(f"cannot read the known_hosts file {known}: {exc}") from None
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.WarningPolicy())
        try:
            client.connect(
                s.host,
                port=s.port,
                username=s.user,
                key_filename=s.key_file,
                look_for_keys=s.key_file is None,
                allow_agent=s.key_file is None,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise LinkError(
                f"the host key of {s.host}:{s.port} is not the one recorded: the instance changed its key, "
                "or someone is intercepting the connection"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise LinkError(f"{self.description} refused the key {s.key_file}: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise LinkError(f"cannot connect to {self.description}: {exc}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE)
        return client

    def drop(self) -> None:
        """Closes the connection (the next use opens a new one)."""
        with self._lock:
            self._drop_locked()

    def close(self) -> None:
        self.drop()

    # --- channels ------------------------------------------------------------------------

    def open_channel(self, command: str) -> Any:
        """A channel running `command`, for the caller to talk to (and close)."""
        client = self._connect()
        try:
            channel = client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
            self.commands += 1
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.drop()
            raise LinkError(f"lost the connection to {self.description}: {exc}") from None
        return channel

    def run(self, script: str, timeout: float = 60.0) -> Completed:
        """`script` run by bash on the instance; its status and output."""
        deadline = time.monotonic() + timeout
        channel = self.open_channel("bash -s")
        try:
            channel.sendall(script.encode())
            channel.shutdown_write()
            too_late = f"a command on {self.description} did not finish in time"
            out, err = drain(channel, deadline, lambda: LinkError(too_late), poll=0.1)
            return Completed(int(channel.recv_exit_status()), out, err)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.drop()
            raise LinkError(f"lost the connection to {self.description}: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                channel.close()

    # --- files ---------------------------------------------------------------------------

    def _with_sftp(self, action: Callable[[Any], Any], what: str) -> Any:
        with self._sftp_lock:
            client = self._connect()
            try:
                if self._sftp is None:
                    self._sftp = client.open_sftp()
                return action(self._sftp)
            except FileNotFoundError:
                raise
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._sftp = None
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise LinkError(f"cannot {what} on {self.description}: {exc}") from None
                self.drop()
                raise LinkError(f"lost the connection to {self.description}: {exc}") from None

    def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        """Writes a file whole: created with `mode` before the first byte goes in."""

        def put(sftp: Any) -> None:
            with sftp.open(remote, "wb") as handle:
                sftp.chmod(remote, mode & (stat.S_IRWXU))
                handle.set_pipelined(True)
                handle.write(data)

        self._with_sftp(put, f"write {remote}")

    def read(self, remote: str) -> bytes | None:
        def get(sftp: Any) -> bytes:
            with sftp.open(remote, "rb") as handle:
                handle.prefetch()
                return bytes(handle.read())

        try:
            data: bytes = self._with_sftp(get, f"read {remote}")
        except FileNotFoundError:
            return None
        return data
