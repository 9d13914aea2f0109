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

from flow.domain.code.manifest import parse_manifest
from flow.domain.errors import DomainError, ErrorReason
from flow.domain.instances.gpu_inventory import Gpu, describe_inventory, local_offers
from flow.domain.instances.gpu_scheduler import GpuRequest, fits_ever, next_starts
from flow.domain.instances.instance_types import format_instance_type, parse_instance_type
from flow.domain.instances.matching import Offer, Requirements, explain_no_match, match_offers
from flow.domain.money import price_to_micros
from flow.domain.task.config import TaskConfig, program_of
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import (
    Exited,
    LaunchFailed,
    Lost,
    Preparing,
    Started,
    TaskRecord,
    TimedOut,
    deadline_of,
)
from flow.domain.task.multinode import node_env, split_gpus
from flow.domain.task.working_dir import checked_working_dir, host_working_dir
from flow.runtime import runner
from flowd import volume_namespace
from flowd.blobs import BlobStore
from flowd.exec_session import ExecError, ExecSession
from flowd.providers import warm_python
from flowd.providers.base import LaunchError, Placement, Reporter, Runtime
from flowd.providers.local_containers import EngineProbe, containerize, no_engine_error, remove_container
from flowd.providers.local_nodes import NodeTracker, free_port, node_dir, node_key, split_node_key
from flowd.volume_s3 import TaskDataSyncs, s3_sources
from flowd.volumes import VolumeManager

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
    volumes: VolumeManager | None = None  # set by the daemon: where volumes' data lives

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
        self._nodes = NodeTracker()  # multi-node tasks: which nodes have ended (local_nodes.py)
        self._engines = EngineProbe(path=self._base_env.get("PATH"))  # docker/podman, asked once
        self._containers: dict[str, str] = {}  # watched key -> container name (image tasks)
        self._monitor = _Monitor(on_exit=self._on_exit, grace=cancel_grace)
        self._monitor.start()
        self._syncs = TaskDataSyncs()  # s3:// data mounts, copied in before the command starts

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
        # A working_dir that is not there is refused now, not when the task starts.
        where = checked_working_dir(config, exists=os.path.isdir(host_working_dir(config) or "/"))
        if isinstance(where, Failure):
            return Failure(where.failure())
        if config.image:  # runs in its image through docker or podman, when one works here
            engine, why = self._engines.find()
            if engine is None:
                return Failure(no_engine_error(config.image, why, self.name))
        mountable = volume_namespace.check_supported(config, self.name)  # volumes, data_mounts
        if isinstance(mountable, Failure):
            return Failure(mountable.failure())
        nodes = config.num_instances
        if config.memory_mb is not None and config.memory_mb * nodes > self._memory_mb:
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=f"The task needs {config.memory_mb * nodes} MB of RAM"
                    + (f" ({nodes} nodes x {config.memory_mb} MB)" if nodes > 1 else "")
                    + f"; this machine has {self._memory_mb} MB",
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
        request = self._gpu_request_of(config, "")
        if request is not None and nodes > 1 and not fits_ever(request, self._gpus):
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=(
                        f"num_instances={nodes} nodes of {request.count // nodes}x {request.model or 'GPU'} each need "
                        f"{request.describe()} at once; this machine has {describe_inventory(self._gpus)}."
                    ),
                    suggestions=(
                        f"ask for fewer nodes or fewer GPUs per node (at most {len(self._gpus)} GPUs in all)",
                        "run on a provider with more machines, e.g. provider='slurm' or provider='mithril'",
                    ),
                    metadata=(("provider", self.name), ("num_instances", str(nodes))),
                )
            )
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
        if config.working_dir and not config.image:  # in an image, working_dir is the container's
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
        return self._gpu_request_of(record.config, record.task_id)

    @staticmethod
    def _gpu_request_of(config: TaskConfig, task_id: str) -> GpuRequest | None:
        """The GPUs the whole task needs: a multi-node task takes num_instances x the per-node
        count at once (all or nothing), queued like any other request."""
        nodes = max(1, config.num_instances)
        if config.instance_type is not None:
            parsed = parse_instance_type(config.instance_type)
            if isinstance(parsed, Success) and not parsed.unwrap().is_cpu:
                wanted = parsed.unwrap()
                return GpuRequest(task_id, wanted.count * nodes, wanted.model, wanted.memory_gb)
            return None
        if config.min_gpu_memory_gb is not None:
            return GpuRequest(task_id, nodes, None, config.min_gpu_memory_gb)
        return None

    def launch(self, record: TaskRecord) -> Runtime:
        """A task with s3:// data mounts waits PENDING ("syncing ...") while its data is copied in
        the background (volume_s3.TaskDataSyncs), then starts as any other (the runtime says
        "queued" and "syncing"; Started is reported later). Any other starts as below."""
        sources = s3_sources(record.config)
        if not sources:
            return self._launch_now(record)
        task_id = record.task_id
        data = self.task_dir(task_id) / volume_namespace.DATA_DIR
        self._syncs.start(
            task_id,
            [(url, data / str(i)) for i, url in sources],
            progress=lambda reason: self._report(task_id, Preparing(reason=reason)),
            failed=lambda reason: self._report(task_id, LaunchFailed(reason=reason)),
            ready=lambda: self._start_synced(record),
        )
        return {"queued": True, "syncing": True, "task_dir": str(self.task_dir(task_id))}

    def _start_synced(self, record: TaskRecord) -> None:
        """Its data is all there: start it now, or queue it for its GPUs."""
        try:
            runtime = self._launch_now(record)
        except (LaunchError, OSError) as exc:
            self._report(record.task_id, LaunchFailed(reason=str(exc)))
            return
        if runtime.get("queued"):
            return  # _dispatch reports it Started when its GPUs are free
        # Reported before it is watched, so its end can never arrive before its start.
        self._report(record.task_id, Started(), runtime)
        self.watch(record, runtime)

    def _launch_now(self, record: TaskRecord) -> Runtime:
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
        if record.config.num_instances > 1:
            return self._spawn_nodes(record, gpus)
        task_dir = self.task_dir(record.task_id)
        task_dir.mkdir(parents=True, exist_ok=True)
        cwd = self._cwd(record, task_dir)
        argv = self._argv(record, task_dir)
        marker = MARKER_PREFIX + record.task_id
        output = os.open(task_dir / OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        env = self._env(record, gpus)
        if record.config.image:  # in its image, through docker or podman (local_containers.py)
            argv, env = self._in_container(record, task_dir, cwd, argv, gpus, None)
        # Function tasks start on a warm interpreter where that is indistinguishable (warm_python.py).
        warm = warm_python.launch(
            self._tasks_root, record, argv, cwd, env, task_dir / OUTPUT_FILE, task_dir / EXIT_FILE, marker
        )
        if warm is not None:
            os.close(output)
            return {
                "pid": warm,
                "start_ticks": process_start_ticks(warm),
                "task_dir": str(task_dir),
                "gpus": list(gpus),
                "cwd": str(cwd),
            }
        child = self._start_wrapped(record, task_dir, marker, task_dir / EXIT_FILE, argv, output, cwd, env, "")
        self._children[record.task_id] = child
        return {
            "pid": child.pid,
            "start_ticks": process_start_ticks(child.pid),
            "task_dir": str(task_dir),
            "gpus": list(gpus),
            "cwd": str(cwd),
        }

    def _start_wrapped(
        self,
        record: TaskRecord,
        task_dir: Path,
        marker: str,
        exit_file: Path,
        command: Sequence[str],
        output: int,
        cwd: Path,
        env: Mapping[str, str],
        what: str,
    ) -> subprocess.Popen[bytes]:
        """One process under the exit-status wrapper, in its own session (and, with volumes or
        data mounts, its own mount namespace), writing to `output`, which this closes."""
        try:
            return subprocess.Popen(
                volume_namespace.namespace_command(
                    record.config,
                    ["/bin/sh", "-c", WRAPPER, marker, str(exit_file), *command],
                    self.volumes,
                    task_dir,
                ),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"could not start {what}/bin/sh: {exc.strerror}") from exc
        finally:
            os.close(output)

    def _spawn_nodes(self, record: TaskRecord, gpus: tuple[int, ...]) -> Runtime:
        """N node processes, each under the wrapper in its own process group, with its own GPUs,
        output and exit status (nodes/K/), and the torchrun variables (flow.domain.task.multinode)."""
        task_dir = self.task_dir(record.task_id)
        task_dir.mkdir(parents=True, exist_ok=True)
        cwd = self._cwd(record, task_dir)
        argv = self._argv(record, task_dir)
        num_nodes = record.config.num_instances
        port = free_port()
        marker = MARKER_PREFIX + record.task_id
        started: list[subprocess.Popen[bytes]] = []
        nodes: list[dict[str, object]] = []
        try:
            for node, share in enumerate(split_gpus(gpus, num_nodes)):
                directory = node_dir(task_dir, node)
                directory.mkdir(parents=True, exist_ok=True)
                env = self._env(record, share)
                env.update(node_env(node, num_nodes, port))
                # Node 0's result is the task's; the others keep theirs in their own directory.
                shared_result = str(task_dir / RESULT_FILE)
                command = [str(directory / RESULT_FILE) if a == shared_result and node else a for a in argv]
                if record.config.image:
                    command, env = self._in_container(record, task_dir, cwd, command, share, (node, env))
                output = os.open(directory / OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                child = self._start_wrapped(
                    record, task_dir, marker, directory / EXIT_FILE, command, output, cwd, env, f"node {node} with "
                )
                started.append(child)
                self._children[node_key(record.task_id, node)] = child
                nodes.append({"pid": child.pid, "start_ticks": process_start_ticks(child.pid), "gpus": list(share)})
        except BaseException:
            for child in started:  # all or nothing: no node outlives a failed launch
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            for node in range(len(started)):
                self._children.pop(node_key(record.task_id, node), None)
            raise
        return {
            "pid": started[0].pid,
            "start_ticks": nodes[0]["start_ticks"],
            "task_dir": str(task_dir),
            "gpus": list(gpus),
            "cwd": str(cwd),
            "master_port": port,
            "nodes": nodes,
        }

    def _in_container(
        self,
        record: TaskRecord,
        task_dir: Path,
        code_dir: Path,
        argv: Sequence[str],
        gpus: Sequence[int],
        node: tuple[int, Mapping[str, str]] | None,
    ) -> tuple[list[str], dict[str, str]]:
        """`docker|podman run ... image argv` for the task (or node K of it), and the client's
        environment. The task's variables are its own (env, secrets, Flow's, the nodes'), not
        flowd's environment: PATH and the like belong to the image."""
        engine, why = self._engines.find()
        if engine is None:  # it worked at submit time and stopped since
            raise LaunchError(no_engine_error(record.config.image or "", why, self.name).message)
        task_vars = {"PYTHONUNBUFFERED": "1", **record.config.env, **record.secrets}
        task_vars.update(FLOW_TASK_ID=record.task_id, FLOW_TASK_NAME=record.name)
        if node is not None:
            rank, node_vars = node
            task_vars.update({k: node_vars[k] for k in node_env(rank, 1, 0)})
        programs = {self._bash: "bash"}
        if record.function_call is not None and record.function_call.python:
            programs[record.function_call.python] = "python3"
        name = f"flow-{record.task_id}" + (f"-node{node[0]}" if node is not None else "")
        return containerize(
            engine=engine,
            image=record.config.image or "",
            name=name,
            argv=argv,
            task_env=task_vars,
            client_env=self._base_env,
            task_dir=task_dir,
            code_dir=code_dir,
            working_dir=record.config.working_dir,
            gpus=gpus,
            host_network=record.config.num_instances > 1,
            host_programs=programs,
        )

    def node_log_path(self, task_id: str, node: int) -> Path:
        """Node K's output (multi-node tasks; a single-node task's is log_path)."""
        return node_dir(self.task_dir(task_id), node) / OUTPUT_FILE

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
        if record.config.image:  # its container is removed when it ends, however it ends
            keys = [node_key(record.task_id, k) for k in range(len(runtime.get("nodes") or ()))] or [record.task_id]
            for key in keys:
                self._containers[key] = "flow-" + key.replace("@", "-node")
        if runtime.get("nodes"):
            self._watch_nodes(record, runtime)
            return
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

    def _watch_nodes(self, record: TaskRecord, runtime: Runtime) -> None:
        """Watches every node of a multi-node task; a node already gone (it ended while flowd
        was down) counts as ended with the status it recorded."""
        task_dir = self.task_dir(record.task_id)
        self._nodes.begin(record.task_id, len(runtime["nodes"]))
        gone: list[tuple[int, Path]] = []
        for node, facts in enumerate(runtime["nodes"]):
            key = node_key(record.task_id, node)
            directory = node_dir(task_dir, node)
            child = self._children.pop(key, None)
            pid = int(facts["pid"])
            try:
                if child is None and process_start_ticks(pid) != facts.get("start_ticks"):
                    raise ProcessLookupError(pid)
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                gone.append((node, directory))
                continue
            self._monitor.add(
                _Watched(
                    task_id=key, pid=pid, pidfd=pidfd, task_dir=directory, child=child, deadline=deadline_of(record)
                )
            )
        for node, directory in gone:
            self._node_ended(record.task_id, node, read_exit_status(directory), timed_out=False)

    def _node_ended(self, task_id: str, node: int, code: int | None, timed_out: bool) -> None:
        tracked = self._nodes.ended(task_id, node, code, timed_out)
        if tracked is None:
            return
        outcome, stop, any_timed_out = tracked
        if stop:  # one node failed: the task has failed, the others are stopped
            log.info("task %s: node %s ended with status %s; stopping nodes %s", task_id, node, code, stop)
            for other in stop:
                self._monitor.terminate(node_key(task_id, other))
        if not outcome.finished:
            return
        if any_timed_out:
            self._report(task_id, TimedOut(exit_code=outcome.exit_code))
        elif outcome.exit_code is not None:
            self._report(task_id, Exited(exit_code=outcome.exit_code))
        else:
            self._report(
                task_id,
                Lost(reason=f"node {outcome.failed_node} ended while flowd was not running and left no exit status"),
            )
        self._release(task_id)

    def exec(
        self, record: TaskRecord, runtime: Runtime, argv: Sequence[str], tty: bool, rows: int, columns: int, term: str
    ) -> ExecSession:
        cwd = Path(runtime.get("cwd") or self.task_dir(record.task_id))
        nodes = runtime.get("nodes")  # a multi-node task: the command runs beside node 0
        env = self._env(record, tuple(nodes[0]["gpus"] if nodes else runtime.get("gpus", ())))
        if tty:
            env["TERM"] = term or "xterm-256color"
        command = volume_namespace.enter_command(record.config, runtime, list(argv) or [self._bash])
        engine, _ = self._engines.find() if record.config.image else (None, "")
        if engine is not None:  # an image task: into its container (node 0's)
            name = f"flow-{record.task_id}" + ("-node0" if nodes else "")
            command = [engine, "exec", "-i", *(["-t", "--env", "TERM"] if tty else []), name, *(argv or ["bash"])]
        try:
            return ExecSession(command, cwd, env, tty, rows, columns)
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    def cancel(self, record: TaskRecord, runtime: Runtime) -> None:
        if self._syncs.cancel(record.task_id):
            return  # its data was still being copied: it stops there, and nothing starts
        with self._lock:
            waiting = any(r.task_id == record.task_id for r, _ in self._queue)
        if waiting:
            self._release(record.task_id)  # it never started: it only leaves the queue
        elif record.config.num_instances > 1:  # every node still running (or being started)
            for node in self._nodes.running(record.task_id, record.config.num_instances):
                self._monitor.terminate(node_key(record.task_id, node))
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
        container = self._containers.pop(watched.task_id, None)
        if container is not None:  # killed clients leave their container running: remove it
            remove_container(self._engines.find()[0], container)
        node = split_node_key(watched.task_id)
        if node is not None:  # one node of a multi-node task
            recorded = read_exit_status(watched.task_dir)
            self._node_ended(node[0], node[1], recorded if recorded is not None else status, watched.timed_out)
            return
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
        if runtime.get("syncing"):
            # flowd stopped while its data was being copied, or after (waiting for GPUs, or being
            # started): found by its marker if it started; else synced again (only what was not
            # whole yet is copied) and started, by the never-started path below.
            runtime = {"task_dir": str(task_dir)}
        if runtime.get("queued"):
            request = self._gpu_request(record)
            if request is not None:
                with self._lock:  # back in line, in submission order (the engine recovers in it)
                    self._queue.append((request, record))
            return None
        if runtime.get("nodes"):  # multi-node: watch() sorts out which nodes still run
            with self._lock:
                self._busy[record.task_id] = tuple(runtime.get("gpus", ()))
            return runtime
        pid = runtime.get("pid")
        if pid is None and record.config.num_instances > 1:
            # Started (maybe) just before a crash, before the nodes' pids were saved: a partly
            # started group cannot be completed, so its nodes are stopped and it ends LOST.
            found = find_process_by_marker(MARKER_PREFIX + record.task_id)
            if found is None and not (task_dir / "nodes").exists():
                return self.launch(record)  # it never started: start it now
            while found is not None:
                with contextlib.suppress(OSError):
                    os.killpg(found, signal.SIGKILL)
                time.sleep(0.01)
                found = find_process_by_marker(MARKER_PREFIX + record.task_id)
            self._report(
                record.task_id, Lost(reason="flowd stopped while it was starting the nodes; they were stopped")
            )
            return None
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
        self._syncs.close()
        self._monitor.stop()
