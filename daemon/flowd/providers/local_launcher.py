"""Starting a local task's processes: its program, directory, environment, code and keeper.

Each task (each node of a multi-node task) is started by the keeper (local_keeper.py) in its own
session and process group, with its output appended to a file in the task's directory. The
keeper, its parent, records the program's exit status in a file when it ends, so the status
survives flowd; no shell runs between the keeper and the program.

User values never pass through a shell: the argv form runs as it is, a shell string is one
argument of `bash -c`, a script is a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from returns.result import Failure

from flow.domain.code.manifest import parse_manifest
from flow.domain.errors import validation_error, violation
from flow.domain.task import task_files
from flow.domain.task.config import program_of
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import TaskRecord
from flow.domain.task.multinode import node_env, split_gpus
from flow.runtime import runner
from flowd import volume_namespace
from flowd.blobs import BlobStore
from flowd.providers import warm_python, warm_workers
from flowd.providers.base import LaunchError
from flowd.providers.local_containers import EngineProbe, containerize, no_engine_error
from flowd.providers.local_keeper import Keeper
from flowd.providers.local_monitor import PidClock, pid_clock, process_start_ticks
from flowd.providers.local_nodes import free_port, node_key
from flowd.providers.local_state import LocalGroup, LocalNode, LocalProcess
from flowd.providers.task_dir import TaskDir
from flowd.volumes import VolumeManager

MARKER_PREFIX: Final = "flow-task:"
RUNNER_SOURCE: Final = Path(runner.__file__)


class LocalLauncher:
    def __init__(
        self,
        provider: str,
        tasks_root: Path,
        blobs: BlobStore,
        base_env: Mapping[str, str],
        engines: EngineProbe,
        volumes: VolumeManager | None,
        keeper: Keeper,
        warm: warm_workers.WarmWorkers | None = None,
    ) -> None:
        self._provider = provider
        self._tasks_root = tasks_root
        self._blobs = blobs
        self._base_env = dict(base_env)
        self._engines = engines
        self._volumes = volumes
        self.bash = shutil.which("bash", path=self._base_env.get("PATH")) or "/bin/sh"
        self._keeper = keeper
        self.warm = warm  # keep_warm functions' workers (warm_workers.py)
        # watch key -> (the keeper that reports its end, the pid clock read before it started)
        self._started: dict[str, tuple[int | None, PidClock | None]] = {}

    def task_dir(self, task_id: str) -> TaskDir:
        return TaskDir(self._tasks_root / task_id)

    def take_started(self, key: str) -> tuple[int | None, PidClock | None]:
        """For a process this flowd started: the keeper generation that reports its end and the
        pid clock read before it started; (None, None) for any other (once)."""
        return self._started.pop(key, (None, None))

    # --- what runs, where, with what --------------------------------------------------------

    def _argv(self, record: TaskRecord, task_dir: TaskDir) -> list[str]:
        call = record.function_call
        if call is not None:
            runner_path = task_dir.write(task_files.RUNNER, RUNNER_SOURCE.read_bytes())
            invocation = task_dir.write(task_files.INVOCATION, json.dumps(invocation_document(call)).encode())
            return [call.python or "python3", str(runner_path), str(invocation), str(task_dir.file(task_files.RESULT))]
        form, program = program_of(record.config)
        if form == "command":
            assert isinstance(program, tuple)
            return list(program)
        if form == "shell":
            assert isinstance(program, str)
            return [self.bash, "-c", program]
        assert isinstance(program, str)
        if program.startswith("#!"):
            return [str(task_dir.write(task_files.SCRIPT, program.encode(), 0o700))]
        return ["python3", str(task_dir.write(task_files.SCRIPT, program.encode()))]

    def _cwd(self, record: TaskRecord, task_dir: TaskDir) -> Path:
        config = record.config
        if record.code_digest is not None:
            base = task_dir.file(task_files.CODE_DIR)
            self.materialize(record.code_digest, base)
        else:
            base = task_dir.file(task_files.WORK_DIR)
            base.mkdir(exist_ok=True)
        if config.working_dir and not config.image:  # in an image, working_dir is the container's
            base = base / config.working_dir  # an absolute working_dir replaces the base
        if not base.is_dir():
            problem = f"does not exist ({base} on this machine)"
            fix = "create it, or leave working_dir out to run in the task's own directory"
            raise LaunchError(
                f"working directory {str(base)!r} does not exist on this machine",
                validation_error([violation("working_dir", config.working_dir, problem, fix)]),
            )
        return base

    @staticmethod
    def _writes_nothing_first(record: TaskRecord) -> bool:
        """A command in its own work directory: nothing is written into the task's directory
        before it starts, so the keeper creates both."""
        config = record.config
        if record.code_digest is not None or record.function_call is not None or config.num_instances > 1:
            return False
        if config.working_dir or config.image or config.volumes or config.data_mounts:
            return False
        return program_of(config)[0] in ("command", "shell")

    def env(self, record: TaskRecord, gpus: Sequence[int]) -> dict[str, str]:
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

    def materialize(self, digest: str, dest: Path) -> None:
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

    # --- starting ---------------------------------------------------------------------------

    def spawn(self, record: TaskRecord, gpus: tuple[int, ...]) -> LocalProcess | LocalGroup:
        """Starts the task now on these GPUs (raises LaunchError when it cannot)."""
        if record.attempts:  # it ran before: how that run ended must not pass for this one's end
            self.task_dir(record.task_id).clear_run()
        if record.config.num_instances > 1:
            return self._spawn_nodes(record, gpus)
        if self.warm is not None and record.function_call is not None and record.function_call.keep_warm:
            env = self.env(record, gpus)
            if warm_workers.warm_call(record, env):  # else it runs cold, as without keep_warm
                started = self.warm.start(record, env, self.task_dir(record.task_id).create(), gpus)
                if started is not None:
                    return started
        task_dir = self.task_dir(record.task_id)
        dirs: tuple[Path, ...] = ()
        if self._writes_nothing_first(record):  # the keeper makes its directories (off flowd's path)
            cwd = task_dir.file(task_files.WORK_DIR)
            dirs = (task_dir.path, cwd)
        else:
            task_dir.create()
            cwd = self._cwd(record, task_dir)
        argv = self._argv(record, task_dir)
        marker = MARKER_PREFIX + record.task_id
        env = self.env(record, gpus)
        if record.config.image:  # in its image, through docker or podman (local_containers.py)
            argv, env = self._in_container(record, task_dir, cwd, argv, gpus, None)
        # Function tasks start on a warm interpreter where that is indistinguishable (warm_python.py).
        exit_file = task_dir.file(task_files.EXIT_STATUS)
        clock = pid_clock()
        process = task_dir.file(task_files.PROCESS)  # the warm wrapper's record of the task's process
        warm = warm_python.launch(self._tasks_root, record, argv, cwd, env, task_dir.output, exit_file, process, marker)
        if warm is not None:
            pid, ticks = warm, process_start_ticks(warm)
            self._started[record.task_id] = (None, clock)
        else:
            key = record.task_id
            pid, ticks = self._start(record, task_dir, key, exit_file, argv, task_dir.output, cwd, env, "", dirs)
        return LocalProcess(pid=pid, start_ticks=ticks, task_dir=str(task_dir.path), gpus=gpus, cwd=str(cwd))

    def _start(
        self,
        record: TaskRecord,
        task_dir: TaskDir,
        key: str,
        exit_file: Path,
        command: Sequence[str],
        output: Path,
        cwd: Path,
        env: Mapping[str, str],
        what: str,
        dirs: Sequence[Path] = (),
    ) -> tuple[int, int | None]:
        """Starts one process through the keeper, in its own session (and, with volumes or data
        mounts, its own mount namespace), writing to `output`, once `dirs` exist; (pid, start
        ticks)."""
        argv = volume_namespace.namespace_command(record.config, command, self._volumes, task_dir.path)
        clock = pid_clock()
        try:
            started, generation = self._keeper.start(key, argv, cwd, {**env, "PWD": str(cwd)}, output, exit_file, dirs)
        except LaunchError as exc:
            raise LaunchError(f"could not start {what}the task: {exc}") from exc
        self._started[key] = (generation, clock)
        return started.pid, started.ticks

    def _spawn_nodes(self, record: TaskRecord, gpus: tuple[int, ...]) -> LocalGroup:
        """N node processes, each under the wrapper in its own process group, with its own GPUs,
        output and exit status (nodes/K/), and the torchrun variables (flow.domain.task.multinode)."""
        task_dir = self.task_dir(record.task_id).create()
        cwd = self._cwd(record, task_dir)
        argv = self._argv(record, task_dir)
        num_nodes = record.config.num_instances
        port = free_port()
        started: list[int] = []
        nodes: list[LocalNode] = []
        try:
            for node, share in enumerate(split_gpus(gpus, num_nodes)):
                directory = task_dir.node(node).create()
                env = self.env(record, share)
                env.update(node_env(node, num_nodes, port))
                # Node 0's result is the task's; the others keep theirs in their own directory.
                shared_result = str(task_dir.file(task_files.RESULT))
                command = [str(directory.file(task_files.RESULT)) if a == shared_result and node else a for a in argv]
                if record.config.image:
                    command, env = self._in_container(record, task_dir, cwd, command, share, (node, env))
                exit_file = directory.file(task_files.EXIT_STATUS)
                key = node_key(record.task_id, node)
                what = f"node {node} of "
                pid, ticks = self._start(record, task_dir, key, exit_file, command, directory.output, cwd, env, what)
                started.append(pid)
                nodes.append(LocalNode(pid=pid, start_ticks=ticks, gpus=share))
        except BaseException:
            for pid in started:  # all or nothing: no node outlives a failed launch (the keeper reaps it)
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            for node in range(len(started)):
                self._started.pop(node_key(record.task_id, node), None)
            raise
        return LocalGroup(task_dir=str(task_dir.path), nodes=tuple(nodes), gpus=gpus, cwd=str(cwd), master_port=port)

    def _in_container(
        self,
        record: TaskRecord,
        task_dir: TaskDir,
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
            raise LaunchError(no_engine_error(record.config.image or "", why, self._provider).message)
        task_vars = {"PYTHONUNBUFFERED": "1", **record.config.env, **record.secrets}
        task_vars.update(FLOW_TASK_ID=record.task_id, FLOW_TASK_NAME=record.name)
        if node is not None:
            rank, node_vars = node
            task_vars.update({k: node_vars[k] for k in node_env(rank, 1, 0)})
        programs = {self.bash: "bash"}
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
            task_dir=task_dir.path,
            code_dir=code_dir,
            working_dir=record.config.working_dir,
            gpus=gpus,
            host_network=record.config.num_instances > 1,
            host_programs=programs,
        )
