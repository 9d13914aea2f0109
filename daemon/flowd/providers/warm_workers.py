"""Warm workers: the calls of a `keep_warm=N` function run in processes that imported its module once.

A function decorated `@app.function(keep_warm=N)` (FunctionCall.keep_warm) asks the local
provider to keep up to N worker processes for it: flow/runtime/runner.py started with `--worker`
by the call's interpreter, in the worker's own copy of the code snapshot, with the task's
environment minus the per-call variables (FLOW_TASK_ID, FLOW_TASK_NAME). A worker imports the
function's module on its first call and keeps it; each later call is one message on a pipe:

    flowd --request (JSON: the call, its task's output/result/exit-status files)--> worker
    worker: output to the task's log, cwd and environment reset, the call (runner.run_call),
            result and exit status written --reply (exit status)--> flowd: the task's end

Each call is still a task of its own (its id, state, logs, result, cancel, time limit); the task's
process is the worker (LocalProcess.warm), which outlives the call. One call at a time per
worker; when all N are busy a call runs cold (one process of its own, as without keep_warm).

What a warm call shares with the calls before it in the same worker (the README says the same):
- the process: pid, its threads (a thread a call started keeps running), signal handlers,
  resource limits, open files and sockets a call did not close, the string-hash seed;
- the interpreter: every imported module (sys.modules) and its globals, the function's module
  included (imported once: a global a call changed is changed for the next call), sys.path,
  sys.argv (the worker's), the `random` module's state (never reseeded), caches (functools.lru_cache);
- the working directory's contents: the worker's private copy of the snapshot, where files a
  call wrote stay for the next call (the snapshot never changes under a worker: a new snapshot
  gets a new worker);
- GPU state: a CUDA context and the memory a call left allocated (a framework's cache
  included) stay on the worker's GPUs between calls, where flowd's GPU accounting does not
  see them.
What is reset for every call: the current directory (back to the worker's copy of the
snapshot), os.environ (back to the worker's environment, plus the call's FLOW_TASK_ID and
FLOW_TASK_NAME), and stdout/stderr (descriptors 1 and 2 go to the call's own task log: output a
leftover thread writes later lands in the log of whichever call runs then).

A worker is replaced (a new one is started for the next call) when its call raised or could not
be called (whatever it left behind never reaches another call: the worker exits), when it
crashed or was killed, when the call was cancelled or timed out (the worker's process group is
killed), when the code snapshot, the interpreter, the environment (CUDA_VISIBLE_DEVICES
included) or anything on its sys.path changes (a call with the new snapshot retires the idle
workers of the old one; busy ones retire when their call ends), and when more than MAX_WORKERS
workers of all functions would run (the least recently used idle one goes).

Only for calls that a cold start would run as a plain process on this machine: single node, no
image, volumes or data mounts, no working_dir, no secrets (a long-lived process keeps no secret
values), absolute PYTHONPATH entries only. Any other call of a keep_warm function runs cold, as
it does on every other provider. FLOW_WARM_PYTHON=0 in flowd's environment turns warm workers off
with the warm interpreters (warm_python.py).

Lifetime: a worker reads its requests from a pipe only flowd holds, so when flowd stops or is
killed (kill -9 included) an idle worker sees the pipe close and exits at once, and a busy one
exits as soon as its call ends, leaving its exit status in the task's directory: a restarted
flowd finds that task as it finds any task that ran on (by pid and start time, or its status
file). Nothing accumulates: the directories of workers that are gone are removed when flowd
starts and when they end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from flow.domain.task import task_files
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import TaskRecord
from flow.runtime import runner
from flowd.providers import warm_python
from flowd.providers.local_monitor import process_start_ticks
from flowd.providers.local_state import LocalProcess
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)

MAX_WORKERS: Final = 32  # warm workers of every function together (each a whole interpreter)
START_TIMEOUT: Final = 10.0  # seconds for a new worker to start before its call runs cold
PER_CALL_ENV: Final = frozenset({"FLOW_TASK_ID", "FLOW_TASK_NAME"})
KILLED: Final = 128 + signal.SIGKILL
RUNNER_DIR: Final = "runner"  # holds the workers' copy of the runner, and nothing else

Group = tuple[str, str, str]  # (python, code root, module or file): one function module
Key = tuple[Group, str, tuple[tuple[str, str], ...]]  # + the snapshot and the environment

# (task id, exit status or None when unknown, timed out): reported once the task is watched
Ended = Callable[[str, int | None, bool], None]


def warm_call(record: TaskRecord, env: Mapping[str, str]) -> bool:
    """Whether this call asks for a warm worker and may run in one (the module docstring)."""
    call = record.function_call
    if call is None or call.keep_warm <= 0 or os.environ.get(warm_python.ENABLE_ENV, "1") == "0":
        return False
    return not record.config.working_dir and warm_python.warm_eligible(record, env)


def _exit_status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


class Worker:
    """One worker process, the pipes to it, and the call it runs (if any)."""

    def __init__(self, key: Key, home: Path, process: subprocess.Popen[bytes], requests: int, replies: int) -> None:
        self.key = key
        self.home = home
        self.process = process
        self.pid = process.pid
        self.ticks = process_start_ticks(process.pid)
        self.requests = requests
        self.replies = replies
        self.pidfd = os.pidfd_open(process.pid)
        self.task_id: str | None = None
        self.deadline: float | None = None  # wall clock, as the task's max_run_time counts
        self.timed_out = False
        self.retiring = False
        self.last_used = time.monotonic()
        self.buffer = b""
        self.stamps: tuple[tuple[str, int], ...] = ()

    def fresh(self) -> bool:
        """Nothing it read at start-up has changed since (the interpreter, its sys.path, the runner)."""
        return all(warm_python.stamp(known[0]) == known for known in self.stamps)

    def send(self, request: dict[str, object]) -> bool:
        data = json.dumps(request).encode()
        data = len(data).to_bytes(4, "big") + data
        try:
            while data:
                data = data[os.write(self.requests, data) :]
        except OSError:
            return False
        return True

    def retire(self) -> None:
        """Closes its pipe: idle, it exits now; busy, once its call has ended."""
        if not self.retiring:
            self.retiring = True
            with contextlib.suppress(OSError):
                os.close(self.requests)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)  # it leads its own group: its children go too


class WarmWorkers:
    """The warm workers of one local provider (the module docstring)."""

    def __init__(self, root: Path, materialize: Callable[[str, Path], None], ended: Ended) -> None:
        self._root = root
        self._materialize = materialize
        self._ended = ended
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self._current: dict[Group, Key] = {}  # the newest snapshot and environment of each module
        self._starting: dict[Key, int] = {}  # workers being started, not registered yet
        self._calls: dict[str, Worker] = {}  # task id -> the worker running it
        self._watched: dict[str, float | None] = {}  # calls the provider watches -> their deadline
        self._finished: dict[str, tuple[int | None, bool]] = {}  # ended before they were watched
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._numbers = itertools.count()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._sweep()

    def _sweep(self) -> None:
        """Removes the directories of workers that are gone (an earlier flowd's, after a crash)."""
        if not self._root.is_dir():
            return
        for home in self._root.iterdir():
            if not home.is_dir() or home.name == RUNNER_DIR:
                continue
            pid, _, ticks = home.name.partition("-")
            if not (pid.isdigit() and str(process_start_ticks(int(pid))) == ticks):
                shutil.rmtree(home, ignore_errors=True)

    # --- starting calls -----------------------------------------------------------------------

    def start(
        self, record: TaskRecord, env: Mapping[str, str], task_dir: TaskDir, gpus: tuple[int, ...]
    ) -> LocalProcess | None:
        """Runs the call in a free warm worker (started now if fewer than keep_warm run); its
        process, or None when the call should run cold (all busy, or no worker would start)."""
        call = record.function_call
        assert call is not None
        python = call.python or "python3"
        resolved = shutil.which(python, path=env.get("PATH", os.defpath)) if os.sep not in python else python
        if resolved is None:
            return None  # the cold start reports it
        group: Group = (python, record.config.code_root or "", call.path or call.module or "")
        started_env = {k: v for k, v in env.items() if k not in PER_CALL_ENV}
        key: Key = (group, record.code_digest or "", tuple(sorted(started_env.items())))
        worker, may_start = self._take(key, call.keep_warm)
        if worker is None and may_start:
            try:
                worker = self._new_worker(key, resolved, started_env, record.code_digest)
            finally:
                with self._lock:
                    self._starting[key] -= 1
        if worker is None:
            return None
        request: dict[str, object] = {
            "task_id": record.task_id,
            "env": {name: env[name] for name in PER_CALL_ENV if name in env},
            "spec": invocation_document(call),
            "output": str(task_dir.output),
            "result": str(task_dir.file(task_files.RESULT)),
            "exit_file": str(task_dir.file(task_files.EXIT_STATUS)),
        }
        with self._lock:
            worker.task_id = record.task_id
            self._calls[record.task_id] = worker
        if not worker.send(request):
            with self._lock:
                self._calls.pop(record.task_id, None)
                worker.task_id = None
            worker.retire()
            worker.kill()
            return None
        where = str(task_dir.path)
        return LocalProcess(worker.pid, worker.ticks, task_dir=where, gpus=gpus, cwd=str(worker.home), warm=True)

    def _take(self, key: Key, keep_warm: int) -> tuple[Worker | None, bool]:
        """(a free fresh worker of `key`, reserved for the caller; None if there is none) and
        whether the caller may start one (fewer than keep_warm exist or are starting: counted
        as starting from here on)."""
        group = key[0]
        with self._lock:
            if self._current.get(group) != key:  # a new snapshot or environment: the old ones go
                self._current[group] = key
                for worker in self._workers:
                    if worker.key[0] == group and worker.key != key and worker.task_id is None:
                        worker.retire()
            for worker in self._workers:
                if worker.key == key and worker.task_id is None and not worker.retiring:
                    if worker.fresh():
                        worker.task_id = ""  # reserved until start() names the call
                        worker.last_used = time.monotonic()
                        return worker, False
                    worker.retire()
            kept = sum(1 for w in self._workers if w.key == key and not w.retiring) + self._starting.get(key, 0)
            if self._closed or kept >= keep_warm or not self._room_for_one():
                return None, False
            self._starting[key] = self._starting.get(key, 0) + 1
            return None, True

    def _room_for_one(self) -> bool:
        """Makes room for one more worker under MAX_WORKERS (retiring the least recently used
        idle one); False when every worker is busy. Callers hold the lock."""
        live = [w for w in self._workers if not w.retiring]
        if len(live) + sum(self._starting.values()) < MAX_WORKERS:
            return True
        idle = sorted((w for w in live if w.task_id is None), key=lambda w: w.last_used)
        if not idle:
            return False
        idle[0].retire()
        return True

    def _new_worker(self, key: Key, resolved: str, env: dict[str, str], digest: str | None) -> Worker | None:
        number = next(self._numbers)
        staging = self._root / f"starting-{os.getpid()}-{number}"
        try:
            code = staging / "code"
            code.mkdir(parents=True, mode=0o700)
            if digest:
                self._materialize(digest, code)
            # In a directory of its own: the script's directory is the worker's sys.path[0], whose
            # change retires a worker (Worker.fresh); the root changes with every worker's start and end.
            script = warm_python.runner_copy(self._root / RUNNER_DIR)
            requests_r, requests_w = os.pipe()
            replies_r, replies_w = os.pipe()
            try:
                process = subprocess.Popen(
                    [key[0][0], str(script), runner.WORKER_FLAG, str(requests_r), str(replies_w)],
                    executable=resolved,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env={**env, "PWD": str(code)},
                    cwd=code,
                    pass_fds=(requests_r, replies_w),
                    start_new_session=True,
                )
            except OSError:
                os.close(requests_w)
                os.close(replies_r)
                raise
            finally:
                os.close(requests_r)
                os.close(replies_w)
        except OSError as exc:
            log.info("no warm worker for %s: %s", key[0], exc)
            shutil.rmtree(staging, ignore_errors=True)
            return None
        home = self._root / f"{process.pid}-{process_start_ticks(process.pid)}"
        staging.rename(home)  # named by its process, so a later flowd knows when it is gone
        worker = Worker(key, home / "code", process, requests_w, replies_r)
        hello = warm_python.read_reply(replies_r, START_TIMEOUT)
        paths = hello.get("paths") if hello else None
        if not isinstance(paths, list):
            log.info("the warm worker for %s did not start", key[0])
            worker.retire()
            worker.kill()
            self._register(worker)  # reaped (and its directory removed) by the thread
            return None
        watched = (resolved, str(warm_python.RUNNER_SOURCE), *(str(p) for p in paths if p))
        worker.stamps = tuple(warm_python.stamp(p) for p in watched)
        worker.task_id = ""  # reserved for the call that started it
        self._register(worker)
        return worker

    def _register(self, worker: Worker) -> None:
        os.set_blocking(worker.replies, False)
        with self._lock:
            self._workers.append(worker)
            self._selector.register(worker.replies, selectors.EVENT_READ, worker)
            self._selector.register(worker.pidfd, selectors.EVENT_READ, worker)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="warm-workers", daemon=True)
                self._thread.start()
        self._wake()

    # --- what the provider asks -------------------------------------------------------------

    def watch(self, task_id: str, deadline: float | None) -> bool:
        """The provider watches the call: its end is reported from now on (at once if it has
        ended already). False for a call no worker of this flowd runs (found after a restart)."""
        with self._lock:
            finished = self._finished.pop(task_id, None)
            if finished is None:
                worker = self._calls.get(task_id)
                if worker is None:
                    return False
                self._watched[task_id] = deadline
                worker.deadline = deadline
        if finished is not None:
            self._ended(task_id, *finished)
        elif deadline is not None:
            self._wake()  # the thread's next timeout is this deadline
        return True

    def cancel(self, task_id: str) -> bool:
        """Kills the worker running the call (its end is reported as the worker dies); False
        when no worker of this flowd runs it."""
        with self._lock:
            worker = self._calls.get(task_id)
            if worker is None:
                return task_id in self._finished
        worker.retire()
        worker.kill()
        return True

    def close(self) -> None:
        """flowd stops: every worker's pipe closes (idle ones exit now, busy ones after their call)."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
        for worker in workers:
            worker.retire()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for worker in workers:
            if not worker.task_id:  # idle: gone before flowd is (a busy one ends with its call)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=2)
                    shutil.rmtree(worker.home.parent, ignore_errors=True)

    # --- the thread: replies, deaths, deadlines ---------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                deadlines = [w.deadline for w in self._workers if w.task_id and w.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.time()) if deadlines else None
            for selected, _ in self._selector.select(timeout):
                worker = selected.data
                if worker is None:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                elif selected.fd == worker.pidfd:
                    self._died(worker)
                else:
                    self._read(worker)
            self._enforce_deadlines()

    def _enforce_deadlines(self) -> None:
        now = time.time()
        with self._lock:
            late = [w for w in self._workers if w.task_id and w.deadline is not None and w.deadline <= now]
            for worker in late:
                worker.deadline = None
                worker.timed_out = True
        for worker in late:
            worker.retire()
            worker.kill()

    def _read(self, worker: Worker) -> None:
        try:
            chunk = os.read(worker.replies, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the worker is going; its pidfd says when it is gone
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.replies)
            return
        worker.buffer += chunk
        while len(worker.buffer) >= 4:
            length = int.from_bytes(worker.buffer[:4], "big")
            if len(worker.buffer) < 4 + length:
                return
            frame, worker.buffer = worker.buffer[4 : 4 + length], worker.buffer[4 + length :]
            try:
                reply = json.loads(frame)
                code = int(reply["code"])
            except (ValueError, KeyError, TypeError):
                continue
            self._call_ended(worker, code, timed_out=False)

    def _call_ended(self, worker: Worker, code: int | None, timed_out: bool) -> None:
        with self._lock:
            task_id = worker.task_id
            if not task_id:
                return
            worker.task_id = None
            worker.deadline = None
            worker.timed_out = False
            worker.last_used = time.monotonic()
            self._calls.pop(task_id, None)
            if code != 0 or self._current.get(worker.key[0]) != worker.key:
                worker.retire()  # it raised (leaked state), or a newer snapshot took its place
            watched = task_id in self._watched
            if watched:
                del self._watched[task_id]
            else:
                self._finished[task_id] = (code, timed_out)
        if watched:
            self._ended(task_id, code, timed_out)

    def _died(self, worker: Worker) -> None:
        returncode = worker.process.wait()
        with self._lock:
            self._selector.unregister(worker.pidfd)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.replies)
            if worker in self._workers:
                self._workers.remove(worker)
        self._read(worker)  # a reply written just before it exited still counts
        self._call_ended(worker, _exit_status(returncode), worker.timed_out)
        worker.retire()
        for fd in (worker.replies, worker.pidfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(worker.home.parent, ignore_errors=True)
