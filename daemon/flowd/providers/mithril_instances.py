"""A Mithril provider's reach into its instances, over SSH (paramiko; one kept-open connection per
instance): uploading a task's staged files, reading its exit record and new log bytes, fetching a
function's result, and the `ssh` command line of `flow ssh`.

Host keys: the configured known_hosts file, else Flow's own, where an instance's key is recorded
the first time Flow sees it (OpenSSH's accept-new): every later connection must present the same
key.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
from pathlib import Path
from typing import Final

import paramiko

from flow.domain.daemon_config import MithrilSettings, SshSettings
from flow.domain.mithril.startup_script import EXIT_FILE, OUTPUT_FILE, READY_FILE, RESULT_FILE, TIMED_OUT_FILE, task_dir
from flow.domain.mithril.status import parse_destination, parse_exit_code
from flow.domain.task import task_files
from flowd.providers.slurm_cluster import ClusterError, SshCluster
from flowd.providers.task_dir import TaskDir

LOG_CHUNK: Final = 4 * 1024 * 1024
SEPARATOR: Final = b"\n@@flow@@\n"
STAGED_DIR: Final = "upload"


class InstanceShell:
    def __init__(self, settings: MithrilSettings, state_root: Path, key_file: str | None) -> None:
        self._settings = settings
        self._state_root = state_root
        self.key_file = key_file
        self._lock = threading.Lock()
        self._clusters: dict[str, SshCluster] = {}

    def known_hosts(self, host: str, port: int) -> str:
        """The known_hosts file to check `host` against (see the module docstring)."""
        if self._settings.known_hosts is not None:
            return os.path.expanduser(self._settings.known_hosts)
        path = self._state_root / "known_hosts"
        known = paramiko.HostKeys()
        with contextlib.suppress(FileNotFoundError):
            known.load(str(path))
        entry = host if port == 22 else f"[{host}]:{port}"
        if known.lookup(entry) is None:
            transport = paramiko.Transport((host, port))
            try:
                transport.start_client(timeout=10)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
            known.add(entry, key.get_name(), key)
            TaskDir(path.parent).write(path.name, b"")
            known.save(str(path))
        return str(path)

    def _cluster(self, destination: str) -> SshCluster:
        with self._lock:
            found = self._clusters.get(destination)
            if found is not None:
                return found
        parsed = parse_destination(destination)
        if parsed is None:
            raise ClusterError(f"the instance's SSH destination {destination!r} is not host[:port]")
        host, port = parsed
        try:
            known_hosts = self.known_hosts(host, port)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ClusterError(f"cannot reach {destination} over SSH yet: {exc}") from None
        ssh = SshSettings(
            host=host,
            port=port,
            user=self._settings.ssh_user,
            key_file=self.key_file,
            known_hosts=known_hosts,
            host_key_checking=self._settings.host_key_checking,
            connect_timeout=10.0,
        )
        cluster = SshCluster(ssh, user=self._settings.ssh_user, known_hosts=known_hosts)
        with self._lock:
            return self._clusters.setdefault(destination, cluster)

    def drop(self, destination: str) -> None:
        """Closes the connection to an instance no live task uses any more."""
        with self._lock:
            cluster = self._clusters.pop(destination, None)
        if cluster is not None:
            cluster.close()

    def upload(self, task_id: str, local: TaskDir, destination: str) -> None:
        """Sends the staged files (payload, code, secrets) and then `ready`."""
        staged = local.path / STAGED_DIR
        cluster = self._cluster(destination)
        remote = task_dir(task_id)
        # The startup script makes the directory; wait for it (it runs as the instance boots).
        done = cluster.run(
            f"for i in $(seq 600); do [ -d {shlex.quote(remote)} ] && exit 0; sleep 0.1; done; exit 1", 90
        )
        if done.rc != 0:
            raise ClusterError(f"the task directory {remote} did not appear on {destination}")
        for path in sorted(staged.iterdir()):
            cluster.put_file(path, f"{remote}/{path.name}")
        done = cluster.run(f"touch {shlex.quote(remote + '/' + READY_FILE)}", 30)
        if done.rc != 0:
            raise ClusterError(f"cannot mark the upload ready: {done.error_text}")
        for path in staged.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staged.rmdir()

    def read(self, task_id: str, local: TaskDir, destination: str) -> tuple[int | None, bool, bytes]:
        """The exit record, whether the time limit stopped it, and the log's new bytes (appended
        to the local copy, exactly once)."""
        offset = _size(local.output)
        remote = shlex.quote(task_dir(task_id))
        sep = "printf '\\n@@flow@@\\n'"
        script = (
            f"cat {remote}/{EXIT_FILE} 2>/dev/null; {sep}; "
            f"[ -e {remote}/{TIMED_OUT_FILE} ] && echo T; {sep}; "
            f"tail -c +{offset + 1} {remote}/{OUTPUT_FILE} 2>/dev/null | head -c {LOG_CHUNK}"
        )
        done = self._cluster(destination).run(script, 60)
        parts = done.stdout.split(SEPARATOR, 2)
        if len(parts) != 3:
            raise ClusterError(f"unreadable answer from {destination}")
        code = parse_exit_code(parts[0].decode("utf-8", "replace"))
        local.append_at(task_files.OUTPUT, offset, parts[2])
        return code, parts[1].strip() == b"T", parts[2]

    def fetch_result(self, task_id: str, local: TaskDir, destination: str) -> None:
        """A function call's result.json, copied here before the bid (and the instance) goes."""
        data = self._cluster(destination).read_file(f"{task_dir(task_id)}/{RESULT_FILE}")
        if data is not None:
            local.write(task_files.RESULT, data)

    def ssh_command(self, task_id: str, destination: str, argv: tuple[str, ...], tty: bool) -> list[str]:
        """`ssh ... user@host -- <command in the task's code directory>` (raises ClusterError)."""
        parsed = parse_destination(destination)
        if parsed is None:
            raise ClusterError(f"task {task_id} has no instance to run commands on yet")
        host, port = parsed
        try:
            known = self.known_hosts(host, port)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ClusterError(f"cannot reach the instance over SSH: {exc}") from None
        remote = f"cd {shlex.quote(task_dir(task_id))}/code 2>/dev/null; exec " + (
            " ".join(shlex.quote(a) for a in argv) if argv else "bash -l"
        )
        key = ["-i", self.key_file, "-o", "IdentitiesOnly=yes"] if self.key_file else []
        return [
            "ssh", "-q", "-p", str(port), *key, "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-tt" if tty else "-T",
            f"{self._settings.ssh_user}@{host}", "--", remote,
        ]  # fmt: skip

    def close(self) -> None:
        with self._lock:
            clusters = list(self._clusters.values())
            self._clusters.clear()
        for cluster in clusters:
            cluster.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
