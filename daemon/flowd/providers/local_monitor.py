"""The local provider's watch over its processes: one thread for every task's end, deadlines and
kill escalation; and the identity of a process across daemon restarts.

A task (or one node of it) is a program started by the keeper (local_keeper_process.py), leader of
its own session and process group; everything it starts shares that session. The keeper reports
when the leader ends and how; tasks an earlier flowd's keeper started are watched through
pidfds, their status read from the file the keeper wrote. When the leader ends, the rest of the
session is killed (as Slurm does), and the end is handed on (`on_exit`) only once no process of
it is left: "terminal" then means gone, and its GPUs go to the next task with nothing of this one
still on them. A process that left the session on purpose (setsid: a daemon) is not followed.

Finding what is left of a session is one read of /proc/<pid>/stat per candidate: the pids
allocated since the leader (the pid clock read before it started says which those are), not
every process of the machine.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from attrs import define, field, frozen

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


@frozen
class PidClock:
    """Where the kernel's pid allocator stood just before a task's first process was created:
    with it, the processes the task may have started are found among the pids allocated since
    (a few), instead of among every process of the machine."""

    forks: int  # processes and threads created since boot (/proc/stat "processes")
    threads: int  # processes and threads alive then (/proc/loadavg): ids the allocator skips


RESERVED_PIDS: Final = 300  # where the allocator starts again after pid_max (the kernel's constant)
DIRECT_PROBES: Final = 256  # up to this many candidate pids are probed; beyond, /proc is listed


def _read_proc(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 8192)
    except OSError:
        return None
    finally:
        os.close(fd)


def _forks() -> int | None:
    raw = _read_proc("/proc/stat")
    at = raw.find(b"\nprocesses ") if raw else -1
    if raw is None or at < 0:
        return None
    return int(raw[at + 11 : raw.index(b"\n", at + 1)])


def _loadavg() -> tuple[int, int] | None:
    """(processes and threads alive, the last pid allocated in this pid namespace)."""
    raw = _read_proc("/proc/loadavg")
    try:
        fields = raw.split() if raw else []
        return int(fields[3].split(b"/")[1]), int(fields[4])
    except (IndexError, ValueError):
        return None


def _pid_max() -> int:
    raw = _read_proc("/proc/sys/kernel/pid_max")
    return int(raw) if raw and raw.strip().isdigit() else 4_194_304


def pid_clock() -> PidClock | None:
    """Read before starting a task's process (None where /proc does not say)."""
    forks, load = _forks(), _loadavg()
    return None if forks is None or load is None else PidClock(forks, load[0])


def _allocated_since(leader: int, since: PidClock | None) -> Iterable[int] | None:
    """The pids allocated after `leader`, which was allocated after `since` was read: every
    process its session can hold. None when that cannot be told (no clock, or so many processes
    were created since that the allocator may have come round past it again)."""
    forks, load, pid_max = _forks(), _loadavg(), _pid_max()
    if since is None or forks is None or load is None:
        return None
    # The allocator hands out the next free id after the last one, cyclically. Coming round to
    # `leader` again takes a whole cycle: at most one step per allocation since, plus one per id
    # in use (allocated since, or alive when `since` was read) that it skips.
    if 2 * (forks - since.forks) + since.threads >= pid_max - RESERVED_PIDS - 1:
        return None
    last = load[1]
    if last >= leader:
        return range(leader + 1, last + 1)
    return itertools.chain(range(leader + 1, pid_max), range(1, last + 1))


def session_members(leader: int, since: PidClock | None = None) -> list[int]:
    """The live (not zombie) processes of the session and process group `leader` leads: the
    task's program and everything it started, also in process groups of their own (a shell's
    job control), but not what left the session (setsid). With `since` (the pid clock read
    before the leader was created) only the pids allocated after the leader are looked at;
    otherwise every process of the machine (about 1-2 ms for a few hundred processes)."""
    allocated = _allocated_since(leader, since)
    if allocated is None:
        candidates: Iterable[str | int] = os.listdir("/proc")
    else:
        ids = allocated if isinstance(allocated, range) else list(allocated)
        if len(ids) > DIRECT_PROBES:
            listed = os.listdir("/proc")
            wanted = set(ids)
            candidates = [e for e in listed if e.isdigit() and int(e) in wanted]
        else:
            candidates = ids  # probed directly: a thread's id reads as its thread (see below)
    found = []
    needle = b" %d " % leader
    for entry in candidates:
        if isinstance(entry, str) and not entry.isdigit():
            continue
        raw = _read_proc(f"/proc/{entry}/stat")
        if raw is None:
            continue
        after = raw[raw.rfind(b")") + 1 :]  # the command name may hold anything
        if needle not in after:
            continue  # (cheap: most processes are not the task's)
        fields = after.split()
        # fields[0] is the state, [2] the process group, [3] the session
        if fields[0] not in (b"Z", b"X") and leader in (int(fields[2]), int(fields[3])):
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


def is_zombie(pid: int, ticks: int | None) -> bool:
    """Whether `pid` (started at `ticks`, when known) has ended but its parent has not reaped it."""
    fields = _stat_fields(pid)
    if fields is None or (ticks is not None and int(fields[19]) != ticks):
        return False
    return fields[0] == b"Z"


ZOMBIE_PATIENCE: Final = 5.0  # seconds an ended process's parent gets to record its status and reap it
ZOMBIE_LOOK: Final = 0.0005  # how often it is looked at meanwhile (its parent takes ~0.1 ms)
EARLY_KEPT: Final = 60.0  # seconds an end reported before its process is watched is kept


@define
class Watched:
    """One task (or node): the leader of its session and process group, and how its end is learnt.

    `keeper` set: the keeper of that generation started it and reports its end with its status
    (`on_keeper_exit`); else a pidfd says when it ended and its exit status file says how (a
    task started by an earlier flowd's keeper, a warm interpreter's wrapper)."""

    key: str  # the task id, or "<task id>@K" for node K
    pid: int
    ticks: int | None  # its start time: (pid, ticks) names it uniquely
    task_dir: Path
    deadline: float | None
    keeper: int | None = None
    since: PidClock | None = None  # read before it was started: cheap session scans
    pidfd: int | None = None
    kill_at: float | None = None
    timed_out: bool = False
    status: int | None = None  # its exit status, once the keeper reported it
    zombie_until: float | None = None  # ended, waiting (at most until then) for its parent to reap it
    stragglers: set[int] = field(factory=set)  # pidfds of group members still alive


@define
class Monitor:
    """One thread that waits on every task's end (the keeper's reports, pidfds), deadlines and
    kill escalation."""

    on_exit: Callable[[Watched], None]
    grace: float
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _selector: selectors.BaseSelector = field(factory=selectors.DefaultSelector)
    _lock: threading.Lock = field(factory=threading.Lock)
    _pending: list[Callable[[], None]] = field(factory=list)
    _watched: dict[str, Watched] = field(factory=dict)
    _doomed: dict[str, bool] = field(factory=dict)  # terminate() before add(): key -> timed out
    _by_process: dict[tuple[int, int | None], Watched] = field(factory=dict)  # keeper-reported ones
    _early: dict[tuple[int, int | None], tuple[int, float]] = field(factory=dict)  # reported before add()
    _keepers: dict[int, tuple[int, Callable[[], list[tuple[int, int | None, int]] | None]]] = field(factory=dict)
    _lost_keepers: set[int] = field(factory=set)
    _zombies: list[Watched] = field(factory=list)
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

    def follow_keeper(
        self, generation: int, fd: int, read: Callable[[], list[tuple[int, int | None, int]] | None]
    ) -> None:
        """A keeper started: `read()` gives the ends it reported on `fd` ((pid, ticks, status)),
        None once it is gone."""

        def register() -> None:
            self._keepers[generation] = (fd, read)
            self._selector.register(fd, selectors.EVENT_READ, ("keeper", generation))

        self._call_soon(register)

    def add(self, watched: Watched) -> None:
        def register() -> None:
            self._watched[watched.key] = watched
            if watched.keeper is not None and watched.keeper not in self._lost_keepers:
                process = (watched.pid, watched.ticks)
                early = self._early.pop(process, None)
                if early is not None:
                    watched.status = early[0]
                    self._exited(watched)
                    return
                self._by_process[process] = watched
            else:
                watched.keeper = None
                if not self._watch_pidfd(watched):
                    self._exited(watched)
                    return
            if watched.key in self._doomed:
                watched.timed_out = self._doomed.pop(watched.key)
                self._signal(watched, signal.SIGTERM)
                watched.kill_at = self.clock() + self.grace

        self._call_soon(register)

    def _watch_pidfd(self, watched: Watched) -> bool:
        """Watches the process through a pidfd; False when it is gone already."""
        if watched.ticks is not None and process_start_ticks(watched.pid) not in (watched.ticks, None):
            return False  # its pid is another process's now
        try:
            watched.pidfd = os.pidfd_open(watched.pid)
        except ProcessLookupError:
            return False
        self._selector.register(watched.pidfd, selectors.EVENT_READ, watched)
        return True

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
        if self._zombies:
            waits.append(ZOMBIE_LOOK)
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
                    self._ended(key.data)
                elif key.data[0] == "keeper":
                    self._keeper_reported(key.data[1])
                else:
                    self._straggler_gone(key.fd, key.data[1])
            with self._lock:
                actions, self._pending = self._pending, []
            for action in actions:
                action()
            now, wall = self.clock(), self.wall()
            if self._zombies:
                self._look_at_zombies(now)
            for watched in list(self._watched.values()):
                if watched.deadline is not None and not watched.timed_out and wall >= watched.deadline:
                    watched.timed_out = True
                    self._signal(watched, signal.SIGTERM)
                    watched.kill_at = now + self.grace
                elif watched.kill_at is not None and now >= watched.kill_at:
                    self._signal(watched, signal.SIGKILL)
                    watched.kill_at = now + self.grace  # again later if it somehow survives

    def _keeper_reported(self, generation: int) -> None:
        fd, read = self._keepers[generation]
        ends = read()
        if ends is None:  # the keeper is gone: watch what it started by pidfd from now on
            self._selector.unregister(fd)
            os.close(fd)
            del self._keepers[generation]
            self._lost_keepers.add(generation)
            for process, watched in list(self._by_process.items()):
                if watched.keeper == generation:
                    del self._by_process[process]
                    watched.keeper = None
                    if not self._watch_pidfd(watched):
                        self._exited(watched)
            return
        now = self.clock()
        for pid, ticks, status in ends:
            found = self._by_process.pop((pid, ticks), None)
            if found is None:  # reported before its launch handed it to us
                self._early[(pid, ticks)] = (status, now)
                continue
            found.status = status
            self._exited(found)
        if len(self._early) > 64:  # launches that failed after their process started
            self._early = {p: e for p, e in self._early.items() if e[1] > now - EARLY_KEPT}

    def _ended(self, watched: Watched) -> None:
        """Its pidfd says it ended. Its parent records the status before it reaps it: while it is
        a zombie, wait (briefly) for that."""
        if watched.pidfd is not None:
            self._selector.unregister(watched.pidfd)
            os.close(watched.pidfd)
            watched.pidfd = None
        if is_zombie(watched.pid, watched.ticks):
            watched.zombie_until = self.clock() + ZOMBIE_PATIENCE
            self._zombies.append(watched)
            return
        self._exited(watched)

    def _look_at_zombies(self, now: float) -> None:
        waiting = []
        for watched in self._zombies:
            patient = watched.zombie_until is not None and now < watched.zombie_until
            if patient and is_zombie(watched.pid, watched.ticks):
                waiting.append(watched)
            else:
                self._exited(watched)
        self._zombies = waiting

    def _exited(self, watched: Watched) -> None:
        """The leader ended: the rest of its group is killed, and the end waits for them."""
        watched.deadline = None  # ended: only its stragglers remain to be waited for
        watched.zombie_until = None
        # Linux never hands out a pid still used as a process group id, so the group is still
        # the task's even once its leader is reaped.
        with contextlib.suppress(OSError):
            os.killpg(watched.pid, signal.SIGKILL)
        self._reap(watched)

    def _reap(self, watched: Watched) -> None:
        """Waits (through pidfds, without blocking the thread) until no process of the group is
        left, then hands the end on."""
        for pid in session_members(watched.pid, watched.since):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            try:
                fd = os.pidfd_open(pid)
            except OSError:  # gone, or a thread's id (its process is a member too)
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
