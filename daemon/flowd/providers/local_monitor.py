"""The local provider's watch over its processes: one thread, every task's pidfd, deadlines and
kill escalation; and the identity of a process across daemon restarts.

A task (or one node of it) is a wrapper process, leader of its own session and process group,
whose program and everything it starts share that session. When the wrapper exits, the rest of
the session is killed (as Slurm does), and the end is handed on (`on_exit`) only once no process
of it is left: "terminal" then means gone, and its GPUs go to the next task with nothing of this
one still on them. A process that left the session on purpose (setsid: a daemon) is not followed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from attrs import define, field

log = logging.getLogger(__name__)


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of pid (clock ticks since boot): with the pid, a unique identity."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name: fields 3 (state) onwards, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses; fields after it follow the last ')'.
    return raw[raw.rfind(b")") + 2 :].split()


def session_members(leader: int) -> list[int]:
    """The live (not zombie) processes of the session and process group `leader` leads: the
    task's program and everything it started, also in process groups of their own (a shell's
    job control), but not what left the session (setsid). One read of each /proc/<pid>/stat
    (about 1-2 ms for a few hundred processes, once per task end)."""
    found = []
    needle = b" %d " % leader
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            raw = os.read(fd, 1024)
        except OSError:
            continue
        finally:
            os.close(fd)
        after = raw[raw.rfind(b")") + 1 :]  # the command name may hold anything
        if needle not in after:
            continue  # (cheap: most processes are not the task's)
        fields = after.split()
        # fields[0] is the state, [2] the process group, [3] the session
        if fields[0] != b"Z" and leader in (int(fields[2]), int(fields[3])):
            found.append(int(entry))
    return found


def find_process_by_marker(marker: str) -> int | None:
    """A live process whose argv holds our wrapper marker (for tasks launched just before a crash)."""
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if needle in argv:
            return int(entry)
    return None


def shell_exit_code(returncode: int) -> int:
    """Popen's returncode (-N when killed by signal N) as a shell reports it (128+N)."""
    return 128 - returncode if returncode < 0 else returncode


@define
class Watched:
    key: str  # the task id, or "<task id>@K" for node K
    pid: int  # the wrapper: leader of the session and process group
    pidfd: int
    task_dir: Path
    child: subprocess.Popen[bytes] | None
    deadline: float | None
    kill_at: float | None = None
    timed_out: bool = False
    status: int | None = None  # the wrapper's own exit status, once it has exited
    stragglers: set[int] = field(factory=set)  # pidfds of group members still alive


@define
class Monitor:
    """One thread that waits on every task's pidfd, deadline and kill escalation."""

    on_exit: Callable[[Watched], None]
    grace: float
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _selector: selectors.BaseSelector = field(factory=selectors.DefaultSelector)
    _lock: threading.Lock = field(factory=threading.Lock)
    _pending: list[Callable[[], None]] = field(factory=list)
    _watched: dict[str, Watched] = field(factory=dict)
    _doomed: dict[str, bool] = field(factory=dict)  # terminate() before add(): key -> timed out
    _wake_r: int = -1
    _wake_w: int = -1
    _thread: threading.Thread | None = None
    _stopping: bool = False

    def start(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="local-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _call_soon(self, action: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(action)
        self._wake()

    def add(self, watched: Watched) -> None:
        def register() -> None:
            self._watched[watched.key] = watched
            self._selector.register(watched.pidfd, selectors.EVENT_READ, watched)
            if watched.key in self._doomed:
                watched.timed_out = self._doomed.pop(watched.key)
                self._signal(watched, signal.SIGTERM)
                watched.kill_at = self.clock() + self.grace

        self._call_soon(register)

    def terminate(self, key: str, timed_out: bool = False) -> None:
        def send() -> None:
            watched = self._watched.get(key)
            if watched is None:
                self._doomed[key] = timed_out  # not watched yet: stop it once it is
                return
            watched.timed_out = watched.timed_out or timed_out
            self._signal(watched, signal.SIGTERM)
            if watched.kill_at is None:
                watched.kill_at = self.clock() + self.grace

        self._call_soon(send)

    def _signal(self, watched: Watched, sig: signal.Signals) -> None:
        try:
            os.killpg(watched.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # the pid is no longer our group leader
            log.warning("cannot signal task %s (pid %s)", watched.key, watched.pid)

    def _next_timeout(self) -> float | None:
        now, wall = self.clock(), self.wall()
        waits = [w.kill_at - now for w in self._watched.values() if w.kill_at is not None]
        waits += [w.deadline - wall for w in self._watched.values() if w.deadline is not None and not w.timed_out]
        return max(0.0, min(waits)) if waits else None

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(self._next_timeout()):
                if key.data is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                elif isinstance(key.data, Watched):
                    self._exited(key.data)
                else:
                    self._straggler_gone(key.fd, key.data[1])
            with self._lock:
                actions, self._pending = self._pending, []
            for action in actions:
                action()
            now, wall = self.clock(), self.wall()
            for watched in list(self._watched.values()):
                if watched.deadline is not None and not watched.timed_out and wall >= watched.deadline:
                    watched.timed_out = True
                    self._signal(watched, signal.SIGTERM)
                    watched.kill_at = now + self.grace
                elif watched.kill_at is not None and now >= watched.kill_at:
                    self._signal(watched, signal.SIGKILL)
                    watched.kill_at = now + self.grace  # again later if it somehow survives

    def _exited(self, watched: Watched) -> None:
        """The wrapper exited: the rest of its group is killed, and the end waits for them."""
        self._selector.unregister(watched.pidfd)
        os.close(watched.pidfd)
        watched.deadline = None  # ended: only its stragglers remain to be waited for
        # Our own child is still a zombie here; an adopted one is gone, but Linux never hands out
        # a pid still used as a process group id, so the group is still the task's.
        with contextlib.suppress(OSError):
            os.killpg(watched.pid, signal.SIGKILL)
        if watched.child is not None:
            watched.status = shell_exit_code(watched.child.wait())
        self._reap(watched)

    def _reap(self, watched: Watched) -> None:
        """Waits (through pidfds, without blocking the thread) until no process of the group is
        left, then hands the end on."""
        for pid in session_members(watched.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            watched.stragglers.add(fd)
            self._selector.register(fd, selectors.EVENT_READ, ("straggler", watched))
        if watched.stragglers:
            return
        self._watched.pop(watched.key, None)
        try:
            self.on_exit(watched)
        except Exception:
            log.exception("handling the end of task %s failed", watched.key)

    def _straggler_gone(self, fd: int, watched: Watched) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        watched.stragglers.discard(fd)
        if not watched.stragglers:
            self._reap(watched)  # it may have started others before it died: look again
