"""A Mithril provider's reach into its instances, over SSH: one kept-open connection per instance
address (mithril_link), carrying that instance's log stream (mithril_stream) and the few one-off
steps of a task: uploading its staged files into each node's directory, fetching a function's
result, and the `ssh` command line of `flow ssh`.

Instances are addressed by their `ssh_destination` ("host:port"). Nothing assumes one task per
address or one address per task: a multi-node task is followed on each of its addresses (each
instance has its own nodes' directories; the stream sends what it finds), and on a platform
(or a fake) where instances share an address, one connection serves them all.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from flow.domain.daemon_config import MithrilSettings
from flow.domain.mithril.startup_script import NODES_DIR, READY_FILE, RESULT_FILE, node_dir, task_dir
from flow.domain.mithril.status import parse_destination
from flow.domain.task import task_files
from flowd.providers.mithril_link import InstanceLink, LinkError, LinkSettings
from flowd.providers.mithril_stream import InstanceStream, StreamSink
from flowd.providers.task_dir import TaskDir

STAGED_DIR: Final = "upload"
UPLOAD_WAIT: Final = 600  # tenths of a second the node directories may take to appear


class InstanceShell:
    def __init__(self, settings: MithrilSettings, state_root: Path, key_file: str, sink: StreamSink) -> None:
        self._settings = settings
        self._state_root = state_root
        self.key_file = key_file
        self._sink = sink
        self._tag = str(state_root)  # names this flowd's watchers among the instance's processes
        self._lock = threading.Lock()
        self._links: dict[str, InstanceLink] = {}
        self._streams: dict[str, InstanceStream] = {}

    @property
    def commands(self) -> int:
        """SSH channels opened so far (commands, streams), over every connection."""
        with self._lock:
            return sum(link.commands for link in self._links.values())

    def link(self, destination: str) -> InstanceLink:
        with self._lock:
            found = self._links.get(destination)
            if found is not None:
                return found
        parsed = parse_destination(destination)
        if parsed is None:
            raise LinkError(f"the instance's SSH destination {destination!r} is not host[:port]")
        host, port = parsed
        link = InstanceLink(
            LinkSettings(
                host=host,
                port=port,
                user=self._settings.ssh_user,
                key_file=self.key_file,
                known_hosts=self._settings.known_hosts,
                learnt_hosts=self._state_root / "known_hosts",
                host_key_checking=self._settings.host_key_checking,
            )
        )
        with self._lock:
            return self._links.setdefault(destination, link)

    def _stream(self, destination: str) -> InstanceStream:
        link = self.link(destination)
        with self._lock:
            found = self._streams.get(destination)
            if found is None:
                found = self._streams[destination] = InstanceStream(destination, link, self._sink, self._tag)
            return found

    def _existing(self, destinations: Iterable[str]) -> list[InstanceStream]:
        with self._lock:
            return [self._streams[d] for d in dict.fromkeys(destinations) if d in self._streams]

    # --- the log streams ---------------------------------------------------------------------

    def follow(self, task_id: str, destinations: Sequence[str], nodes: int) -> None:
        for destination in dict.fromkeys(destinations):
            self._stream(destination).follow(task_id, nodes)

    def unfollow(self, task_id: str, destinations: Sequence[str]) -> None:
        for stream in self._existing(destinations):
            stream.unfollow(task_id)

    def stop(self, task_id: str, destinations: Sequence[str]) -> None:
        for stream in self._existing(destinations):
            stream.stop_task(task_id)

    def drain(self, task_id: str, destinations: Sequence[str], timeout: float) -> bool:
        """Everything the task's instances have now has arrived (False: could not be known)."""
        return all([stream.drain(task_id, timeout) for stream in self._existing(destinations)])

    def release(self, in_use: set[str]) -> None:
        """Closes the streams and connections of addresses no followed task uses any more."""
        with self._lock:
            idle = [d for d in self._links if d not in in_use and (d not in self._streams or self._streams[d].idle)]
            streams = [self._streams.pop(d) for d in idle if d in self._streams]
            links = [self._links.pop(d) for d in idle]
        for stream in streams:
            stream.close()
        for link in links:
            link.close()

    # --- one-off steps ---------------------------------------------------------------------

    def upload(self, task_id: str, local: TaskDir, destinations: Sequence[str]) -> None:
        """Sends the staged files (payload, code, secrets, credentials) into every node's
        directory, then `ready` there. Each address holds as many nodes as instances listed it."""
        staged = local.path / STAGED_DIR
        files = sorted(p for p in staged.iterdir() if p.is_file()) if staged.is_dir() else []
        for destination, count in Counter(destinations).items():
            link = self.link(destination)
            root = shlex.quote(f"{task_dir(task_id)}/{NODES_DIR}")
            # The startup script makes each node's directory as the instance boots: wait for them.
            found = link.run(
                f"for i in $(seq {UPLOAD_WAIT}); do n=$(ls {root} 2>/dev/null | grep -c '^[0-9]*$'); "
                f'[ "$n" -ge {count} ] && exec ls {root}; sleep 0.1; done; exit 1',
                UPLOAD_WAIT / 10 + 30,
            )
            if found.rc != 0:
                raise LinkError(f"the directories of task {task_id}'s nodes did not appear on {destination}")
            ranks = [int(r) for r in found.stdout.decode().split() if r.isdigit()]
            for rank in ranks:
                for path in files:
                    mode = 0o700 if path.name.endswith(".sh") else 0o600
                    link.write(f"{node_dir(task_id, rank)}/{path.name}", path.read_bytes(), mode)
            ready = " ".join(shlex.quote(f"{node_dir(task_id, r)}/{READY_FILE}") for r in ranks)
            done = link.run(f"touch {ready}", 30)
            if done.rc != 0:
                raise LinkError(f"cannot mark the upload ready on {destination}: {done.stderr.decode()[:200]}")
        for path in files:
            path.unlink(missing_ok=True)  # credentials and secrets go as soon as they are there
        with contextlib.suppress(OSError):
            staged.rmdir()

    def fetch_result(self, task_id: str, local: TaskDir, destinations: Sequence[str]) -> None:
        """A function call's result.json (node 0's), copied here before the bid goes."""
        for destination in dict.fromkeys(destinations):
            data = self.link(destination).read(f"{node_dir(task_id, 0)}/{RESULT_FILE}")
            if data is not None:
                local.write(task_files.RESULT, data)
                return

    def ssh_command(self, task_id: str, destination: str, argv: tuple[str, ...], tty: bool) -> list[str]:
        """`ssh ... user@host -- <command in the task's code directory>` (raises LinkError)."""
        parsed = parse_destination(destination)
        if parsed is None:
            raise LinkError(f"task {task_id} has no instance to run commands on yet")
        host, port = parsed
        known = self.link(destination).known_hosts
        nodes = shlex.quote(f"{task_dir(task_id)}/{NODES_DIR}")
        remote = f'for d in {nodes}/*/code; do cd "$d" 2>/dev/null && break; done; exec ' + (
            " ".join(shlex.quote(a) for a in argv) if argv else "bash -l"
        )
        return [
            "ssh", "-q", "-p", str(port), "-i", self.key_file, "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-tt" if tty else "-T",
            f"{self._settings.ssh_user}@{host}", "--", remote,
        ]  # fmt: skip

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams.values())
            links = list(self._links.values())
            self._streams.clear()
            self._links.clear()
        for stream in streams:
            stream.close()
        for link in links:
            link.close()
