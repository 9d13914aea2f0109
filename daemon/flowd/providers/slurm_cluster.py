"""How the slurm provider reaches a cluster's login node: this machine (local CLI mode) or SSH.

Both run bash scripts (`bash -s`, the script on stdin, one process or one SSH exec each) and move
files. Over SSH there is one connection per provider, opened on first use and again after it
breaks; at most MAX_CHANNELS commands share it at once (sshd's MaxSessions is 10 by default).
Host keys are checked against a known_hosts file and unknown ones are refused (never
AutoAddPolicy): a login node Flow cannot authenticate gets none of your code or commands.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from attrs import frozen

from flow.domain.daemon_config import SshSettings
from flowd.providers.environment import public_env
from flowd.providers.ssh_connection import KeptConnection, drain

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 120.0
MAX_CHANNELS: Final = 8


class ClusterError(Exception):
    """The cluster could not be reached, or a command could not be run there (not: the command
    ran and failed, which is a Completed with its status)."""


@frozen
class Completed:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


def _grouped(script: str) -> bytes:
    """The script as one brace group with stdin from /dev/null: bash reads all of it before
    running any of it, so no command can swallow the rest of the script from stdin."""
    return ("{\n" + script + "\n} </dev/null\n").encode()


class Cluster(Protocol):
    local: bool
    description: str

    def run(self, script: str, timeout: float = DEFAULT_TIMEOUT) -> Completed: ...

    def _too_late(self) -> ClusterError:
        return ClusterError(f"a command on {self.description} did not finish in time")

    def command(self, argv: list[str], cwd: str, timeout: float = DEFAULT_TIMEOUT) -> Completed: ...

    def put_file(self, local: Path, remote: str) -> None: ...

    def read_file(self, remote: str) -> bytes | None: ...

    def close(self) -> None: ...


class LocalCluster:
    """Flow runs on the login node: scripts run here, files are files."""

    local = True
    description = "this machine"

    def __init__(
        self, env: Mapping[str, str] | None = None, slurm_conf: str | None = None, bin_dir: str | None = None
    ) -> None:
        source = os.environ if env is None else env
        # flowd's private variables never reach a job; local mode passes the rest, as sbatch's
        # default --export=ALL would from a login shell.
        self._env = public_env(source)
        # What the scripts' prelude sets, for commands run without a shell.
        if slurm_conf:
            self._env["SLURM_CONF"] = slurm_conf
        if bin_dir:
            self._env["PATH"] = f"{bin_dir}:{self._env.get('PATH', '')}"

    def run(self, script: str, timeout: float = DEFAULT_TIMEOUT) -> Completed:
        try:
            done = subprocess.run(
                ["bash", "-s"], input=_grouped(script), capture_output=True, env=self._env, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"a Slurm command took longer than {timeout:g} s") from None
        except OSError as exc:
            raise ClusterError(f"cannot run bash: {exc.strerror}") from None
        return Completed(rc=done.returncode, stdout=done.stdout, stderr=done.stderr)

    def _too_late(self) -> ClusterError:
        return ClusterError(f"a command on {self.description} did not finish in time")

    def command(self, argv: list[str], cwd: str, timeout: float = DEFAULT_TIMEOUT) -> Completed:
        """One Slurm command run here directly (no shell), from `cwd`."""
        try:
            done = subprocess.run(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, env=self._env, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"a Slurm command took longer than {timeout:g} s") from None
        except OSError as exc:
            raise ClusterError(f"cannot run {argv[0]}: {exc.strerror}") from None
        return Completed(rc=done.returncode, stdout=done.stdout, stderr=done.stderr)

    def put_file(self, local: Path, remote: str) -> None:
        raise NotImplementedError("local mode writes files directly")

    def read_file(self, remote: str) -> bytes | None:
        try:
            return Path(remote).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ClusterError(f"cannot read {remote}: {exc.strerror}") from None

    def close(self) -> None:
        pass


def _expand(path: str | None) -> str | None:
    return None if path is None else os.path.expanduser(path)


class SshCluster(KeptConnection):
    """The login node over one shared SSH connection (paramiko, imported by the methods that
    use it: importing it costs flowd's start-up a tenth of a second, and most daemons never SSH)."""

    local = False

    def __init__(self, settings: SshSettings, user: str, known_hosts: str) -> None:
        super().__init__(f"{user}@{settings.host}:{settings.port}")
        self._settings = settings
        self._user = user
        self._known_hosts = known_hosts
        self._channels = threading.BoundedSemaphore(MAX_CHANNELS)

    # --- the connection ------------------------------------------------------------------

    def _open(self) -> Any:
        import paramiko

        s = self._settings
        client = paramiko.SSHClient()
        if s.host_key_checking:
            try:
                client.load_host_keys(self._known_hosts)
            except FileNotFoundError:
                raise ClusterError(
                    f"the known_hosts file {self._known_hosts} does not exist; add the login node's key "
                    f"to it (ssh-keyscan -p {s.port} {s.host}, after checking the fingerprint)"
                ) from None
            except (OSError, paramiko.SSHException) as exc:
                raise ClusterError(f"cannot read the known_hosts file {self._known_hosts}: {exc}") from None
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            log.warning("host key checking is off for %s: its identity is not verified", self.description)
            client.set_missing_host_key_policy(paramiko.WarningPolicy())
        key_file = _expand(s.key_file)
        try:
            client.connect(
                s.host,
                port=s.port,
                username=self._user,
                key_filename=key_file,
                look_for_keys=key_file is None,
                allow_agent=key_file is None,
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise ClusterError(
                f"the host key of {s.host}:{s.port} does not match {self._known_hosts}: the login node changed "
                "its key, or someone is intercepting the connection; check with your cluster's admins"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise ClusterError(f"{self.description} refused the key: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise ClusterError(
                    f"{s.host}:{s.port} is not in {self._known_hosts}: add its key (ssh-keyscan -p {s.port} "
                    f"{s.host} >> {self._known_hosts}, after checking the fingerprint)"
                ) from None
            raise ClusterError(f"cannot connect to {self.description}: {exc}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return client

    def _drop(self, client: Any) -> None:
        with self._lock:
            if self._client is client:
                self._drop_locked()

    # --- commands ------------------------------------------------------------------------

    def run(self, script: str, timeout: float = DEFAULT_TIMEOUT) -> Completed:
        import paramiko

        deadline = time.monotonic() + timeout
        with self._channels:
            client = self._connect()
            channel: Any = None
            try:
                channel = client.get_transport().open_session(timeout=min(timeout, 30.0))
                channel.exec_command("bash -s")
                channel.sendall(_grouped(script))
                channel.shutdown_write()
                out, err = drain(channel, deadline, self._too_late)
                rc = int(channel.recv_exit_status())
            except ClusterError:
                self._drop(client)
                raise
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._drop(client)
                raise ClusterError(f"lost the connection to {self.description}: {exc}") from None
            finally:
                if channel is not None:
                    with contextlib.suppress(Exception):
                        channel.close()
        return Completed(rc=rc, stdout=out, stderr=err)

    def _too_late(self) -> ClusterError:
        return ClusterError(f"a command on {self.description} did not finish in time")

    def command(self, argv: list[str], cwd: str, timeout: float = DEFAULT_TIMEOUT) -> Completed:
        """One command on the login node, from `cwd` (one exec, as `run`)."""
        return self.run(f"cd -- {shlex.quote(cwd)} && exec {shlex.join(argv)}", timeout)

    # --- files ---------------------------------------------------------------------------

    def _sftp_client(self) -> tuple[Any, Any]:
        import paramiko

        client = self._connect()
        if self._sftp is None:
            try:
                self._sftp = client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._drop(client)
                raise ClusterError(f"cannot open SFTP on {self.description}: {exc}") from None
        return client, self._sftp

    def put_file(self, local: Path, remote: str) -> None:
        import paramiko

        with self._sftp_lock:
            client, sftp = self._sftp_client()
            try:
                sftp.put(str(local), remote, confirm=True)
                sftp.chmod(remote, stat.S_IRUSR | stat.S_IWUSR)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._sftp = None
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise ClusterError(f"cannot write {remote} on {self.description}: {exc}") from None
                self._drop(client)
                raise ClusterError(f"lost the connection to {self.description}: {exc}") from None

    def read_file(self, remote: str) -> bytes | None:
        import paramiko

        with self._sftp_lock:
            client, sftp = self._sftp_client()
            try:
                with sftp.open(remote, "rb") as handle:
                    handle.prefetch()
                    return bytes(handle.read())
            except FileNotFoundError:
                return None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._sftp = None
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise ClusterError(f"cannot read {remote} on {self.description}: {exc}") from None
                self._drop(client)
                raise ClusterError(f"lost the connection to {self.description}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._drop_locked()
