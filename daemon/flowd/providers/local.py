"""The local provider: tasks are processes on this machine.

Each task runs under a tiny POSIX-sh wrapper in its own session and process group, with its
output appended to a file in the task's directory. The wrapper records the command's exit status
in a file before it exits, so the status survives flowd: tasks are not killed when the daemon
dies, and a restarted daemon adopts the ones still running (by pid, checked against the kernel's
start time) and reads how the others ended.

User values never pass through a shell: the argv form runs as "$@", a shell string is one
argument of `bash -c`, a script is a file. Exits are observed through pidfds in one monitor
thread, so completion is seen the moment it happens, not at the next poll.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from attrs import define, evolve, field
from returns.result import Failure, Result, Success

from flow.domain.code_manifest import parse_manifest
from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.function_call import invocation_document
from flow.domain.gpu_inventory import Gpu, describe_inventory, local_offers
from flow.domain.gpu_scheduler import GpuRequest, next_starts
from flow.domain.instance_types import format_instance_type, parse_instance_type
from flow.domain.matching import Offer, Requirements, explain_no_match, match_offers
from flow.domain.money import price_to_micros
from flow.domain.task_config import TaskConfig, program_of
from flow.domain.task_state import (
    Exited,
    LaunchFailed,
    Lost,
    Started,
    TaskRecord,
    TimedOut,
    deadline_of,
)
from flow.runtime import runner
from flowd.blobs import BlobStore
from flowd.exec_session import ExecError, ExecSession
from flowd.providers.base import LaunchError, Placement, Reporter, Runtime

log = logging.getLogger(__name__)

# $1: file for the exit status; the rest: the program. TERM/INT are trapped (not ignored, so the
# program keeps default dispositions) to let the wrapper outlive its program and record its status.
WRAPPER = 'f=$1; shift; trap "" HUP; trap : TERM INT; "$@"; rc=$?; printf "%s\\n" "$rc" >"$f"; exit "$rc"'
MARKER_PREFIX = "flow-task:"
OUTPUT_FILE = "output.log"
EXIT_FILE = "exit_status"
SCRIPT_FILE = "script"
CODE_DIR = "code"
RUNNER_FILE = "flow_runner.py"
INVOCATION_FILE = "invocation.json"
RESULT_FILE = "result.json"
RUNNER_SOURCE = Path(runner.__file__)
# Variables of flowd's own environment that must never reach a task.
PRIVATE_ENV = frozenset({"MITHRIL_API_KEY", "FLOW_DAEMON_TOKEN", "FLOW_DAEMON_DETACHED"})
DEFAULT_CANCEL_GRACE = 10.0


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of pid (clock ticks since boot): with the pid, a unique identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses; fields after it follow the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[19])


def machine_memory_mb() -> int:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


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


def read_exit_status(task_dir: Path) -> int | None:
    try:
        text = (task_dir / EXIT_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def shell_exit_code(returncode: int) -> int:
    """Popen's returncode (-N when killed by signal N) as a shell reports it (128+N)."""
    return 128 - returncode if returncode < 0 else returncode


@define
class _Watched:
    task_id: str
    pid: int
    pidfd: int
    task_dir: Path
    child: subprocess.Popen[bytes] | None
    deadline: float | None
    kill_at: float | None = None
    timed_out: bool = False


@define
class _Monitor:
    """One thread that waits on every task's pidfd, deadline and kill escalation."""

    on_exit: Callable[[_Watched], None]
    grace: float
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _selector: selectors.BaseSelector = field(factory=selectors.DefaultSelector)
    _lock: threading.Lock = field(factory=threading.Lock)
    _pending: list[Callable[[], None]] = field(factory=list)
    _watched: dict[str, _Watched] = field(factory=dict)
    _doomed: dict[str, bool] = field(factory=dict)  # terminate() before add(): task -> timed out
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

    def add(self, watched: _Watched) -> None:
        def register() -> None:
            self._watched[watched.task_id] = watched
            self._selector.register(watched.pidfd, selectors.EVENT_READ, watched)
            if watched.task_id in self._doomed:
                watched.timed_out = self._doomed.pop(watched.task_id)
                self._signal(watched, signal.SIGTERM)
                watched.kill_at = self.clock() + self.grace

        self._call_soon(register)

    def terminate(self, task_id: str, timed_out: bool = False) -> None:
        def send() -> None:
            watched = self._watched.get(task_id)
            if watched is None:
                self._doomed[task_id] = timed_out  # not watched yet: stop it once it is
                return
            watched.timed_out = watched.timed_out or timed_out
            self._signal(watched, signal.SIGTERM)
            if watched.kill_at is None:
                watched.kill_at = self.clock() + self.grace

        self._call_soon(send)

    def _signal(self, watched: _Watched, sig: signal.Signals) -> None:
        try:
            os.killpg(watched.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # the pid is no longer our group leader
            log.warning("cannot signal task %s (pid %s)", watched.task_id, watched.pid)

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
                else:
                    self._finish(key.data)
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

    def _finish(self, watched: _Watched) -> None:
        self._selector.unregister(watched.pidfd)
        os.close(watched.pidfd)
        self._watched.pop(watched.task_id, None)
        try:
            self.on_exit(watched)
        except Exception:
            log.exception("handling the end of task %s failed", watched.task_id)


class LocalProvider:
    """Runs tasks as processes on this machine. See the module docstring."""

    kind = "local"

    def __init__(
        self,
        tasks_root: Path,
        reporter: Reporter,
        blobs: BlobStore,
        name: str = "local",
        base_env: Mapping[str, str] | None = None,
        cancel_grace: float = DEFAULT_CANCEL_GRACE,
        gpus: Sequence[Gpu] = (),
    ) -> None:
        self.name = name
        self._tasks_root = tasks_root
        self._blobs = blobs
        self._report = reporter
        source = os.environ if base_env is None else base_env
        self._base_env = {k: v for k, v in source.items() if k not in PRIVATE_ENV}
        self._bash = shutil.which("bash", path=self._base_env.get("PATH")) or "/bin/sh"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._memory_mb = machine_memory_mb()
        self._gpus = tuple(gpus)
        self._lock = threading.Lock()  # guards the GPU queue and who holds which GPUs
        self._queue: list[tuple[GpuRequest, TaskRecord]] = []
        self._busy: dict[str, tuple[int, ...]] = {}
        self._monitor = _Monitor(on_exit=self._on_exit, grace=cancel_grace)
        self._monitor.start()

    # --- placement --------------------------------------------------------------------------

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self._gpus

    def offers(self) -> tuple[Offer, ...]:
        return local_offers(self._gpus, self.name)

    def _requirements(self, config: TaskConfig) -> Result[Requirements, DomainError]:
        """What the task needs, in the matcher's terms. Form factor is not a constraint here:
        "a100" runs on this machine's A100s whether they are SXM or PCIe."""
        price = None if config.max_price_per_hour is None else price_to_micros(config.max_price_per_hour)
        if config.instance_type is not None:
            parsed = parse_instance_type(config.instance_type)
            if isinstance(parsed, Failure):
                return Failure(parsed.failure())
            wanted = parsed.unwrap()
            if wanted.is_cpu:
                return Success(Requirements(instance_type=wanted, max_price_micros=price))
            return Success(
                Requirements(
                    gpu_type=wanted.model,
                    gpu_memory_gb=wanted.memory_gb,
                    min_gpu_count=wanted.count,
                    max_price_micros=price,
                )
            )
        return Success(Requirements(gpu_memory_gb=config.min_gpu_memory_gb, max_price_micros=price))

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        # Refused rather than silently ignored: the task would run without them.
        unsupported = [
            violation(name, value, "is not supported by the local provider yet", fix)
            for name, value, fix in (
                ("image", config.image, "leave image out to run on this machine's own environment"),
                ("volumes", list(config.volumes), "leave volumes out, or run on a provider that has them"),
                ("data_mounts", list(config.data_mounts), "copy the data into the code directory, or leave them out"),
            )
            if value
        ]
        if unsupported:
            return Failure(validation_error(unsupported, subject="task configuration for the local provider"))
        if config.memory_mb is not None and config.memory_mb > self._memory_mb:
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=f"The task needs {config.memory_mb} MB of RAM; this machine has {self._memory_mb} MB",
                    suggestions=(
                        f"ask for at most memory_mb={self._memory_mb}",
                        "run on a provider with bigger machines",
                    ),
                    metadata=(("provider", self.name),),
                )
            )
        # This machine has no region: a cloud region in the config is not a reason to refuse.
        required = self._requirements(config)
        if isinstance(required, Failure):
            return Failure(required.failure())
        result = match_offers(required.unwrap(), self.offers())
        if not result.matches:
            error = explain_no_match(required.unwrap(), result, price_field="max_price_per_hour")
            return Failure(
                evolve(
                    error,
                    message=f"{error.message} This machine has {describe_inventory(self._gpus)}.",
                    suggestions=(
                        *error.suggestions,
                        "leave out instance_type and min_gpu_memory_gb to run on this machine's CPUs",
                        "run on a provider with GPUs, e.g. provider='slurm' or provider='mithril'",
                    ),
                    metadata=(*error.metadata, ("provider", self.name)),
                )
            )
        offer = result.matches[0]
        return Success(
            Placement(
                instance_type=format_instance_type(offer.instance_type),
                cost_per_hour_micros=offer.price_per_hour_micros,
            )
        )

    # --- launching --------------------------------------------------------------------------

    def task_dir(self, task_id: str) -> Path:
        return self._tasks_root / task_id

    def log_path(self, task_id: str) -> Path:
        return self.task_dir(task_id) / OUTPUT_FILE

    def _argv(self, record: TaskRecord, task_dir: Path) -> list[str]:
        call = record.function_call
        if call is not None:
            (task_dir / RUNNER_FILE).write_bytes(RUNNER_SOURCE.read_bytes())
            (task_dir / INVOCATION_FILE).write_text(json.dumps(invocation_document(call)))
            return [
                call.python or "python3",
                str(task_dir / RUNNER_FILE),
                str(task_dir / INVOCATION_FILE),
                str(task_dir / RESULT_FILE),
            ]
        form, program = program_of(record.config)
        if form == "command":
            assert isinstance(program, tuple)
            return list(program)
        if form == "shell":
            assert isinstance(program, str)
            return [self._bash, "-c", program]
        assert isinstance(program, str)
        script = task_dir / SCRIPT_FILE
        script.write_text(program)
        if program.startswith("#!"):
            script.chmod(0o700)
            return [str(script)]
        return ["python3", str(script)]

    def _cwd(self, record: TaskRecord, task_dir: Path) -> Path:
        config = record.config
        if record.code_digest is not None:
            base = task_dir / CODE_DIR
            self._materialize(record.code_digest, base)
        else:
            base = task_dir / "work"
            base.mkdir(exist_ok=True)
        if config.working_dir:
            base = base / config.working_dir  # an absolute working_dir replaces the base
        if not base.is_dir():
            raise LaunchError(
                f"working directory {str(base)!r} does not exist on this machine; "
                "create it, or leave working_dir out to run in the task's own directory"
            )
        return base

    def _env(self, record: TaskRecord, gpus: tuple[int, ...]) -> dict[str, str]:
        env = dict(self._base_env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # live logs from Python programs
        env.update(record.config.env)
        env.update(record.secrets)
        env["FLOW_TASK_ID"] = record.task_id
        env["FLOW_TASK_NAME"] = record.name
        # A task sees exactly its GPUs (none for a CPU task), numbered as NVML numbers them.
        visible = ",".join(str(i) for i in gpus)
        env["CUDA_VISIBLE_DEVICES"] = visible
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["NVIDIA_VISIBLE_DEVICES"] = visible or "void"
        return env

    # --- GPU queue ----------------------------------------------------------------------------

    def _gpu_request(self, record: TaskRecord) -> GpuRequest | None:
        config = record.config
        if config.instance_type is not None:
            parsed = parse_instance_type(config.instance_type)
            if isinstance(parsed, Success) and not parsed.unwrap().is_cpu:
                wanted = parsed.unwrap()
                return GpuRequest(record.task_id, wanted.count, wanted.model, wanted.memory_gb)
            return None
        if config.min_gpu_memory_gb is not None:
            return GpuRequest(record.task_id, 1, None, config.min_gpu_memory_gb)
        return None

    def launch(self, record: TaskRecord) -> Runtime:
        """Starts a CPU task now; a GPU task now if its GPUs are free, else it waits its turn
        (the runtime says "queued") and is reported Started when it gets them."""
        request = self._gpu_request(record)
        if request is None:
            return self._spawn(record, ())
        with self._lock:
            self._queue.append((request, record))
            starts = dict(next_starts(self._gpus, self._busy, [r for r, _ in self._queue]))
            mine = starts.get(record.task_id)
            if mine is None:
                return {"queued": True, "task_dir": str(self.task_dir(record.task_id))}
            self._queue = [(r, t) for r, t in self._queue if r.task_id != record.task_id]
            self._busy[record.task_id] = mine
        try:
            return self._spawn(record, mine)
        except BaseException:
            self._release(record.task_id)
            raise

    def _release(self, task_id: str) -> None:
        """A task let go of its GPUs (or left the queue): start whoever's turn it is now."""
        with self._lock:
            freed = self._busy.pop(task_id, None)
            before = len(self._queue)
            self._queue = [(r, t) for r, t in self._queue if r.task_id != task_id]
            if freed is None and len(self._queue) == before:
                return
        self._dispatch()

    def _dispatch(self) -> None:
        with self._lock:
            starts = next_starts(self._gpus, self._busy, [r for r, _ in self._queue])
            chosen: list[tuple[TaskRecord, tuple[int, ...]]] = []
            for task_id, gpus in starts:
                record = next(t for r, t in self._queue if r.task_id == task_id)
                self._queue = [(r, t) for r, t in self._queue if r.task_id != task_id]
                self._busy[task_id] = gpus
                chosen.append((record, gpus))
        for record, gpus in chosen:
            try:
                runtime = self._spawn(record, gpus)
            except (LaunchError, OSError) as exc:
                self._report(record.task_id, LaunchFailed(reason=str(exc)))
                self._release(record.task_id)
                continue
            # Reported before it is watched, so its end can never arrive before its start.
            self._report(record.task_id, Started(), runtime)
            self.watch(record, runtime)

    def recovered(self) -> None:
        """Every task is known again after a restart: start the queue moving."""
        self._dispatch()

    def _spawn(self, record: TaskRecord, gpus: tuple[int, ...]) -> Runtime:
        task_dir = self.task_dir(record.task_id)
        task_dir.mkdir(parents=True, exist_ok=True)
        cwd = self._cwd(record, task_dir)
        argv = self._argv(record, task_dir)
        marker = MARKER_PREFIX + record.task_id
        output = os.open(task_dir / OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            child = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, marker, str(task_dir / EXIT_FILE), *argv],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=cwd,
                env=self._env(record, gpus),
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"could not start /bin/sh: {exc.strerror}") from exc
        finally:
            os.close(output)
        self._children[record.task_id] = child
        return {
            "pid": child.pid,
            "start_ticks": process_start_ticks(child.pid),
            "task_dir": str(task_dir),
            "gpus": list(gpus),
            "cwd": str(cwd),
        }

    def _materialize(self, digest: str, dest: Path) -> None:
        """The task's private copy of its code snapshot: later edits to the blobs' sources, or by
        other tasks, can never reach it."""
        parsed = parse_manifest(self._blobs.read(digest))
        if isinstance(parsed, Failure):
            raise LaunchError(f"the code snapshot {digest} is unreadable: {parsed.failure().message}")
        dest.mkdir(exist_ok=True)
        made: set[Path] = {dest}
        for entry in parsed.unwrap().entries:
            target = dest / entry.path
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            shutil.copyfile(self._blobs.path(entry.digest), target)
            target.chmod(0o755 if entry.executable else 0o644)

    def read_result(self, task_id: str) -> bytes | None:
        try:
            return (self.task_dir(task_id) / RESULT_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def watch(self, record: TaskRecord, runtime: Runtime) -> None:
        pid = int(runtime["pid"])
        child = self._children.pop(record.task_id, None)
        self._watch(record, pid, child)

    def _watch(self, record: TaskRecord, pid: int, child: subprocess.Popen[bytes] | None) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._report_end(record.task_id, self.task_dir(record.task_id), None, timed_out=False)
            return
        self._monitor.add(
            _Watched(
                task_id=record.task_id,
                pid=pid,
                pidfd=pidfd,
                task_dir=self.task_dir(record.task_id),
                child=child,
                deadline=deadline_of(record),
            )
        )

    def exec(
        self, record: TaskRecord, runtime: Runtime, argv: Sequence[str], tty: bool, rows: int, columns: int, term: str
    ) -> ExecSession:
        cwd = Path(runtime.get("cwd") or self.task_dir(record.task_id))
        env = self._env(record, tuple(runtime.get("gpus", ())))
        if tty:
            env["TERM"] = term or "xterm-256color"
        try:
            return ExecSession(list(argv) or [self._bash], cwd, env, tty, rows, columns)
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    def cancel(self, record: TaskRecord, runtime: Runtime) -> None:
        with self._lock:
            waiting = any(r.task_id == record.task_id for r, _ in self._queue)
        if waiting:
            self._release(record.task_id)  # it never started: it only leaves the queue
        else:
            # Running, or being started right now: the monitor stops it as soon as it is watched.
            self._monitor.terminate(record.task_id)

    # --- endings ----------------------------------------------------------------------------

    def _on_exit(self, watched: _Watched) -> None:
        status: int | None = None
        # Take stragglers the task left in its process group down with it, as Slurm does. Our
        # own child is still a zombie here; an adopted one is gone, but Linux never hands out a
        # pid still used as a process group id, so the group is still the task's.
        with contextlib.suppress(OSError):
            os.killpg(watched.pid, signal.SIGKILL)
        if watched.child is not None:
            status = shell_exit_code(watched.child.wait())
        self._report_end(watched.task_id, watched.task_dir, status, watched.timed_out)
        self._release(watched.task_id)

    def _report_end(self, task_id: str, task_dir: Path, status: int | None, timed_out: bool) -> None:
        recorded = read_exit_status(task_dir)
        code = recorded if recorded is not None else status
        if timed_out:
            self._report(task_id, TimedOut(exit_code=code))
        elif code is not None:
            self._report(task_id, Exited(exit_code=code))
        else:
            self._report(
                task_id,
                Lost(reason="the process ended while flowd was not running and left no exit status"),
            )

    def recover(self, record: TaskRecord, runtime: Runtime) -> Runtime | None:
        task_dir = self.task_dir(record.task_id)
        if runtime.get("queued"):
            request = self._gpu_request(record)
            if request is not None:
                with self._lock:  # back in line, in submission order (the engine recovers in it)
                    self._queue.append((request, record))
            return None
        pid = runtime.get("pid")
        if pid is None:
            # Launched (maybe) just before a crash, before its pid was saved.
            found = find_process_by_marker(MARKER_PREFIX + record.task_id)
            if found is not None:
                return {"pid": found, "start_ticks": process_start_ticks(found), "task_dir": str(task_dir), "gpus": []}
            if read_exit_status(task_dir) is not None:
                self._report_end(record.task_id, task_dir, None, timed_out=False)
                return None
            return self.launch(record)  # it never started: start it now
        if process_start_ticks(int(pid)) == runtime.get("start_ticks"):
            with self._lock:
                self._busy[record.task_id] = tuple(runtime.get("gpus", ()))
            return runtime
        self._report_end(record.task_id, task_dir, None, timed_out=False)
        return None

    def close(self) -> None:
        self._monitor.stop()
