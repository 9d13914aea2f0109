"""flowd's end of the keeper (local_keeper_process.py): starts it when the first task starts, asks
it to start each task's program, and hands on the ends it reports.

Starting a program through the keeper costs one request over a socket (the keeper is a small
process: its fork is cheap), instead of a shell per task; the exit status still survives flowd,
since the keeper, not flowd, is the parent. A keeper that dies is replaced at the next start; the
programs it started keep running, and the monitor watches them by pidfd from then on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from attrs import frozen

from flowd.providers import local_keeper_process
from flowd.providers.base import LaunchError
from flowd.providers.local_keeper_process import split_frames

log = logging.getLogger(__name__)

PROGRAM: Final = Path(local_keeper_process.__file__)
ANSWER_TIMEOUT: Final = 30.0  # seconds for the keeper to start a program before the launch fails
Ends = list[tuple[int, int | None, int]]  # (pid, start ticks, exit status) of programs that ended


@frozen
class Spawned:
    pid: int
    ticks: int | None  # the kernel's start time of the process


class _Connection:
    """One running keeper: the socket it takes requests on, the pipe it reports ends on."""

    def __init__(self, generation: int, journals: Path, log_file: Path | None) -> None:
        self.generation = generation
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        exits_r, exits_w = os.pipe2(os.O_CLOEXEC)
        try:
            output = (
                os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                if log_file is not None
                else subprocess.DEVNULL
            )
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", str(PROGRAM), str(theirs.fileno()), str(exits_w), str(journals)],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    cwd="/",
                    pass_fds=(theirs.fileno(), exits_w),
                    start_new_session=True,
                )
            finally:
                if isinstance(output, int) and output >= 0:
                    os.close(output)
        except BaseException:
            ours.close()
            os.close(exits_r)
            raise
        finally:
            theirs.close()
            os.close(exits_w)
        self.socket = ours
        self.exits = exits_r
        os.set_blocking(exits_r, False)
        self._replies = bytearray()
        self._ends = bytearray()
        self.alive = True

    def request(self, message: dict[str, object]) -> dict[str, object]:
        data = json.dumps(message).encode()
        self.socket.sendall(len(data).to_bytes(4, "big") + data)
        while True:
            frames = self._frames(self._replies)
            if frames:
                reply = frames[0]
                assert isinstance(reply, dict)
                return reply
            ready, _, _ = select.select([self.socket], [], [], ANSWER_TIMEOUT)
            if not ready:
                raise TimeoutError(f"the keeper did not answer within {ANSWER_TIMEOUT:g} s")
            chunk = self.socket.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the keeper is gone")
            self._replies += chunk

    @staticmethod
    def _frames(pending: bytearray) -> list[object]:
        return split_frames(pending)

    def read_ends(self) -> Ends | None:
        """What the keeper reported since the last read; None once it is gone (the pipe's end)."""
        try:
            while True:
                chunk = os.read(self.exits, 1 << 16)
                if not chunk:
                    self.close()
                    return None  # the caller stops watching self.exits, then closes it
                self._ends += chunk
        except BlockingIOError:
            pass
        except OSError:
            self.close()
            return None
        ends: Ends = []
        for end in self._frames(self._ends):
            if isinstance(end, dict):
                ends.append((int(end["pid"]), end.get("ticks"), int(end["code"])))
        return ends

    def close(self) -> None:
        """Lets it go: it finishes recording the programs it started, then exits by itself."""
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(OSError):
            self.socket.close()
        if self.process.poll() is None:  # still serving its programs: reaped once it exits
            threading.Thread(target=self.process.wait, name="keeper-wait", daemon=True).start()


class Keeper:
    """Starts programs through the keeper process (one at a time: it answers in order)."""

    def __init__(
        self,
        on_start: Callable[[int, int, Callable[[], Ends | None]], None],
        journals: Path,
        log_file: Path | None = None,
    ) -> None:
        """`on_start(generation, fd, read_ends)`: a new keeper reports ends on `fd`. Keepers
        keep their journals in `journals` (see read_journals)."""
        self._on_start = on_start
        self._journals = journals
        self._log_file = log_file
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._generations = 0

    @property
    def generation(self) -> int | None:
        """The keeper that reports the ends of what start() returns."""
        connection = self._connection
        return connection.generation if connection is not None else None

    def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.alive:
            return connection
        self._generations += 1
        try:
            self._journals.mkdir(mode=0o700, exist_ok=True)
            connection = _Connection(self._generations, self._journals, self._log_file)
        except OSError as exc:
            raise LaunchError(f"could not start the task keeper ({sys.executable}): {exc.strerror}") from exc
        self._connection = connection
        self._on_start(connection.generation, connection.exits, connection.read_ends)
        return connection

    def start(
        self,
        key: str,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        output: Path,
        exit_file: Path,
        dirs: Sequence[Path] = (),
    ) -> tuple[Spawned, int]:
        """Starts the program of task (or node) `key`, creating `dirs` first; (the process, the
        generation of the keeper that reports its end). Raises LaunchError when it cannot be
        started (not for a program that is not found: that one ends at once with status 127, as
        under a shell)."""
        message: dict[str, object] = {
            "key": key,
            "argv": list(argv),
            "cwd": str(cwd),
            "env": dict(env),
            "output": str(output),
            "exit_file": str(exit_file),
            "dirs": [str(d) for d in dirs],
        }
        with self._lock:
            for attempt in range(2):  # a keeper found dead is replaced once
                connection = self._connect()
                try:
                    reply = connection.request(message)
                    break
                except (OSError, TimeoutError) as exc:
                    log.warning("the task keeper failed (%s); starting another", exc)
                    connection.close()
                    if attempt:
                        raise LaunchError(f"the task keeper failed: {exc}") from exc
        pid = reply.get("pid")
        if not isinstance(pid, int):
            raise LaunchError(f"could not start {argv[0]!r}: {reply.get('error')}")
        ticks = reply.get("ticks")
        return Spawned(pid, ticks if isinstance(ticks, int) else None), connection.generation

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def read_journals(journals: Path, alive: Callable[[Spawned], bool]) -> dict[str, Spawned]:
    """Which process each task (or node) key was started as, by every keeper whose journal is
    still there. A key started more than once (journals are not ordered among themselves: a
    keeper's pid says nothing of when it ran) is the start whose process is `alive`, else the
    last one read."""
    found: dict[str, Spawned] = {}
    for journal in journals.glob("*.journal"):
        with contextlib.suppress(OSError):
            for line in journal.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1].isdigit():
                    started = Spawned(int(parts[1]), int(parts[2]) if parts[2].isdigit() else None)
                    earlier = found.get(parts[0])
                    if earlier is None or not alive(earlier):
                        found[parts[0]] = started
    return found


def forget_dead_journals(journals: Path) -> None:
    """Removes the journals of keepers that were killed (a keeper removes its own when it ends)."""
    for journal in journals.glob("*.journal"):
        pid = journal.name.removesuffix(".journal")
        try:
            alive = PROGRAM.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            alive = False
        if not alive:
            with contextlib.suppress(OSError):
                journal.unlink()
