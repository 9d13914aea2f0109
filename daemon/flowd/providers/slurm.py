"""The slurm provider: tasks are batch jobs on a Slurm cluster, driven from its login node (local
CLI mode) or from anywhere over SSH.

Launching a task writes its directory on the cluster (`<work_dir>/tasks/<task_id>`): the job
script rendered by the core (`flow.domain.slurm.sbatch`), the program's script or function call, and a
private copy of the code snapshot, built from a content-addressed blob store under
`<work_dir>/blobs` that only ever receives the blobs it lacks (one query for the lot, one upload,
one remote command). Then sbatch, in the snapshot's directory.

One thread per provider watches every live job: each poll is ONE script on the cluster that asks
squeue about all of them at once, reads their exit markers and, over SSH, appends each log's new
bytes to the task's local copy (the engine streams logs from a local file). A job that has left
the controller (MinJobAge) is looked up in sacct where accounting exists, then the jobcomp log,
then the exit marker the job script wrote. A restarted daemon picks the jobs up by their job ids.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import logging
import os
import re
import shlex
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from attrs import define, evolve
from returns.result import Failure, Result, Success

from flow.domain.code.manifest import Manifest, parse_manifest
from flow.domain.daemon_config import SlurmSettings
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.instances.instance_types import format_instance_type, short_name
from flow.domain.instances.matching import Offer, rank_key
from flow.domain.instances.placement import choose_offer
from flow.domain.slurm.sbatch import (
    INVOCATION_FILE,
    JOB_FILE,
    OUTPUT_FILE,
    RESULT_FILE,
    RUNNER_FILE,
    SCRIPT_FILE,
    SECRETS_FILE,
    WORK_DIR,
    JobRequest,
    has_directives,
    read_directives,
    render_job,
    sbatch_to_configs,
    working_dir_of,
)
from flow.domain.slurm.scripts import (
    SUBMIT_ERRORS,
    PolledJob,
    PollOutput,
    SubmitPlan,
    cancel_script,
    config_script,
    final_states_script,
    missing_blobs_script,
    parse_poll_output,
    poll_script,
    prelude,
    sinfo_script,
    split_sections,
    submit_script,
)
from flow.domain.slurm.states import (
    GENERIC_GPU,
    NEEDS_EXIT_CODE,
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
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import Lost, Started, TaskEvent, TaskRecord, TaskState
from flow.runtime import runner
from flowd.blobs import BlobStore
from flowd.exec_session import ExecError, ExecSession
from flowd.providers.base import LaunchError, Placement, Reporter, Runtime
from flowd.providers.slurm_cluster import PRIVATE_ENV, Cluster, ClusterError

log = logging.getLogger(__name__)

RUNNER_SOURCE: Final = Path(runner.__file__)
CATALOG_TTL: Final = 15.0
GONE_POLLS_BEFORE_LOST: Final = 3
WARN_EVERY: Final = 60.0
JOB_ID: Final = re.compile(r"[0-9]+")
UPLOAD_FILE: Final = "upload.tar.gz"


@define
class _Job:
    """A job the poller follows."""

    task_id: str
    job_id: str
    task_dir: str
    local_log: Path | None  # the local copy of the log (SSH mode); None: read in place
    function_call: bool
    started: bool = False
    gone_polls: int = 0


@define
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
        self._work_dir = work_dir.rstrip("/")
        self._tasks_root = tasks_root
        self._report = reporter
        self._blobs = blobs
        self._clock = clock
        self._prelude = prelude(settings.slurm_conf, settings.bin_dir)
        self._catalog: _Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._cluster_config: ClusterConfig | None = None
        self._remote_blobs: set[str] = set()
        self._prepared = False
        self._jobs: dict[str, _Job] = {}
        self._jobs_lock = threading.Lock()
        self._stop = threading.Event()
        self._submitted = threading.Event()  # a job was just added: poll sooner
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._poll_loop, name=f"slurm-poll-{self.name}", daemon=True)
        self._thread.start()

    # --- where things are ----------------------------------------------------------------

    def _task_dir(self, task_id: str) -> str:
        return f"{self._work_dir}/tasks/{task_id}"

    def _local_dir(self, task_id: str) -> Path:
        return self._tasks_root / task_id

    def log_path(self, task_id: str) -> Path:
        if self._cluster.local:
            return Path(self._task_dir(task_id)) / OUTPUT_FILE
        return self._local_dir(task_id) / OUTPUT_FILE

    def _run(self, script: str, timeout: float = 120.0) -> tuple[int, bytes, str]:
        done = self._cluster.run(self._prelude + script, timeout=timeout)
        return done.rc, done.stdout, done.error_text

    # --- placement -----------------------------------------------------------------------

    def _catalog_now(self) -> _Catalog:
        with self._catalog_lock:
            if self._catalog is not None and self._clock() - self._catalog.at < CATALOG_TTL:
                return self._catalog
            rc, out, err = self._run(sinfo_script(), timeout=60)
            if rc != 0:
                raise ClusterError(f"sinfo failed: {err or f'exit status {rc}'}")
            partitions = parse_sinfo(out.decode("utf-8", "replace"))
            self._catalog = _Catalog(
                partitions=partitions,
                offers=offers_of(partitions, self.name, self._settings.gpu),
                at=self._clock(),
            )
            return self._catalog

    def offers(self) -> tuple[Offer, ...]:
        try:
            return tuple(o.offer for o in self._catalog_now().offers)
        except ClusterError as exc:
            log.warning("provider %s: cannot list the cluster's offers: %s", self.name, exc)
            return ()

    def _partition_for(self, config: TaskConfig, catalog: _Catalog) -> str | None:
        """The task's partition: its region, else its script's own --partition, else the
        provider's setting, else the cluster's default partition."""
        if config.region:
            return config.region
        if config.script and config.script.startswith("#!"):
            for d in reversed(read_directives(config.script).directives):
                if d.option == "partition" and d.value and "," not in d.value:
                    return d.value
        if self._settings.partition:
            return self._settings.partition
        return next((p.name for p in catalog.partitions if p.default), None)

    def _unsupported(self, config: TaskConfig) -> list[FieldViolation]:
        found: list[FieldViolation] = []
        for i, vol in enumerate(config.volumes):
            found.append(
                violation(
                    f"volumes[{i}]",
                    vol.name or vol.volume_id,
                    "is not supported by the slurm provider (Slurm has no volumes)",
                    "use a directory on the cluster's shared file system instead (e.g. in working_dir or env)",
                )
            )
        for i, mount in enumerate(config.data_mounts):
            found.append(
                violation(
                    f"data_mounts[{i}]",
                    mount.source,
                    "is not supported by the slurm provider",
                    "copy the data to the cluster's shared file system and pass its path in env",
                )
            )
        if config.image:
            found.append(
                violation(
                    "image",
                    config.image,
                    "is not supported by the slurm provider (jobs run on the nodes' own software)",
                    "remove image; to use a container, start it from your script (e.g. srun --container-image)",
                )
            )
        if config.script and config.script.startswith("#!"):
            read = read_directives(config.script)
            found.extend(read.problems)
            for d in read.directives:
                if d.option == "array":
                    fix = "submit the script with `flow slurm submit`, which runs one task per array element"
                    found.append(violation(f"script: {d.field}", d.value, "asks for a job array", fix))
        return found

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        problems = self._unsupported(config)
        if problems:
            return Failure(validation_error(problems, subject=f"task for provider {self.name}"))
        try:
            catalog = self._catalog_now()
        except ClusterError as exc:
            return Failure(self._unreachable(exc))
        partition = self._partition_for(config, catalog)
        known = {p.name: p for p in catalog.partitions}
        if partition not in known:
            names = ", ".join(known) or "none"
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=(
                        f"The Slurm cluster of provider {self.name} has no partition {partition!r} (it has: {names})"
                    ),
                    suggestions=(f"use one of: {names}", "set partition for the provider in $FLOW_HOME/config.yaml"),
                    metadata=(("provider", self.name),),
                )
            )
        part = known[partition]
        offers = [o.offer for o in catalog.offers if o.partition == partition]
        wanted, native_gpus = self._from_directives(config)
        if native_gpus:
            # The script's own untyped GPU directive: any GPUs, as many as it says.
            fitting = sorted((o for o in offers if o.instance_type.count == native_gpus), key=rank_key)
            if not fitting:
                most = max((o.instance_type.count for o in offers), default=0)
                return Failure(
                    DomainError(
                        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                        message=(
                            f"The script asks for {native_gpus} GPUs per node; the nodes of partition {partition} "
                            f"have at most {most}"
                        ),
                        suggestions=(f"ask for at most {most} GPUs per node, and more nodes",),
                        metadata=(("provider", self.name), ("partition", partition)),
                    )
                )
            offer = fitting[0]
        else:
            chosen = choose_offer(evolve(wanted, region=None), offers)
            if isinstance(chosen, Failure):
                return Failure(self._explain(chosen.failure(), part, offers))
            offer = chosen.unwrap()
        if config.num_instances > (offer.available or 0):
            fits = offer.available or 0
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=(
                        f"Partition {partition} has {fits} usable node(s) for {short_name(offer.instance_type)}; "
                        f"the task asks for num_instances={config.num_instances}"
                    ),
                    suggestions=(f"ask for at most num_instances={fits}", "use another partition (region)"),
                    metadata=(("provider", self.name), ("partition", partition)),
                )
            )
        if config.memory_mb is not None and part.memory_mb and config.memory_mb > part.memory_mb:
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=(
                        f"The task needs {config.memory_mb} MB of RAM per node; the nodes of partition "
                        f"{partition} have at most {part.memory_mb} MB"
                    ),
                    suggestions=(f"ask for at most memory_mb={part.memory_mb}",),
                    metadata=(("provider", self.name), ("partition", partition)),
                )
            )
        return Success(Placement(instance_type=format_instance_type(offer.instance_type)))

    @staticmethod
    def _from_directives(config: TaskConfig) -> tuple[TaskConfig, int | None]:
        """What a script's own #SBATCH directives ask for, when the config does not say: a GPU
        model and count (as an instance type), or only a count (untyped GRES)."""
        if config.instance_type or config.min_gpu_memory_gb or not has_directives(config.script):
            return config, None
        parsed = sbatch_to_configs(config.script or "")
        if isinstance(parsed, Failure):
            return config, None  # _unsupported names the problems
        job = parsed.unwrap()
        derived = job.configs[0].instance_type
        if derived:
            return evolve(config, instance_type=derived), None
        return config, job.generic_gpus

    def _explain(self, error: DomainError, part: Partition, offers: list[Offer]) -> DomainError:
        has = ", ".join(short_name(o.instance_type) for o in offers) or "nothing"
        suggestions = list(error.suggestions)
        if any(o.instance_type.model == GENERIC_GPU for o in offers):
            suggestions.append(
                f"the GPUs of partition {part.name} are untyped GRES (gpu:N), so Flow cannot tell their model: "
                f"set gpu_type (e.g. gpu_type: a100) for provider {self.name} in $FLOW_HOME/config.yaml"
            )
        return evolve(
            error,
            message=f"{error.message} Partition {part.name} offers: {has}.",
            suggestions=tuple(suggestions),
            metadata=(*error.metadata, ("provider", self.name), ("partition", part.name)),
        )

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

    def _gres_for(self, record: TaskRecord, partition: str | None) -> str | None:
        if record.instance_type == "cpu":
            return None
        for _ in range(2):
            catalog = self._catalog_now()
            for o in catalog.offers:
                if o.partition == partition and format_instance_type(o.offer.instance_type) == record.instance_type:
                    return o.gres
            with self._catalog_lock:
                self._catalog = None  # the cluster changed since placement: look again
        raise LaunchError(
            f"partition {partition} no longer offers {record.instance_type}; "
            f"look at `flow instances --provider {self.name}`"
        )

    def _job_files(self, record: TaskRecord, request: JobRequest) -> dict[str, tuple[bytes, int]]:
        rendered = render_job(request)
        if isinstance(rendered, Failure):
            raise LaunchError(rendered.failure().message)
        files = rendered.unwrap()
        found: dict[str, tuple[bytes, int]] = {JOB_FILE: (files.job_script.encode(), 0o600)}
        if files.user_script is not None:
            found[SCRIPT_FILE] = (files.user_script.encode(), 0o700)
        if files.secrets is not None:
            found[SECRETS_FILE] = (files.secrets.encode(), 0o600)
        if record.function_call is not None:
            found[RUNNER_FILE] = (RUNNER_SOURCE.read_bytes(), 0o600)
            found[INVOCATION_FILE] = (json.dumps(invocation_document(record.function_call)).encode(), 0o600)
        return found

    def _manifest(self, digest: str) -> Manifest:
        parsed = parse_manifest(self._blobs.read(digest))
        if isinstance(parsed, Failure):
            raise LaunchError(f"the code snapshot {digest} is unreadable: {parsed.failure().message}")
        return parsed.unwrap()

    def launch(self, record: TaskRecord) -> Runtime:
        """Submits the job. It waits in Slurm's queue, so the runtime says "queued": the task
        stays PENDING until the poller sees the job RUNNING and reports Started."""
        try:
            job_id, task_dir = self._submit(record)
        except ClusterError as exc:
            raise LaunchError(f"cannot reach the Slurm cluster ({self._cluster.description}): {exc}") from None
        runtime: Runtime = {"job_id": job_id, "task_dir": task_dir, "queued": True}
        self._follow(record, runtime, started=False)
        return runtime

    def _submit(self, record: TaskRecord) -> tuple[str, str]:
        config = record.config
        catalog = self._catalog_now()
        partition = self._partition_for(config, catalog)
        td = self._task_dir(record.task_id)
        code_dir = f"{td}/code" if record.code_digest else None
        call = record.function_call
        request = JobRequest(
            task_id=record.task_id,
            name=record.name,
            config=config,
            task_dir=td,
            code_dir=code_dir,
            gres=self._gres_for(record, partition),
            partition=self._settings.partition,
            account=self._settings.account,
            qos=self._settings.qos,
            function_call=call is not None,
            python=(call.python if call is not None and call.python else self._settings.python),
            secrets=dict(record.secrets),
        )
        files = self._job_files(record, request)
        manifest = self._manifest(record.code_digest) if record.code_digest else None
        cwd = working_dir_of(request)
        relative = bool(config.working_dir) and not (config.working_dir or "").startswith("/")
        plan = SubmitPlan(
            task_dir=td,
            submit_dir=code_dir or f"{td}/{WORK_DIR}",
            code_dir=code_dir,
            check_dir=cwd if relative else None,
            make_work_dir=None if code_dir else f"{td}/{WORK_DIR}",
        )
        if self._cluster.local:
            self._write_locally(td, files, manifest)
        else:
            plan = self._upload(record.task_id, td, files, manifest, plan)
        rc, out, err = self._run(submit_script(plan), timeout=600)
        if rc != 0:
            what = SUBMIT_ERRORS.get(rc, f"submitting failed (exit status {rc})")
            if rc == 94:
                what = f"the working directory {cwd} does not exist on the cluster"
            raise LaunchError(f"{what}: {err}" if err else what)
        if manifest is not None and not self._cluster.local:
            self._remote_blobs.update(manifest.digests)
        job_id = out.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if not JOB_ID.fullmatch(job_id[0]):
            raise LaunchError(f"sbatch printed no job id (got {out[:200]!r}); is this a Slurm cluster?")
        return job_id[0], td

    def _write_locally(self, td: str, files: dict[str, tuple[bytes, int]], manifest: Manifest | None) -> None:
        task_dir = Path(td)
        task_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, (data, mode) in files.items():
            path = task_dir / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            path.chmod(mode)
        if manifest is None:
            return
        dest = task_dir / "code"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(mode=0o700)
        made: set[Path] = {dest}
        for entry in manifest.entries:
            target = dest / entry.path
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            shutil.copyfile(self._blobs.path(entry.digest), target)
            target.chmod(0o700 if entry.executable else 0o600)

    def _prepare_remote(self) -> None:
        if self._prepared:
            return
        dirs = " ".join(shlex.quote(f"{self._work_dir}/{d}") for d in ("incoming", "blobs/sha256", "tasks"))
        rc, _, err = self._run(f"umask 077; mkdir -p -- {dirs}", timeout=60)
        if rc != 0:
            raise LaunchError(f"cannot create the work directory {self._work_dir} on the cluster: {err}")
        self._prepared = True

    def _upload(
        self,
        task_id: str,
        td: str,
        files: dict[str, tuple[bytes, int]],
        manifest: Manifest | None,
        plan: SubmitPlan,
    ) -> SubmitPlan:
        """Sends what the cluster lacks in one SFTP upload: the task's files and only the blobs
        missing from its store (asked in one query)."""
        self._prepare_remote()
        blob_dir = f"{self._work_dir}/blobs/sha256"
        missing: list[str] = []
        if manifest is not None:
            unknown = sorted(manifest.digests - self._remote_blobs)
            if unknown:
                rc, out, err = self._run(missing_blobs_script(blob_dir, unknown), timeout=300)
                if rc != 0:
                    raise LaunchError(f"cannot list the blobs on the cluster: {err}")
                missing = sorted(set(out.decode().split()))
                self._remote_blobs.update(d for d in unknown if d.removeprefix("sha256:") not in missing)
        local_dir = self._local_dir(task_id)
        local_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pack = local_dir / UPLOAD_FILE
        with tarfile.open(pack, "w:gz", compresslevel=1) as tar:
            for hexdigest in missing:
                tar.add(str(self._blobs.path("sha256:" + hexdigest)), arcname=f"blobs/{hexdigest}")
            for name, (data, mode) in files.items():
                info = tarfile.TarInfo(f"task/{name}")
                info.size = len(data)
                info.mode = mode
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
        remote_pack = f"{self._work_dir}/incoming/{task_id}.tar.gz"
        try:
            self._cluster.put_file(pack, remote_pack)
        finally:
            pack.unlink(missing_ok=True)
        return evolve(
            plan,
            pack=remote_pack,
            blob_dir=blob_dir,
            snapshot=manifest.entries if manifest is not None else None,
        )

    # --- watching ------------------------------------------------------------------------

    def _follow(self, record: TaskRecord, runtime: Runtime, started: bool) -> None:
        """Adds a job to those the poller follows (once)."""
        job = _Job(
            task_id=record.task_id,
            job_id=str(runtime["job_id"]),
            task_dir=str(runtime.get("task_dir") or self._task_dir(record.task_id)),
            local_log=None if self._cluster.local else self.log_path(record.task_id),
            function_call=record.function_call is not None,
            started=started,
        )
        if job.local_log is not None:
            job.local_log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            job.local_log.touch(mode=0o600, exist_ok=True)
        with self._jobs_lock:
            self._jobs.setdefault(record.task_id, job)
        self._submitted.set()

    def watch(self, record: TaskRecord, runtime: Runtime) -> None:
        self._follow(record, runtime, started=record.state is TaskState.RUNNING)

    def cancel(self, record: TaskRecord, runtime: Runtime) -> None:
        job_id = str(runtime.get("job_id", ""))
        if not JOB_ID.fullmatch(job_id):
            return
        try:
            rc, _, err = self._run(cancel_script([job_id]), timeout=60)
        except ClusterError as exc:
            log.warning("provider %s: cannot cancel job %s of task %s: %s", self.name, job_id, record.task_id, exc)
            return
        if rc != 0 and "Invalid job id" not in err and "already completing" not in err:
            log.warning("provider %s: scancel %s: %s", self.name, job_id, err)

    def recover(self, record: TaskRecord, runtime: Runtime) -> Runtime | None:
        """A job with a known id is followed again; the first poll learns, for every recovered
        job at once, whether it runs, still waits, or ended meanwhile. A task that crashed flowd
        while it was being submitted is submitted now, or found: submitting is idempotent (the
        task's job_id file on the cluster)."""
        job_id = str(runtime.get("job_id", ""))
        if not JOB_ID.fullmatch(job_id):
            return self.launch(record)
        started = record.state is TaskState.RUNNING
        again: Runtime = {"job_id": job_id, "task_dir": runtime.get("task_dir") or self._task_dir(record.task_id)}
        if not started:
            again["queued"] = True
        self._follow(record, again, started=started)
        return again

    def recovered(self) -> None:
        pass

    def exec(
        self, record: TaskRecord, runtime: Runtime, argv: Sequence[str], tty: bool, rows: int, columns: int, term: str
    ) -> ExecSession:
        """A command inside the job's allocation: `srun --jobid=N --overlap`, on the login node
        or, over SSH, through the ssh client with the same host key checking."""
        job_id = str(runtime.get("job_id", ""))
        if not JOB_ID.fullmatch(job_id):
            raise LaunchError(f"task {record.task_id} has no Slurm job to run commands in")
        srun = ["srun", f"--jobid={job_id}", "--overlap", "--quiet", *(["--pty"] if tty else []), *(argv or ["bash"])]
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        if tty:
            env["TERM"] = term or "xterm-256color"
        if self._cluster.local:
            if self._settings.slurm_conf:
                env["SLURM_CONF"] = self._settings.slurm_conf
            if self._settings.bin_dir:
                env["PATH"] = f"{self._settings.bin_dir}:{env.get('PATH', '')}"
            command = srun
        else:
            command = self._ssh_command(srun, tty)
        cwd = self._local_dir(record.task_id)
        cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return ExecSession(command, cwd, env, tty, rows, columns)
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    def _ssh_command(self, remote: list[str], tty: bool) -> list[str]:
        ssh = self._settings.ssh
        assert ssh is not None
        known = os.path.expanduser(ssh.known_hosts or "~/.ssh/known_hosts")
        checking = ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
        if not ssh.host_key_checking:
            checking = ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
        identity = ["-i", os.path.expanduser(ssh.key_file), "-o", "IdentitiesOnly=yes"] if ssh.key_file else []
        user = ssh.user or getpass.getuser()
        line = self._prelude.replace("\n", "; ") + "exec " + " ".join(shlex.quote(a) for a in remote)
        return [
            "ssh",
            "-q",
            "-p",
            str(ssh.port),
            *identity,
            *checking,
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={int(ssh.connect_timeout)}",
            "-tt" if tty else "-T",
            f"{user}@{ssh.host}",
            "--",
            line,
        ]

    def read_result(self, task_id: str) -> bytes | None:
        if self._cluster.local:
            try:
                return (Path(self._task_dir(task_id)) / RESULT_FILE).read_bytes()
            except FileNotFoundError:
                return None
        local = self._local_dir(task_id) / RESULT_FILE
        with contextlib.suppress(FileNotFoundError):
            return local.read_bytes()
        return self._fetch_result(task_id)

    def _fetch_result(self, task_id: str) -> bytes | None:
        try:
            data = self._cluster.read_file(f"{self._task_dir(task_id)}/{RESULT_FILE}")
        except ClusterError as exc:
            log.warning("provider %s: cannot fetch the result of task %s: %s", self.name, task_id, exc)
            return None
        if data is not None:
            local = self._local_dir(task_id) / RESULT_FILE
            local.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            local.write_bytes(data)
        return data

    # --- the poller ----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        """Polls at a fixed rate (every poll_interval from the start of the previous poll), and
        sooner, a quarter interval after the last poll, when jobs were just submitted: each poll
        is one query for every live job, however many there are."""
        interval = self._settings.poll_interval
        last = self._clock()
        while not self._stop.is_set():
            due = last + (interval / 4 if self._submitted.is_set() else interval)
            now = self._clock()
            if now < due:
                self._stop.wait(min(due - now, interval / 4))
                continue
            self._submitted.clear()
            last = now
            with self._jobs_lock:
                jobs = list(self._jobs.values())
            if not jobs:
                continue
            try:
                self._poll(jobs)
            except ClusterError as exc:
                self._warn(f"provider {self.name}: status query failed (retrying): {exc}")
            except Exception:
                log.exception("provider %s: status query failed", self.name)

    def _warn(self, message: str) -> None:
        now = self._clock()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("%s", message)

    def _poll(self, jobs: list[_Job]) -> None:
        polled = [
            PolledJob(
                task_id=j.task_id,
                job_id=j.job_id,
                task_dir=j.task_dir,
                log_offset=None if j.local_log is None else _size(j.local_log),
            )
            for j in jobs
        ]
        done = self._cluster.run(self._prelude + poll_script(polled), timeout=120)
        out = parse_poll_output(done.stdout)
        if not out.complete:
            raise ClusterError(f"the status query ended early: {done.error_text or done.rc}")
        self._mirror_logs(jobs, out)
        if out.squeue_rc == 0:
            statuses = parse_squeue(out.squeue)
        elif out.squeue_rc is not None and squeue_says_gone(out.squeue_rc, done.error_text):
            statuses = {}
        else:
            raise ClusterError(f"squeue failed: {done.error_text or f'exit status {out.squeue_rc}'}")
        ended: list[tuple[_Job, JobStatus | None]] = []
        lookup: list[_Job] = []
        for j in jobs:
            status = statuses.get(j.job_id)
            marker = out.exits.get(j.task_id)
            if status is None:
                lookup.append(j)
                continue
            phase = phase_of(status.state)
            if phase == "running" and not j.started:
                j.started = True
                self._report(j.task_id, Started(), self._running(j))
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

    def _mirror_logs(self, jobs: list[_Job], out: PollOutput) -> None:
        for j in jobs:
            chunk = out.logs.get(j.task_id)
            if chunk is None or j.local_log is None:
                continue
            with open(j.local_log, "ab") as handle:
                if handle.tell() == chunk.offset:  # exactly the bytes that follow, never twice
                    handle.write(chunk.data)

    def _finish(self, job: _Job, status: JobStatus | None) -> None:
        if job.function_call and not self._cluster.local:
            self._fetch_result(job.task_id)
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
        with self._jobs_lock:
            self._jobs.pop(job.task_id, None)
        if not job.started:
            self._report(job.task_id, Started(), self._running(job))  # it ran between two polls
        self._report(job.task_id, event)

    @staticmethod
    def _running(job: _Job) -> Runtime:
        return {"job_id": job.job_id, "task_dir": job.task_dir}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._cluster.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
