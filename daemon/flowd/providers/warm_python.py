"""Warm interpreters for function tasks on the local provider.

A cold function task pays for a whole interpreter start (`python flow_runner.py ...`: 35-50 ms
here, most of it `site`) before the user's module is even imported. flowd instead keeps a fork
server per (python, start-up environment): flow/runtime/runner.py started with `--serve`, by the
same interpreter path, with the task's environment minus the per-task variables, so that it is
in exactly the state a cold start is in when the runner's main() begins. A call forks it:

    zygote --fork--> wrapper (the task's cwd and output file; waits, writes the exit status file
                     while the task is a zombie, then reaps it: the keeper's part)
                     --fork--> the task's process (leader of its own session and process group,
                               as a cold task is; the task's env incl. CUDA_VISIBLE_DEVICES,
                               argv, sys.path[0]; runs the task's copy of the runner as __main__)

Each call gets its own process; nothing CUDA (or any user code) runs in the zygote. The task's
pid is what flowd watches, cancels (its process group) and recovers after a restart (from the
process record it writes), exactly as for a cold task; the wrapper's command line carries the
task's marker (`ps` shows which task it waits for).

tests/e2e/test_function_latency_paths.py compares, field by field, what a function sees on both
paths (environment, cwd, argv, sys.path, sys.modules, __main__, signal dispositions, session and
process group, open descriptors, stdio, tracebacks). One difference remains by design: the calls
served by one zygote share its string-hash seed (PYTHONHASHSEED is fixed at interpreter start), so
set iteration order repeats between them where cold starts would each draw a new seed.

Used only for single-node function tasks without image, volumes or data mounts (those run
inside a container or a mount namespace), without secrets (a long-lived process keeps no secret
values), and without relative PYTHONPATH entries (resolved against the cwd at start-up). A
zygote is retired when the python executable or any directory on its sys.path changes (a `pip
install` adds packages and .pth files), and when the pool is full (least recently used first).
FLOW_WARM_PYTHON=0 in flowd's environment turns all of this off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

from flow.domain.task.lifecycle import TaskRecord
from flow.runtime import runner
from flowd.providers.base import LaunchError

log = logging.getLogger(__name__)

ENABLE_ENV = "FLOW_WARM_PYTHON"
POOL_SIZE = 4  # zygotes kept at once (each ~10-20 MB); the least recently used goes first
START_TIMEOUT = 10.0  # seconds for a zygote to start (its `site`) before the call runs cold
FORK_TIMEOUT = 10.0
BROKEN_FOR = 60.0  # seconds a python whose zygote would not start runs its calls cold
# Variables that differ per task and that no interpreter reads at start-up: set in the task's
# process only, so one zygote serves every call with the same start-up environment.
PER_TASK_ENV = frozenset(
    {"FLOW_TASK_ID", "FLOW_TASK_NAME", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"}
)
RUNNER_SOURCE = Path(runner.__file__)

Key = tuple[str, tuple[tuple[str, str], ...]]


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in PER_TASK_ENV}


def runner_copy(directory: Path) -> Path:
    """A long-lived interpreter's script: a private copy of the runner, outside any task's
    directory (a task's copy goes with the task)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    script = directory / "flow_runner.py"
    source = RUNNER_SOURCE.read_bytes()
    if not script.exists() or script.read_bytes() != source:
        partial = script.with_suffix(".partial")
        partial.write_bytes(source)
        partial.replace(script)
    return script


def warm_eligible(record: TaskRecord, env: Mapping[str, str]) -> bool:
    """Whether a warm start is indistinguishable from a cold one for this task."""
    config = record.config
    if record.function_call is None or record.secrets or config.num_instances > 1:
        return False
    if config.volumes or config.data_mounts or config.image:  # those run in a namespace or container
        return False
    return all(not entry or os.path.isabs(entry) for entry in env.get("PYTHONPATH", "").split(os.pathsep))


def read_reply(fd: int, timeout: float) -> dict[str, object] | None:
    """One length-prefixed JSON object from a runner's reply pipe (runner._write_frame), or None
    at EOF, after `timeout` seconds, or for anything else."""
    try:
        reply = runner.read_frame(fd, deadline=time.monotonic() + timeout)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def stamp(path: str) -> tuple[str, int]:
    """A file's identity for "has it changed since": its modification time (-1: not there)."""
    try:
        return path, os.stat(path).st_mtime_ns
    except OSError:
        return path, -1


class Zygote:
    """One fork server and the pipes to it. Calls are serialized (each takes ~1 ms)."""

    def __init__(self, python: str, resolved: str, env: Mapping[str, str], room: Path) -> None:
        self.lock = threading.Lock()
        requests_r, self._requests = os.pipe()
        self._replies, replies_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [python, str(room), runner.SERVE_FLAG, str(requests_r), str(replies_w), "." * runner.TITLE_ROOM],
                executable=resolved,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=dict(env),
                cwd="/",
                pass_fds=(requests_r, replies_w),
                start_new_session=True,
            )
        except OSError:
            os.close(self._requests)
            os.close(self._replies)
            raise
        finally:
            os.close(requests_r)
            os.close(replies_w)
        self._stamps: tuple[tuple[str, int], ...] | None = None
        self._watched = (resolved, str(RUNNER_SOURCE))
        self.dead = False

    def _reply(self, timeout: float) -> dict[str, object] | None:
        return read_reply(self._replies, timeout)

    @property
    def started(self) -> bool:
        return self._stamps is not None

    def fresh(self) -> bool:
        """Started, alive, and nothing it read at start-up has changed since."""
        if self.dead:
            return False
        if self._stamps is None:
            hello = self._reply(START_TIMEOUT)
            paths = hello.get("paths") if hello else None
            if not isinstance(paths, list):
                self.close()
                return False
            self._stamps = tuple(stamp(p) for p in (*self._watched, *(str(p) for p in paths if p)))
        return all(stamp(known[0]) == known for known in self._stamps)

    def fork(self, request: dict[str, object]) -> int | None:
        """The task's pid; None when the zygote is gone (the caller starts the task cold)."""
        data = json.dumps(request).encode()
        try:
            os.write(self._requests, len(data).to_bytes(4, "big"))
            view = memoryview(data)
            while view:
                view = view[os.write(self._requests, view) :]
        except OSError:
            self.close()
            return None
        reply = self._reply(FORK_TIMEOUT)
        if reply is None:
            self.close()
            return None
        pid = reply.get("pid")
        if not isinstance(pid, int):
            raise LaunchError(f"could not start the task's process: {reply.get('error')}")
        return pid

    def close(self) -> None:
        """Ends the zygote (EOF on its pipe; it exits). Tasks it started keep running."""
        if self.dead:
            return
        self.dead = True
        for fd in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WarmPool:
    """The zygotes of one local provider, keyed by (python, start-up environment)."""

    def __init__(self, room_dir: Path, size: int = POOL_SIZE) -> None:
        self._room_dir = room_dir
        self._size = size
        self._lock = threading.Lock()
        self._zygotes: OrderedDict[Key, Zygote] = OrderedDict()
        self._broken: dict[Key, float] = {}  # zygotes that did not start: cold until then

    def _room(self) -> Path:
        return runner_copy(self._room_dir)

    def _zygote(self, key: Key, resolved: str, env: dict[str, str]) -> Zygote | None:
        python = key[0]
        with self._lock:
            if self._broken.get(key, 0.0) > time.monotonic():
                return None
            zygote = self._zygotes.get(key)
            if zygote is not None:
                self._zygotes.move_to_end(key)
                return zygote
            try:
                zygote = Zygote(python, resolved, env, self._room())
            except OSError as exc:
                log.info("no warm interpreter for %s: %s", python, exc.strerror)
                self._broken[key] = time.monotonic() + BROKEN_FOR
                return None
            self._zygotes[key] = zygote
            while len(self._zygotes) > self._size:
                _, oldest = self._zygotes.popitem(last=False)
                oldest.close()
            return zygote

    def _forget(self, key: Key, zygote: Zygote, broken: bool) -> None:
        with self._lock:
            if self._zygotes.get(key) is zygote:
                del self._zygotes[key]
            if broken:
                self._broken[key] = time.monotonic() + BROKEN_FOR
        zygote.close()

    def launch(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        output: Path,
        exit_file: Path,
        record: Path,
        marker: str,
    ) -> int | None:
        """Starts argv ([python, runner, invocation, result]) on a warm interpreter; the task's
        pid, or None to start it cold instead."""
        python = argv[0]
        resolved = shutil.which(python, path=env.get("PATH", os.defpath)) if os.sep not in python else python
        if resolved is None:
            return None  # the cold start reports it
        request: dict[str, object] = {
            "argv": list(argv),
            "cwd": str(cwd),
            "env": dict(env),
            "output": str(output),
            "exit_file": str(exit_file),
            "record": str(record),
            "marker": marker,
        }
        started = startup_env(env)
        key: Key = (python, tuple(sorted(started.items())))
        for _ in range(2):  # a stale or dead zygote is replaced once
            zygote = self._zygote(key, resolved, started)
            if zygote is None:
                return None
            with zygote.lock:
                never_started = not zygote.started
                if zygote.fresh():
                    pid = zygote.fork(request)
                    if pid is not None:
                        return pid
            # One that never said hello is not a Python we can serve (or it hangs): run cold.
            self._forget(key, zygote, broken=never_started and not zygote.started)
            if never_started and not zygote.started:
                return None
        return None

    def close(self) -> None:
        with self._lock:
            zygotes, self._zygotes = list(self._zygotes.values()), OrderedDict()
        for zygote in zygotes:
            zygote.close()


_pools: dict[Path, WarmPool] = {}
_pools_lock = threading.Lock()


def launch(
    tasks_root: Path,
    task: TaskRecord,
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    output: Path,
    exit_file: Path,
    process: Path,
    marker: str,
) -> int | None:
    """The local provider's one entry: the pid of a function task started on a warm interpreter
    (the pid to watch, signal and recover, as a cold task's), or None when this task should start
    cold (not a function task, not eligible, turned off, or no zygote)."""
    if os.environ.get(ENABLE_ENV, "1") == "0" or not warm_eligible(task, env):
        return None
    with _pools_lock:
        pool = _pools.get(tasks_root)
        if pool is None:
            pool = _pools[tasks_root] = WarmPool(tasks_root.parent / "warm-python")
    return pool.launch(argv, cwd, env, output, exit_file, process, marker)
