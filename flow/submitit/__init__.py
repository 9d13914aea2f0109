"""submitit on Flow: existing submitit code runs on any Flow provider.

    import submitit
    executor = submitit.AutoExecutor(folder="logs", cluster="flow")
    executor.update_parameters(timeout_min=10, gpus_per_node=1, flow_instance_type="a100")
    job = executor.submit(add, 5, 7)
    print(job.job_id, job.result())

or `flow.submitit.FlowExecutor(folder, provider="cluster")`. Flow registers itself under submitit's
`submitit` entry points (pyproject.toml), so `cluster="flow"` works once `flow-launcher[submitit]`
is installed. Every job is one ordinary Flow task (its job id is the task id): `flow status`,
`flow logs` and `flow cancel` see it.

The job folder must be one the task can reach at the same path (as on Slurm, where submitit needs a
shared file system): the local provider, or a cluster sharing its file system with the submitting
machine. The task runs in the submitting directory (not a code snapshot), with this interpreter
(or `python=`), which needs submitit and flow-launcher installed.

submitit imports this module (and constructs FlowJobEnvironment) in every process that resolves an
executor or a job environment, Flow users or not: it imports submitit and the standard library only;
the SDK is imported when a job is submitted or looked at.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import typing as tp
import uuid
import warnings
from pathlib import Path
from typing import Any, Final

from submitit.core import core, logger, utils
from submitit.core.job_environment import JobEnvironment

if tp.TYPE_CHECKING:
    from flow.client import Flow
    from flow.config import TaskConfig

REQUEUE_EXIT_CODE: Final = 144  # flow.runtime.submitit_launch turns it into flowd's requeue (exit 75)
MAX_REQUEUES: Final = 6  # runs again after the first (TaskConfig.max_retries); LocalExecutor's bound too
LIMIT_GRACE_S: Final = 60  # Flow's hard time limit comes this long after the launcher's own
DEFAULT_SIGNAL_DELAY_S: Final = 30  # LocalExecutor's (Slurm's 90 would eat short limits)
DEFAULT_ARRAY_PARALLELISM: Final = 256  # SlurmExecutor's
RESULTS_TIMEOUT_S: Final = 5  # the task has ended when this is used: the pickle is there or never comes
# Generic submitit parameters (AutoExecutor's shared ones) with their types.
GENERIC: Final[dict[str, tuple[type, ...]]] = {
    "name": (str,),
    "timeout_min": (int, float),
    "mem_gb": (int, float),
    "nodes": (int,),
    "cpus_per_task": (int,),
    "gpus_per_node": (int,),
    "tasks_per_node": (int,),
    "stderr_to_stdout": (bool,),
}
# TaskConfig fields offered as flow_<field> (AutoExecutor) or <field> (FlowExecutor). No name that
# SlurmExecutor or LocalExecutor also takes: submitit would route those users' bare parameter here.
TASK_FIELDS: Final = (
    "instance_type",
    "min_gpu_memory_gb",
    "max_price_per_hour",
    "region",
    "image",
    "env",
    "secret_env",
    "volumes",
    "data_mounts",
    "ssh_keys",
    "max_retries",
)
# Launcher settings. array_parallelism is also SlurmExecutor's name (unavoidable: it is what
# submitit calls it).
LAUNCH_FIELDS: Final = ("array_parallelism", "signal_delay_s")
DEFAULTS: Final[dict[str, Any]] = {
    "name": "submitit",
    "timeout_min": 5,
    "nodes": 1,
    "tasks_per_node": 1,
    "stderr_to_stdout": False,
    "array_parallelism": DEFAULT_ARRAY_PARALLELISM,
}
_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]+")
_COUNTED_TYPE: Final = re.compile(r"\d+x", re.IGNORECASE)


# --- inside the task ----------------------------------------------------------------------------


class FlowJobEnvironment(JobEnvironment):
    """`submitit.JobEnvironment()` inside a job FlowExecutor launched (flow.runtime.submitit_launch sets
    these variables). Active only there: a Flow task that is not a submitit job is not one."""

    _env: tp.ClassVar[dict[str, str]] = {
        "job_id": "SUBMITIT_FLOW_JOB_ID",
        "num_tasks": "SUBMITIT_FLOW_NTASKS",
        "num_nodes": "SUBMITIT_FLOW_NNODES",
        "node": "SUBMITIT_FLOW_NODEID",
        "global_rank": "SUBMITIT_FLOW_GLOBALID",
        "local_rank": "SUBMITIT_FLOW_LOCALID",
    }

    @property
    def hostnames(self) -> tp.Sequence[str]:
        listed = os.environ.get("SUBMITIT_FLOW_HOSTNAMES", "")
        return listed.split(",") if listed else [self.hostname]

    def _requeue(self, countdown: int) -> None:
        logger.get_logger().info(f"Requeued job {self.job_id} ({countdown} remaining timeouts)")
        sys.exit(REQUEUE_EXIT_CODE)


# --- the client's side --------------------------------------------------------------------------

_clients: dict[tuple[str | None, str | None], Flow] = {}


def _client(flow_home: str | None, provider: str | None) -> Flow:
    """One Flow client per (home, provider) in this process: jobs stay picklable (they keep the
    key, not the connection)."""
    key = (flow_home, provider)
    if key not in _clients:
        from flow.client import Flow

        _clients[key] = Flow(provider=provider, flow_home=flow_home)
    return _clients[key]


def _submitit_state(state: str, reason: str) -> str:
    """A Flow task state as submitit's (Slurm's) state names: every unfinished one is a name
    submitit counts as unfinished."""
    if state == "PENDING" and reason.startswith("attempt "):
        return "REQUEUED"  # waiting to run again (flowd's state_reason "attempt 2 of at most 7: ...")
    if state in ("PENDING", "PROVISIONING"):
        return "PENDING"
    if state == "FAILED" and reason.startswith("TIMEOUT"):
        return "TIMEOUT"  # flowd's max_run_time_hours stopped it
    if state == "PREEMPTED":
        return "INTERRUPTED"  # terminal in Flow: its retries are spent
    return state or "UNKNOWN"


class FlowInfoWatcher(core.InfoWatcher):
    """States of the registered jobs, from flowd (one GetTask per unfinished job and poll)."""

    def __init__(self, delay_s: int = 2) -> None:
        super().__init__(delay_s)
        self.homes: dict[str, tuple[str | None, str | None]] = {}

    def _make_command(self) -> list[str] | None:
        return None

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return self.get_info(job_id, mode=mode).get("State") or "UNKNOWN"

    def update(self) -> None:
        from flow.errors import FlowError

        self._num_calls += 1
        for job_id in sorted(self._registered - self._finished):
            try:
                task = _client(*self.homes.get(job_id, (None, None))).get_task(job_id)
            except FlowError as e:
                logger.get_logger().warning(f"Bypassing flowd error {e}, status of {job_id} may be inaccurate.")
                continue
            self.record(task.task_id, str(task.last_status), task.state_reason)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def record(self, job_id: str, state: str, reason: str) -> None:
        self._info_dict[job_id] = {"JobID": job_id, "State": _submitit_state(state, reason), "Reason": reason}


class FlowJob(core.Job[core.R]):
    """A submitit job that is one Flow task: job_id is the task id."""

    _results_timeout_s = RESULTS_TIMEOUT_S
    watcher = FlowInfoWatcher()

    def __init__(
        self,
        folder: Path | str,
        job_id: str,
        tasks: tp.Sequence[int] = (0,),
        flow_home: str | None = None,
        provider: str | None = None,
    ) -> None:
        self._flow_key = (flow_home, provider)
        super().__init__(folder, job_id, tasks)
        # After the sub-jobs (submitit builds them without these arguments) have registered.
        self.watcher.homes[job_id] = self._flow_key
        for sub in self._sub_jobs:
            tp.cast("FlowJob[core.R]", sub)._flow_key = self._flow_key

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.watcher.homes[self.job_id] = self._flow_key

    def _flow(self) -> Flow:
        return _client(*self._flow_key)

    def wait(self) -> None:
        """Waits in flowd (WaitTask) for the task to end, instead of polling every second."""
        if not self.done():
            task = self._flow().get_task(self.job_id).wait()
            self.watcher.record(self.job_id, str(task.last_status), task.state_reason)
            self.watcher._finished.add(self.job_id)
        super().wait()

    def cancel(self, check: bool = True) -> None:
        from flow.errors import FlowError

        try:
            self._flow().cancel(self.job_id)
        except FlowError:
            if check:
                raise

    def get_info(self, mode: str = "force") -> dict[str, str]:
        return self.watcher.get_info(self.job_id, mode=mode)

    def _interrupt(self, timeout: bool = False) -> None:
        """Sends node 0's launcher SIGUSR2, as Slurm does before a preemption or the time limit:
        the ranks checkpoint (a Checkpointable) and the job is requeued. (`timeout` is accepted
        for submitit's signature; the launcher tells the two apart by elapsed time, as submitit does.)"""
        del timeout
        pid_file = self.paths.folder / f".{self.job_id}_0_launcher.pid"
        # The command may run on every node of the task (Slurm): only node 0's host signals.
        signal_node_0 = 'read -r pid host < "$1" && if [ "$host" = "$(hostname)" ]; then kill -USR2 "$pid"; fi'
        self._flow().get_task(self.job_id).exec(["sh", "-c", signal_node_0, "sh", str(pid_file)])


class FlowExecutor(core.PicklingExecutor):
    """Runs submitit jobs as Flow tasks on `provider` (default: the client's default provider).

    Parameters (update_parameters): submitit's generic ones (name, timeout_min, mem_gb, nodes,
    cpus_per_task, gpus_per_node, tasks_per_node, stderr_to_stdout), the TaskConfig fields
    instance_type, min_gpu_memory_gb, max_price_per_hour, region, image, env, secret_env, volumes,
    data_mounts and ssh_keys, and array_parallelism and signal_delay_s. Through AutoExecutor they
    are `flow_<name>`. slurm_partition (only on FlowExecutor itself: AutoExecutor drops another
    cluster's parameters) is the partition on a Slurm provider."""

    job_class = FlowJob

    def __init__(
        self,
        folder: Path | str,
        max_num_timeout: int = 3,
        max_pickle_size_gb: float = 1.0,
        provider: str | None = None,
        python: str | None = None,
        flow_home: str | None = None,
    ) -> None:
        super().__init__(folder, max_num_timeout=max_num_timeout, max_pickle_size_gb=max_pickle_size_gb)
        self._throttling = 0.0  # flowd takes submissions as fast as they come
        self.provider = provider
        self.python = python
        self.flow_home = None if flow_home is None else str(flow_home)
        self.slurm_parameters: dict[str, Any] = {}
        self.parameters.update(DEFAULTS)

    @classmethod
    def affinity(cls) -> int:
        return 0  # available, but only when asked for (cluster="flow")

    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return {*GENERIC, *TASK_FIELDS, *LAUNCH_FIELDS}

    def _internal_update_parameters(self, **kwargs: Any) -> None:
        slurm = {k: v for k, v in kwargs.items() if k.startswith("slurm_")}
        unknown = sorted(kwargs.keys() - self._valid_parameters() - slurm.keys())
        if unknown:
            known = sorted(self._valid_parameters())
            lines = "\n".join(f"  - {name} (default: {DEFAULTS.get(name)!r})" for name in known)
            raise ValueError(f"Unavailable parameter(s): {unknown}\nValid parameters are:\n{lines}")
        for key, value in kwargs.items():
            types = GENERIC.get(key)
            if types and value is not None and not _typed(value, types):
                raise ValueError(f'Parameter "{key}" expected type {types} (but value: "{value}")')
        merged = {**self.parameters, **{k: v for k, v in kwargs.items() if k not in slurm}}
        if merged.get("nodes", 1) < 1 or merged.get("tasks_per_node", 1) < 1:
            counts = f"{merged['nodes']}, {merged['tasks_per_node']}"
            raise ValueError(f"nodes and tasks_per_node must be at least 1 (got {counts})")
        if merged.get("gpus_per_node") and not merged.get("instance_type"):
            raise ValueError(
                f"gpus_per_node={merged['gpus_per_node']} needs the GPU model: set flow_instance_type "
                '(e.g. update_parameters(flow_instance_type="a100"); the count comes from gpus_per_node)'
            )
        self._task_config(merged, "python3")  # Flow's own checks, now (ValidationError)
        self.parameters = merged
        self.slurm_parameters.update(slurm)

    def _num_tasks(self) -> int:
        return int(self.parameters["nodes"]) * int(self.parameters["tasks_per_node"])

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return ""  # no batch file: the task's command is the launcher

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        return []

    @staticmethod
    def _get_job_id_from_submission_command(string: bytes | str) -> str:
        return string if isinstance(string, str) else string.decode()

    def _python(self) -> str:
        # This interpreter, as SlurmExecutor and LocalExecutor use: the task reaches it locally or
        # through the shared file system the folder needs anyway.
        return self.python or sys.executable

    def _task_config(self, parameters: dict[str, Any], python: str, kind: str = "") -> TaskConfig:
        from flow.config import TaskConfig

        timeout_min = float(parameters["timeout_min"])
        env = {
            "SUBMITIT_FLOW_TASKS_PER_NODE": str(parameters["tasks_per_node"]),
            "SUBMITIT_FLOW_TIMEOUT_S": f"{timeout_min * 60:g}",
            "SUBMITIT_FLOW_SIGNAL_DELAY_S": f"{_signal_delay_s(parameters.get('signal_delay_s'), timeout_min):g}",
            "SUBMITIT_STDERR_TO_STDOUT": "1" if parameters.get("stderr_to_stdout") else "0",
            **({"PYTHONPATH": _python_path()} if _python_path() else {}),
            **dict(parameters.get("env") or {}),
        }
        if parameters.get("cpus_per_task"):
            env["SUBMITIT_FLOW_CPUS_PER_TASK"] = str(parameters["cpus_per_task"])
        instance_type = parameters.get("instance_type")
        gpus = parameters.get("gpus_per_node")
        if instance_type and gpus and not _COUNTED_TYPE.match(str(instance_type)):
            instance_type = f"{gpus}x{instance_type}"
        fields = {k: parameters[k] for k in TASK_FIELDS if parameters.get(k) is not None}
        fields.update(env=env, instance_type=instance_type)
        if kind == "slurm" and self.slurm_parameters.get("slurm_partition") and not fields.get("region"):
            fields["region"] = self.slurm_parameters["slurm_partition"]  # a Slurm provider's partition
        mem_gb = parameters.get("mem_gb")
        # Per run (a requeued run gets the whole limit again): the launcher signals and stops the
        # ranks at timeout_min; Flow's own limit is the outer bound.
        hours = (timeout_min * 60 + LIMIT_GRACE_S) / 3600
        fields.setdefault("max_retries", max(MAX_REQUEUES, self.max_num_timeout + 1))
        return TaskConfig(
            name=_NAME_CHARS.sub("-", str(parameters["name"])).strip("-_")[:63] or "submitit",
            command=[python, "-u", "-m", "flow.runtime.submitit_launch", str(self.folder)],
            upload_code=False,
            working_dir=os.getcwd(),
            num_instances=int(parameters["nodes"]),
            memory_mb=int(mem_gb * 1024) if mem_gb else None,
            max_run_time_hours=hours,
            **fields,
        )

    def _provider_kind(self, flow: Flow) -> str:
        """The kind of provider the jobs go to (asked only when a slurm_ parameter needs it)."""
        if not self.slurm_parameters:
            return ""
        info = flow.daemon_info()
        return info.kind_of(flow.chosen_provider(info))

    def _warn_slurm_parameters(self, kind: str) -> None:
        if not self.slurm_parameters:
            return
        ignored = sorted(self.slurm_parameters.keys() - ({"slurm_partition"} if kind == "slurm" else set()))
        if ignored:
            warnings.warn(
                f"{', '.join(ignored)} ignored: Flow passes slurm_partition to a Slurm provider only "
                f"(this provider is {kind!r}); use flow_ parameters for resources",
                stacklevel=4,
            )

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list[core.Job[Any]]:
        import attrs

        flow = _client(self.flow_home, self.provider)
        kind = self._provider_kind(flow)
        self._warn_slurm_parameters(kind)
        timeout_min = self.parameters["timeout_min"]
        first = utils.JobPaths.get_first_id_independent_folder(self.folder)
        first.mkdir(parents=True, exist_ok=True)
        pickles: list[Path] = []
        for delayed in delayed_submissions:
            pickle_path = first / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(timeout_min, self.max_num_timeout)
            delayed.dump(pickle_path)
            pickles.append(pickle_path)
            if len(pickles) == 1:
                size = pickle_path.stat().st_size / 1024**3
                if len(delayed_submissions) * size > self.max_pickle_size_gb:
                    pickle_path.unlink()
                    raise RuntimeError(
                        f"Submitting an estimated {len(delayed_submissions)} x {size:.2f} > "
                        f"{self.max_pickle_size_gb}GB of objects (function and arguments) through pickle "
                        "(this can be slow / overload the file system). If this is the intended behavior, "
                        "you should update executor.max_pickle_size_gb to a larger value"
                    )
        config = self._task_config(self.parameters, self._python(), kind=kind)
        # array_parallelism K: element i waits for element i-K to end (Flow's depends_on,
        # "afterany"), so at most K run at once and the waiting ones hold no machine (PENDING,
        # their state_reason naming the element they wait for; Slurm: a native --dependency).
        limit = int(self.parameters["array_parallelism"])
        jobs: list[core.Job[Any]] = []
        try:
            for k, pickle_path in enumerate(pickles):
                after = (f"{jobs[k - limit].job_id}:afterany",) if k >= limit else ()
                task = flow.submit(attrs.evolve(config, depends_on=after) if after else config)
                tasks = range(self._num_tasks())
                job: FlowJob[Any] = FlowJob(self.folder, task.task_id, tasks, self.flow_home, self.provider)
                job.paths.move_temporary_file(pickle_path, "submitted_pickle")
                jobs.append(job)
        finally:
            for pickle_path in pickles:
                with contextlib.suppress(FileNotFoundError):
                    pickle_path.unlink()
        return jobs


def _signal_delay_s(given: float | None, timeout_min: float) -> float:
    """How long before the time limit the ranks are told to checkpoint: as given, else
    LocalExecutor's 30 s, but no more than a fifth of the limit (so a short one still runs)."""
    if given is not None:
        return float(given)
    return min(float(DEFAULT_SIGNAL_DELAY_S), timeout_min * 60 / 5)


def _typed(value: object, types: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not an int (as submitit's own type checks say)."""
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _python_path() -> str:
    """What the rank needs to import the submitter's modules: its PYTHONPATH and the script's
    directory (sys.path[0]), as LocalExecutor's jobs inherit them."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if sys.path and sys.path[0] and sys.path[0] not in parts:
        parts.append(sys.path[0])
    return os.pathsep.join(parts)


__all__ = ["FlowExecutor", "FlowInfoWatcher", "FlowJob", "FlowJobEnvironment"]
