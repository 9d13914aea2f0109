"""The local provider: tasks are processes on this machine.

Placement is pure (flow.domain.instances.local_placement). A task starts at once when it needs
no GPUs or its GPUs are free (`Running`), else it waits in a FIFO queue for them (`Queued`,
reported Started when it gets them); a task with s3:// data mounts waits while its data is
copied in (volume_s3.TaskDataSyncs). Processes are started by local_launcher through the keeper
(local_keeper.py: their parent, which records each exit status in the task's directory; each task
in its own session), watched by local_monitor (the keeper reports an end the moment it happens),
and are not flowd's children: they keep running when flowd stops, and a restarted flowd adopts the
ones still running (by pid, checked against the kernel's start time) and reads how the others
ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError
from flow.domain.instances.gpu_inventory import Gpu, local_offers
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.instances.local_placement import Machine, gpu_request, place_locally
from flow.domain.instances.matching import Offer
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import Exited, LaunchFailed, Lost, Preparing, Started, TaskRecord, TimedOut, deadline_of
from flow.domain.task.working_dir import checked_working_dir, host_working_dir
from flowd import volume_namespace
from flowd.blobs import BlobStore
from flowd.exec_session import ExecError, ExecSession
from flowd.providers.base import (
    Capabilities,
    Ended,
    ExecRequest,
    Launched,
    LaunchError,
    Placement,
    Queued,
    Recovered,
    Reporter,
    Running,
    StateType,
)
from flowd.providers.environment import public_env
from flowd.providers.local_containers import EngineProbe, no_engine_error, remove_container
from flowd.providers.local_gpus import GpuQueue
from flowd.providers.local_keeper import Keeper, Spawned, forget_dead_journals, read_journals
from flowd.providers.local_launcher import MARKER_PREFIX, LocalLauncher
from flowd.providers.local_monitor import Monitor, Watched, find_process_by_marker, process_start_ticks
from flowd.providers.local_nodes import NodeTracker, node_key, split_node_key
from flowd.providers.local_state import LOCAL_STATES, LocalGroup, LocalProcess, LocalState, LocalWaiting
from flowd.providers.task_dir import TaskDir
from flowd.providers.warm_workers import WarmWorkers
from flowd.volume_s3 import TaskDataSyncs, s3_sources
from flowd.volumes import VolumeManager

log = logging.getLogger(__name__)

DEFAULT_CANCEL_GRACE = 10.0


def machine_memory_mb() -> int:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


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
        volumes: VolumeManager | None = None,
    ) -> None:
        self.name = name
        self._report = reporter
        base = public_env(os.environ if base_env is None else base_env)
        self._engines = EngineProbe(path=base.get("PATH"))  # docker/podman, asked once
        self._monitor = Monitor(on_exit=self._on_exit, grace=cancel_grace)
        self._monitor.start()
        self._journals = tasks_root.parent / "keepers"  # which process each task is (local_keeper_process.py)
        self._keeper = Keeper(self._monitor.follow_keeper, self._journals, log_file=tasks_root.parent / "flowd.log")
        self._journaled: dict[str, Spawned] | None = None  # read once, by the first recovery that needs it
        self._launcher = LocalLauncher(name, tasks_root, blobs, base, self._engines, volumes, self._keeper)
        # keep_warm functions' calls run in workers whose ends they report (warm_workers.py)
        warm_root = tasks_root.parent / "warm-workers"
        self._launcher.warm = WarmWorkers(warm_root, self._launcher.materialize, self._warm_ended)
        self._machine = Machine(provider=name, gpus=tuple(gpus), memory_mb=machine_memory_mb())
        self._gpus = GpuQueue(gpus)
        self._nodes = NodeTracker()  # multi-node tasks: which nodes have ended (local_nodes.py)
        self._containers: dict[str, str] = {}  # watched key -> container name (image tasks)
        self._syncs = TaskDataSyncs()  # s3:// data mounts, copied in before the command starts
        self.capabilities = Capabilities(offers=self, exec=self, results=self, node_logs=True)

    @property
    def state_type(self) -> StateType:
        return LOCAL_STATES

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self._machine.gpus

    # --- placement --------------------------------------------------------------------------

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        return Success(local_offers(self._machine.gpus, self.name))

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        # An absolute working_dir that is not on this machine is refused now, not when it starts.
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
        placed = place_locally(config, self._machine)
        if isinstance(placed, Failure):
            return Failure(placed.failure())
        offer = placed.unwrap().offer
        return Success(Placement(format_instance_type(offer.instance_type), offer.price_per_hour_micros))

    # --- launching --------------------------------------------------------------------------

    def launch(self, record: TaskRecord) -> Launched[LocalState]:
        """A task with s3:// data mounts waits PENDING ("syncing ...") while its data is copied in
        the background, then starts as any other; any other starts now or waits for its GPUs."""
        task_dir = self._launcher.task_dir(record.task_id)
        sources = s3_sources(record.config)
        if not sources:
            try:
                return self._launch_now(record)
            except (LaunchError, OSError) as exc:
                return (exc if isinstance(exc, LaunchError) else LaunchError(str(exc))).refused(self.name)
        task_id = record.task_id
        data = task_dir.file(volume_namespace.DATA_DIR)
        self._syncs.start(
            task_id,
            [(url, data / str(i)) for i, url in sources],
            progress=lambda reason: self._report(task_id, Preparing(reason=reason)),
            failed=lambda reason: self._report(task_id, LaunchFailed(reason=reason)),
            ready=lambda: self._start_later(record),
        )
        return Queued(LocalWaiting(task_dir=str(task_dir.path), syncing=True))

    def _launch_now(self, record: TaskRecord) -> Running[LocalState] | Queued[LocalState]:
        """Starts a CPU task now; a GPU task now if its GPUs are free, else it waits its turn and
        is reported Started when it gets them."""
        request = gpu_request(record.config, record.task_id)
        if request is None:
            return Running(self._launcher.spawn(record, ()))
        mine = self._gpus.take(request, record)
        if mine is None:
            return Queued(LocalWaiting(task_dir=str(self._launcher.task_dir(record.task_id).path)))
        try:
            return Running(self._launcher.spawn(record, mine))
        except BaseException:
            self._release(record.task_id)
            raise

    def _start_later(self, record: TaskRecord) -> None:
        """Its data is all there: start it now, or queue it for its GPUs."""
        try:
            outcome = self._launch_now(record)
        except (LaunchError, OSError) as exc:
            self._report(record.task_id, LaunchFailed(reason=str(exc)))
            return
        if isinstance(outcome, Running) and not isinstance(outcome.state, LocalWaiting):
            self._started(record, outcome.state)

    def _started(self, record: TaskRecord, state: LocalProcess | LocalGroup) -> None:
        # Reported before it is watched, so its end can never arrive before its start.
        self._report(record.task_id, Started(), state)
        self.watch(record, state)

    def _release(self, task_id: str) -> None:
        """A task let go of its GPUs (or left the queue): start whoever's turn it is now."""
        if self._gpus.release(task_id):
            self._dispatch()

    def _dispatch(self) -> None:
        for record, gpus in self._gpus.ready():
            try:
                state = self._launcher.spawn(record, gpus)
            except (LaunchError, OSError) as exc:
                self._report(record.task_id, LaunchFailed(reason=str(exc)))
                self._release(record.task_id)
                continue
            self._started(record, state)

    def recovered(self) -> None:
        """Every task is known again after a restart: start the queue moving."""
        self._journaled = None
        forget_dead_journals(self._journals)
        self._dispatch()

    def _journal(self, key: str, task_dir: Path) -> Spawned | None:
        """The process task (or node) `key` was started as: the keepers' journals say, or for a
        function task on a warm interpreter, its wrapper's record in the task's directory."""
        if self._journaled is None:
            self._journaled = read_journals(self._journals, lambda s: process_start_ticks(s.pid) == s.ticks)
        found = self._journaled.get(key)
        if found is not None:
            return found
        record = TaskDir(task_dir).read(task_files.PROCESS)
        parts = (record or b"").split()
        if len(parts) == 2 and parts[0].isdigit():
            return Spawned(int(parts[0]), int(parts[1]) if parts[1].isdigit() else None)
        return None

    # --- watching ---------------------------------------------------------------------------

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        task_dir = self._launcher.task_dir(record.task_id)
        if record.config.num_instances > 1:
            return [task_dir.node(k).output for k in range(record.config.num_instances)]
        return [task_dir.output]

    def read_result(self, task_id: str) -> bytes | None:
        return self._launcher.task_dir(task_id).read(task_files.RESULT)

    def watch(self, record: TaskRecord, state: LocalState) -> None:
        if isinstance(state, LocalWaiting):
            return  # reported Started (with its process) when it starts
        nodes = state.nodes if isinstance(state, LocalGroup) else ()
        if record.config.image:  # its container is removed when it ends, however it ends
            for key in [node_key(record.task_id, k) for k in range(len(nodes))] or [record.task_id]:
                self._containers[key] = "flow-" + key.replace("@", "-node")
        if isinstance(state, LocalGroup):
            self._watch_nodes(record, state)
            return
        if state.warm and self._warm.watch(record.task_id, deadline_of(record)):
            return  # its worker reports its end (a call found after a restart is watched as any process)
        task_dir = self._launcher.task_dir(record.task_id)
        self._watch(record.task_id, state.pid, state.start_ticks, record, task_dir.path)

    def _watch(self, key: str, pid: int, ticks: int | None, record: TaskRecord, directory: Path) -> None:
        """Hands the process to the monitor (which finds out if it is gone already)."""
        keeper, since = self._launcher.take_started(key)
        self._monitor.add(Watched(key, pid, ticks, directory, deadline_of(record), keeper=keeper, since=since))

    def _watch_nodes(self, record: TaskRecord, state: LocalGroup) -> None:
        """Watches every node; a node already gone (it ended while flowd was down) counts as
        ended with the status it recorded."""
        task_dir = self._launcher.task_dir(record.task_id)
        self._nodes.begin(record.task_id, len(state.nodes))
        for rank, node in enumerate(state.nodes):
            self._watch(node_key(record.task_id, rank), node.pid, node.start_ticks, record, task_dir.node(rank).path)

    def cancel(self, record: TaskRecord, state: LocalState) -> None:
        if self._syncs.cancel(record.task_id):
            return  # its data was still being copied: it stops there, and nothing starts
        if self._gpus.is_waiting(record.task_id):
            self._release(record.task_id)  # it never started: it only leaves the queue
        elif record.config.num_instances > 1:  # every node still running (or being started)
            for node in self._nodes.running(record.task_id, record.config.num_instances):
                self._monitor.terminate(node_key(record.task_id, node))
        elif not (isinstance(state, LocalProcess) and state.warm and self._warm.cancel(record.task_id)):
            # Running, or being started right now: the monitor stops it as soon as it is watched.
            self._monitor.terminate(record.task_id)

    def exec(self, record: TaskRecord, state: LocalState, request: ExecRequest) -> ExecSession:
        if isinstance(state, LocalWaiting):
            raise LaunchError(f"task {record.task_id} has not started yet")
        cwd = Path(state.cwd or state.task_dir)
        first = state.nodes[0].gpus if isinstance(state, LocalGroup) else state.gpus
        env = self._launcher.env(record, first)
        if request.tty:
            env["TERM"] = request.term or "xterm-256color"
        argv = list(request.argv)
        command = volume_namespace.enter_command(record.config, state.pid, argv or [self._launcher.bash])
        engine, _ = self._engines.find() if record.config.image else (None, "")
        if engine is not None:  # an image task: into its container (node 0's)
            name = f"flow-{record.task_id}" + ("-node0" if isinstance(state, LocalGroup) else "")
            tty = ["-t", "--env", "TERM"] if request.tty else []
            command = [engine, "exec", "-i", *tty, name, *(argv or ["bash"])]
        try:
            return ExecSession(command, cwd, env, request.tty, request.rows, request.columns)
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    # --- endings ----------------------------------------------------------------------------

    @property
    def _warm(self) -> WarmWorkers:
        assert self._launcher.warm is not None
        return self._launcher.warm

    def _warm_ended(self, task_id: str, code: int | None, timed_out: bool) -> None:
        """A call in a warm worker ended (its worker replied, or died)."""
        self._report_end(task_id, code, timed_out, "the warm worker")
        self._release(task_id)

    def _on_exit(self, watched: Watched) -> None:
        """Every process of the task (or node) is gone: report how it ended."""
        container = self._containers.pop(watched.key, None)
        if container is not None:  # killed clients leave their container running: remove it
            remove_container(self._engines.find()[0], container)
        code = watched.status if watched.status is not None else TaskDir(watched.task_dir).exit_status()
        node = split_node_key(watched.key)
        if node is not None:  # one node of a multi-node task
            self._node_ended(node[0], node[1], code, watched.timed_out)
            return
        self._report_end(watched.key, code, watched.timed_out, "the process")
        self._release(watched.key)

    def _report_end(self, task_id: str, code: int | None, timed_out: bool, what: str) -> None:
        if timed_out:
            self._report(task_id, TimedOut(exit_code=code))
        elif code is not None:
            self._report(task_id, Exited(exit_code=code))
        else:
            self._report(task_id, Lost(reason=f"{what} ended while flowd was not running and left no exit status"))

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
        self._report_end(task_id, outcome.exit_code, any_timed_out, f"node {outcome.failed_node}")
        self._release(task_id)

    # --- after a restart --------------------------------------------------------------------

    def recover(self, record: TaskRecord, state: LocalState | None) -> Recovered[LocalState]:
        task_dir = self._launcher.task_dir(record.task_id)
        if isinstance(state, LocalWaiting) and state.syncing:
            # flowd stopped while its data was being copied, or after (waiting for GPUs, or being
            # started): found by its marker if it started; else synced again (only what was not
            # whole yet is copied) and started, by the never-started path below.
            state = None
        if isinstance(state, LocalWaiting):
            request = gpu_request(record.config, record.task_id)
            if request is not None:
                self._gpus.wait(request, record)  # back in line, in submission order
                return Queued(state)
            state = None
        if isinstance(state, LocalGroup):  # watch() sorts out which nodes still run
            self._gpus.hold(record.task_id, state.gpus)
            return Running(state)
        if isinstance(state, LocalProcess):
            if process_start_ticks(state.pid) == state.start_ticks:
                self._gpus.hold(record.task_id, state.gpus)
                return Running(state)
            self._report_end(record.task_id, task_dir.exit_status(), False, "the process")
            return Ended()
        return self._recover_unsaved(record, task_dir.path)

    def _recover_unsaved(self, record: TaskRecord, task_dir: Path) -> Recovered[LocalState]:
        """Launched (maybe) just before a crash, before its state was saved: the keeper's process
        record (or a warm interpreter's wrapper, by the marker in its command line) says."""
        marker = MARKER_PREFIX + record.task_id
        if record.config.num_instances > 1:
            # A partly started group cannot be completed, so its nodes are stopped and it ends LOST.
            nodes = task_dir / task_files.NODES_DIR
            if not nodes.exists():
                return self.launch(record)  # it never started: start it now
            records = [self._journal(node_key(record.task_id, int(n.name)), n) for n in nodes.iterdir()]
            alive = [r for r in records if r is not None and process_start_ticks(r.pid) == r.ticks]
            for started in alive:
                with contextlib.suppress(OSError):
                    os.killpg(started.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while alive and time.monotonic() < deadline:  # gone (reaped: its status is recorded)
                time.sleep(0.01)
                alive = [r for r in alive if process_start_ticks(r.pid) == r.ticks]
            self._report(
                record.task_id, Lost(reason="flowd stopped while it was starting the nodes; they were stopped")
            )
            return Ended()
        process = self._journal(record.task_id, task_dir)
        if process is not None and process_start_ticks(process.pid) == process.ticks:
            return Running(LocalProcess(pid=process.pid, start_ticks=process.ticks, task_dir=str(task_dir)))
        found = find_process_by_marker(marker) if process is None else None
        if found is not None:
            return Running(LocalProcess(pid=found, start_ticks=process_start_ticks(found), task_dir=str(task_dir)))
        recorded = TaskDir(task_dir).exit_status()
        if recorded is not None:
            self._report_end(record.task_id, recorded, False, "the process")
            return Ended()
        outcome = self.launch(record)  # it never started: start it now
        return outcome

    def close(self) -> None:
        self._syncs.close()
        self._warm.close()
        self._monitor.stop()
        self._keeper.close()  # it keeps recording how the running tasks end, then exits
