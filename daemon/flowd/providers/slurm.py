"""The slurm provider: tasks are batch jobs on a Slurm cluster, driven from its login node (local
CLI mode) or from anywhere over SSH.

Placement is pure (flow.domain.slurm.placement) over the cluster's partitions (sinfo, cached for
CATALOG_TTL for placement; find_instances always asks anew). `launch` submits the job now
(slurm_submit): a job id means accepted (`Queued`: the task stays PENDING until the job runs);
sbatch refusing the job is `Refused` with Slurm's own message (flow.domain.slurm.refusals).

One poller thread (remote_poller) follows every live job: each poll is ONE script on the cluster
that asks squeue about all of them at once, reads their exit markers and, over SSH, the new bytes
of each log, appended to the task's local copy (the engine streams logs from a local file). A job
that has left the controller (MinJobAge) is looked up in sacct where accounting exists, then the
jobcomp log, then the exit marker the job script wrote. A job is reported ended only once Slurm
has left COMPLETING, when its processes are gone. A restarted daemon picks the jobs up by id.
"""

from __future__ import annotations

import getpass
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from attrs import define, evolve, frozen
from returns.result import Failure, Result, Success

from flow.domain.daemon_config import SlurmSettings
from flow.domain.errors import DomainError, ErrorReason
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.instances.matching import Offer
from flow.domain.slurm.placement import place_on_cluster
from flow.domain.slurm.scripts import (
    PolledJob,
    PollOutput,
    cancel_script,
    config_script,
    final_states_script,
    parse_poll_output,
    poll_script,
    prelude,
    sinfo_script,
    split_sections,
)
from flow.domain.slurm.states import (
    NEEDS_EXIT_CODE,
    SQUEUE_FORMAT,
    ClusterConfig,
    JobStatus,
    Partition,
    SlurmOffer,
    base_state,
    event_for,
    offers_of,
    parse_jobcomp,
    parse_sacct,
    parse_scontrol_config,
    parse_sinfo,
    parse_squeue,
    phase_of,
    squeue_says_gone,
)
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig
from flow.domain.task.dependencies import Dependency
from flow.domain.task.lifecycle import Lost, Started, TaskEvent, TaskRecord, TaskState
from flowd.blobs import BlobStore
from flowd.exec_session import ExecError, ExecSession
from flowd.providers.base import (
    Capabilities,
    ExecRequest,
    Forgotten,
    Launched,
    LaunchError,
    Placement,
    Queued,
    Recovered,
    Refused,
    Reporter,
    Running,
    StateType,
)
from flowd.providers.environment import public_env
from flowd.providers.remote_poller import RemotePoller
from flowd.providers.slurm_cluster import Cluster, ClusterError
from flowd.providers.slurm_submit import ForgottenDependencyError, SlurmSubmitter
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)

CATALOG_TTL: Final = 15.0
GONE_POLLS_BEFORE_LOST: Final = 3
# A job just submitted is looked at every 20 ms (then after a tenth of its wait) until it is seen
# running: one that can run starts within milliseconds (RemotePoller).
FAST_START: Final = 0.02


@frozen
class SlurmJob:
    """The runtime state of a task on Slurm: its job, and its directory on the cluster."""

    job_id: str
    task_dir: str


def _legacy(data: Mapping[str, Any]) -> SlurmJob | None:
    job_id = str(data.get("job_id", ""))
    return SlurmJob(job_id, str(data.get("task_dir", ""))) if job_id.isascii() and job_id.isdigit() else None


SLURM_STATES: Final = StateType(classes=(SlurmJob,), legacy=_legacy)


@define
class _Job:
    """A job the poller follows."""

    task_id: str
    job_id: str
    task_dir: str
    local_log: TaskDir | None  # where the log is mirrored (SSH mode); None: read in place
    function_call: bool
    started: bool = False
    gone_polls: int = 0


@frozen
class _Catalog:
    partitions: tuple[Partition, ...]
    offers: tuple[SlurmOffer, ...]
    at: float


class SlurmProvider:
    """Runs tasks as Slurm batch jobs. See the module docstring."""

    kind = "slurm"

    def __init__(
        self,
        settings: SlurmSettings,
        cluster: Cluster,
        work_dir: str,
        tasks_root: Path,
        reporter: Reporter,
        blobs: BlobStore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._cluster = cluster
        self._tasks_root = tasks_root
        self._report = reporter
        self._clock = clock
        self._prelude = prelude(settings.slurm_conf, settings.bin_dir)
        self._catalog: _Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._cluster_config: ClusterConfig | None = None
        self._submitter = SlurmSubmitter(settings, cluster, work_dir.rstrip("/"), tasks_root, blobs, self._run)
        self._poller: RemotePoller[_Job] = RemotePoller(
            self.name, settings.poll_interval, self._poll, (ClusterError,), clock, fast_start=FAST_START
        )
        self.capabilities = Capabilities(offers=self, exec=self, results=self, dependencies=self, dry_run=self)

    @property
    def state_type(self) -> StateType:
        return SLURM_STATES

    # --- where things are ----------------------------------------------------------------

    def _local_dir(self, task_id: str) -> TaskDir:
        return TaskDir(self._tasks_root / task_id)

    def _log_dir(self, task_id: str, task_dir: str) -> TaskDir:
        """Where the log is read: in place on the login node, else the local mirror."""
        return TaskDir(Path(task_dir)) if self._cluster.local else self._local_dir(task_id)

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        return [self._log_dir(record.task_id, self._submitter.task_dir(record.task_id)).output]

    def _run(self, script: str, timeout: float = 120.0) -> tuple[int, bytes, str]:
        done = self._cluster.run(self._prelude + script, timeout=timeout)
        return done.rc, done.stdout, done.error_text

    # --- offers and placement ----------------------------------------------------------------

    def _catalog_now(self, fresh: bool = False) -> _Catalog:
        with self._catalog_lock:
            if not fresh and self._catalog is not None and self._clock() - self._catalog.at < CATALOG_TTL:
                return self._catalog
            rc, out, err = self._run(sinfo_script(), timeout=60)
            if rc != 0:
                raise ClusterError(f"sinfo failed: {err or f'exit status {rc}'}")
            partitions = parse_sinfo(out.decode("utf-8", "replace"))
            offers = offers_of(partitions, self.name, self._settings.gpu)
            self._catalog = _Catalog(partitions=partitions, offers=offers, at=self._clock())
            return self._catalog

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        try:
            return Success(tuple(o.offer for o in self._catalog_now(fresh=True).offers))
        except ClusterError as exc:
            return Failure(self._unreachable(exc))

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        try:
            catalog = self._catalog_now()
        except ClusterError as exc:
            return Failure(self._unreachable(exc))
        placed = place_on_cluster(config, catalog.partitions, catalog.offers, self._settings)
        if isinstance(placed, Failure):
            return Failure(placed.failure())
        return Success(Placement(instance_type=format_instance_type(placed.unwrap().offer.offer.instance_type)))

    def _unreachable(self, exc: Exception) -> DomainError:
        return DomainError(
            reason=ErrorReason.PROVIDER_ERROR,
            message=f"Provider {self.name} cannot reach its Slurm cluster ({self._cluster.description}): {exc}",
            suggestions=(
                "check that the login node is reachable and Slurm answers (sinfo)",
                "check the provider's settings in $FLOW_HOME/config.yaml",
            ),
            metadata=(("provider", self.name),),
        )

    # --- launching -----------------------------------------------------------------------

    def _gres_for(self, record: TaskRecord) -> str | None:
        """The GRES of the placed instance type, in the partition placement picks now (again,
        after one fresh look when the cluster changed since)."""
        if record.instance_type == "cpu":
            return None
        for fresh in (False, True):
            catalog = self._catalog_now(fresh=fresh)
            placed = place_on_cluster(record.config, catalog.partitions, catalog.offers, self._settings)
            if not isinstance(placed, Failure):
                offer: SlurmOffer = placed.unwrap().offer
                if format_instance_type(offer.offer.instance_type) == record.instance_type:
                    return offer.gres
        raise LaunchError(
            f"the cluster no longer offers {record.instance_type}; look at `flow instances --provider {self.name}`"
        )

    def launch(self, record: TaskRecord) -> Launched[SlurmJob]:
        """Submits the job: a job id means accepted, and the job waits in Slurm's queue."""
        launched = self.launch_after(record, ())
        assert not isinstance(launched, Forgotten)  # only a dependency is forgotten
        return launched

    def native_id(self, state: SlurmJob) -> str | None:
        return state.job_id

    def launch_after(
        self, record: TaskRecord, after: Sequence[tuple[Dependency, str]]
    ) -> Launched[SlurmJob] | Forgotten:
        """Submits the job, Slurm holding it until the jobs of `after` allow (--dependency)."""
        try:
            job_id = self._submitter.submit(record, self._gres_for(record), after)
        except ForgottenDependencyError:
            return Forgotten()
        except ClusterError as exc:
            return Refused(self._unreachable(exc))
        except (LaunchError, OSError) as exc:
            return (exc if isinstance(exc, LaunchError) else LaunchError(str(exc))).refused(self.name)
        return Queued(SlurmJob(job_id=job_id, task_dir=self._submitter.task_dir(record.task_id)))

    def dry_run(self, record: TaskRecord) -> Result[None, DomainError]:
        """sbatch --test-only of the job the task would submit: what Slurm would refuse (a GRES
        type no node has, a feature, a partition's limits), said without submitting anything."""
        try:
            refused = self._submitter.test_only(record, self._gres_for(record))
        except ClusterError as exc:
            return Failure(self._unreachable(exc))
        except LaunchError as exc:
            refusal = exc.refused(self.name)
            return Failure(refusal.error)
        return Success(None) if refused is None else Failure(refused)

    # --- watching ------------------------------------------------------------------------

    def _follow(self, record: TaskRecord, state: SlurmJob, started: bool) -> None:
        job = _Job(
            task_id=record.task_id,
            job_id=state.job_id,
            task_dir=state.task_dir or self._submitter.task_dir(record.task_id),
            local_log=None if self._cluster.local else self._local_dir(record.task_id),
            function_call=record.function_call is not None,
            started=started,
        )
        if job.local_log is not None:
            job.local_log.touch(task_files.OUTPUT)
        self._poller.follow(record.task_id, job)

    def watch(self, record: TaskRecord, state: SlurmJob) -> None:
        self._follow(record, state, started=record.state is TaskState.RUNNING)

    def cancel(self, record: TaskRecord, state: SlurmJob) -> None:
        try:
            rc, _, err = self._run(cancel_script([state.job_id]), timeout=60)
        except ClusterError as exc:
            log.warning(
                "provider %s: cannot cancel job %s of task %s: %s", self.name, state.job_id, record.task_id, exc
            )
            return
        if rc != 0 and "Invalid job id" not in err and "already completing" not in err:
            log.warning("provider %s: scancel %s: %s", self.name, state.job_id, err)

    def recover(self, record: TaskRecord, state: SlurmJob | None) -> Recovered[SlurmJob]:
        """A job with a known id is followed again; the first poll learns, for every recovered
        job at once, whether it runs, still waits, or ended meanwhile. A task that crashed flowd
        while it was being submitted is submitted now, or found (submitting is idempotent)."""
        if state is None:
            return self.launch(record)
        return Running(state) if record.state is TaskState.RUNNING else Queued(state)

    def recovered(self) -> None:
        pass

    def read_result(self, task_id: str) -> bytes | None:
        td = self._submitter.task_dir(task_id)
        if self._cluster.local:
            return TaskDir(Path(td)).read(task_files.RESULT)
        local = self._local_dir(task_id).read(task_files.RESULT)
        return local if local is not None else self._fetch_result(task_id, td)

    def _fetch_result(self, task_id: str, task_dir: str) -> bytes | None:
        try:
            data = self._cluster.read_file(f"{task_dir}/{task_files.RESULT}")
        except ClusterError as exc:
            log.warning("provider %s: cannot fetch the result of task %s: %s", self.name, task_id, exc)
            return None
        if data is not None:
            self._local_dir(task_id).write(task_files.RESULT, data)
        return data

    # --- exec ----------------------------------------------------------------------------

    def exec(self, record: TaskRecord, state: SlurmJob, request: ExecRequest) -> ExecSession:
        """A command inside the job's allocation: `srun --jobid=N --overlap`, on the login node
        or, over SSH, through the ssh client with the same host key checking."""
        tty = ["--pty"] if request.tty else []
        job_id = self._own_job_id(state.job_id)
        srun = ["srun", f"--jobid={job_id}", "--overlap", "--quiet", *tty, *(request.argv or ("bash",))]
        env = public_env(os.environ)
        if request.tty:
            env["TERM"] = request.term or "xterm-256color"
        if self._cluster.local:
            if self._settings.slurm_conf:
                env["SLURM_CONF"] = self._settings.slurm_conf
            if self._settings.bin_dir:
                env["PATH"] = f"{self._settings.bin_dir}:{env.get('PATH', '')}"
            command = srun
        else:
            command = self._ssh_command(srun, request.tty)
        cwd = self._local_dir(record.task_id).create().path
        try:
            return ExecSession(command, cwd, env, request.tty, request.rows, request.columns)
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    def _own_job_id(self, job_id: str) -> str:
        """An array element's own job id (srun --jobid takes no `<array>_<index>`)."""
        if "_" not in job_id:
            return job_id
        try:
            rc, out, err = self._run(f"squeue -h -j {shlex.quote(job_id)} -o %A\n", timeout=60)
        except ClusterError as exc:
            raise LaunchError(f"cannot reach the cluster: {exc}") from exc
        found = out.decode("utf-8", "replace").split()
        if rc != 0 or not found or not found[0].isdigit():
            raise LaunchError(f"the Slurm job {job_id} is not running ({err or 'squeue says nothing of it'})")
        return found[0]

    def _ssh_command(self, remote: list[str], tty: bool) -> list[str]:
        ssh = self._settings.ssh
        assert ssh is not None
        known = os.path.expanduser(ssh.known_hosts or "~/.ssh/known_hosts")
        checking = ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
        if not ssh.host_key_checking:
            checking = ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
        identity = ["-i", os.path.expanduser(ssh.key_file), "-o", "IdentitiesOnly=yes"] if ssh.key_file else []
        line = self._prelude.replace("\n", "; ") + "exec " + " ".join(shlex.quote(a) for a in remote)
        timeout = f"ConnectTimeout={int(ssh.connect_timeout)}"
        user = ssh.user or getpass.getuser()
        return [
            "ssh", "-q", "-p", str(ssh.port), *identity, *checking, "-o", "BatchMode=yes", "-o", timeout,
            "-tt" if tty else "-T", f"{user}@{ssh.host}", "--", line,
        ]  # fmt: skip

    # --- the poller ----------------------------------------------------------------------

    def _poll(self, jobs: list[_Job]) -> None:
        polled = [
            PolledJob(
                task_id=j.task_id,
                job_id=j.job_id,
                task_dir=j.task_dir,
                log_offset=None if j.local_log is None else _size(j.local_log.output),
            )
            for j in jobs
        ]
        out, error_text = self._poll_here(polled) if self._cluster.local else self._poll_there(polled)
        for j in jobs:  # the new bytes of every log, each exactly once
            chunk = out.logs.get(j.task_id)
            if chunk is not None and j.local_log is not None:
                j.local_log.append_at(task_files.OUTPUT, chunk.offset, chunk.data)
        if out.squeue_rc == 0:
            statuses = parse_squeue(out.squeue)
        elif out.squeue_rc is not None and squeue_says_gone(out.squeue_rc, error_text):
            statuses = {}
        else:
            raise ClusterError(f"squeue failed: {error_text or f'exit status {out.squeue_rc}'}")
        ended: list[tuple[_Job, JobStatus | None]] = []
        lookup: list[_Job] = []
        for j in jobs:
            status = statuses.get(j.job_id)
            marker = out.exits.get(j.task_id)
            if status is None:
                lookup.append(j)
                continue
            phase = phase_of(status.state)
            if phase in ("running", "ended"):
                self._poller.settled(j.task_id)
            if phase == "running" and not j.started:
                j.started = True
                self._report(j.task_id, Started(), SlurmJob(j.job_id, j.task_dir))
            elif phase == "ended":
                if base_state(status.state) in NEEDS_EXIT_CODE and marker is None:
                    lookup.append(j)
                else:
                    ended.append((j, evolve(status, exit_code=marker)))
        if lookup:
            finals = self._final_states([j.job_id for j in lookup])
            for j in lookup:
                ended_as = self._ending(j, statuses.get(j.job_id), finals.get(j.job_id), out.exits.get(j.task_id))
                if ended_as is not None or j.gone_polls >= GONE_POLLS_BEFORE_LOST:
                    ended.append((j, ended_as))
        for j, status in ended:
            chunk = out.logs.get(j.task_id)
            if chunk is not None and not chunk.complete:
                continue  # the rest of its log first, next poll
            self._finish(j, status)

    def _poll_there(self, polled: list[PolledJob]) -> tuple[PollOutput, str]:
        """One script on the cluster: squeue, the exit markers and the logs' new bytes."""
        done = self._cluster.run(self._prelude + poll_script(polled), timeout=120)
        out = parse_poll_output(done.stdout)
        if not out.complete:
            raise ClusterError(f"the status query ended early: {done.error_text or done.rc}")
        return out, done.error_text

    def _poll_here(self, polled: list[PolledJob]) -> tuple[PollOutput, str]:
        """On the login node: squeue alone (no shell), and the exit markers read here."""
        ids = ",".join(sorted({j.job_id for j in polled}, key=lambda i: (len(i), i)))
        done = self._cluster.command(["squeue", "-h", "-t", "all", "-j", ids, "-o", SQUEUE_FORMAT], "/", timeout=120)
        exits = {j.task_id: TaskDir(Path(j.task_dir)).exit_status() for j in polled}
        out = PollOutput(
            squeue=done.stdout.decode("utf-8", "replace"),
            squeue_rc=done.rc,
            exits={task_id: code for task_id, code in exits.items() if code is not None},
            logs={},
            complete=True,
        )
        return out, done.error_text

    def _ending(
        self, job: _Job, seen: JobStatus | None, recorded: JobStatus | None, marker: int | None
    ) -> JobStatus | None:
        """How a job ended, from what squeue, sacct/jobcomp and the exit marker say."""
        if recorded is not None:
            return evolve(recorded, exit_code=marker if marker is not None else recorded.exit_code)
        if seen is not None:
            return seen  # squeue says it ended; its exit status is lost
        if marker is not None:
            return JobStatus(job_id=job.job_id, state="COMPLETED" if marker == 0 else "FAILED", exit_code=marker)
        job.gone_polls += 1
        return None

    def _final_states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        config = self._cluster_config
        if config is None:
            rc, out, _ = self._run(config_script(), timeout=60)
            config = parse_scontrol_config(out.decode("utf-8", "replace")) if rc == 0 else ClusterConfig()
            self._cluster_config = config
        if not config.accounting and config.jobcomp_file is None:
            return {}
        _, out, _ = self._run(final_states_script(job_ids, config.accounting, config.jobcomp_file), timeout=120)
        sections = split_sections(out.decode("utf-8", "replace"))
        found = parse_jobcomp(sections.get("jobcomp", ""))
        found.update(parse_sacct(sections.get("sacct", "")))  # sacct, where it exists, wins
        return found

    def _finish(self, job: _Job, status: JobStatus | None) -> None:
        if job.function_call and not self._cluster.local:
            self._fetch_result(job.task_id, job.task_dir)
        event: TaskEvent | None
        if status is None:
            event = Lost(
                reason=(
                    f"the Slurm job {job.job_id} left the controller with no record of how it ended "
                    "(no sacct, no jobcomp entry, no exit marker)"
                )
            )
        else:
            event = event_for(status.state, status.exit_code, status.reason)
            if event is None or isinstance(event, Started):
                event = Lost(
                    reason=f"{base_state(status.state) or 'UNKNOWN'}: the Slurm job ended in a state Flow does not know"
                )
        self._poller.forget(job.task_id)
        if not job.started:  # it ran between two polls
            self._report(job.task_id, Started(), SlurmJob(job.job_id, job.task_dir))
        self._report(job.task_id, event)

    def close(self) -> None:
        self._poller.close()
        self._cluster.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
