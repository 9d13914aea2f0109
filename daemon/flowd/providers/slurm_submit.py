"""Submitting a task to Slurm: its directory on the cluster, then sbatch.

Launching a task writes its directory on the cluster (`<work_dir>/tasks/<task_id>`): the job
script rendered by the core (`flow.domain.slurm.sbatch`), the program's script or function call,
and a private copy of the code snapshot, built from a content-addressed blob store under
`<work_dir>/blobs` that only ever receives the blobs it lacks (one query for the lot, one upload,
one remote command). Then sbatch, in the snapshot's directory. Submitting is idempotent: the
task's job_id file on the cluster answers a second submission.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from attrs import evolve
from returns.result import Failure

from flow.domain.code.manifest import Manifest, parse_manifest
from flow.domain.daemon_config import SlurmSettings
from flow.domain.slurm.refusals import submit_refusal
from flow.domain.slurm.sbatch import JobRequest, render_job, working_dir_of
from flow.domain.slurm.scripts import (
    DEPENDENCY_FORGOTTEN,
    SubmitPlan,
    missing_blobs_script,
    scheduling_of,
    submit_script,
)
from flow.domain.task import task_files
from flow.domain.task.dependencies import Dependency
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import TaskRecord
from flow.runtime import runner
from flowd.blobs import BlobStore
from flowd.providers.base import LaunchError
from flowd.providers.slurm_cluster import Cluster
from flowd.providers.task_dir import TaskDir

RUNNER_SOURCE: Final = Path(runner.__file__)
UPLOAD_FILE: Final = "upload.tar.gz"
Run = Callable[[str, float], tuple[int, bytes, str]]


class ForgottenDependencyError(LaunchError):
    """The cluster no longer knows a job the task was to wait for: nothing was submitted."""


class SlurmSubmitter:
    def __init__(
        self,
        settings: SlurmSettings,
        cluster: Cluster,
        work_dir: str,
        tasks_root: Path,
        blobs: BlobStore,
        run: Run,
    ) -> None:
        self._settings = settings
        self._cluster = cluster
        self._work_dir = work_dir
        self._tasks_root = tasks_root
        self._blobs = blobs
        self._run = run
        self._remote_blobs: set[str] = set()
        self._prepared = False

    def task_dir(self, task_id: str) -> str:
        return f"{self._work_dir}/tasks/{task_id}"

    def submit(self, record: TaskRecord, gres: str | None, after: Sequence[tuple[Dependency, str]] = ()) -> str:
        """The job id of the task's job, submitted now (or before), waiting for `after` (jobs of
        this cluster) and honouring start_after and priority. Raises LaunchError (with the user's
        error: flow.domain.slurm.refusals) when sbatch or a step before it refuses,
        ForgottenDependencyError when a job of `after` is gone, ClusterError when the cluster cannot
        be reached."""
        config = record.config
        td = self.task_dir(record.task_id)
        code_dir = f"{td}/{task_files.CODE_DIR}" if record.code_digest else None
        call = record.function_call
        request = JobRequest(
            task_id=record.task_id,
            name=record.name,
            config=config,
            task_dir=td,
            code_dir=code_dir,
            gres=gres,
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
            submit_dir=code_dir or f"{td}/{task_files.WORK_DIR}",
            code_dir=code_dir,
            check_dir=cwd if relative else None,
            make_work_dir=None if code_dir else f"{td}/{task_files.WORK_DIR}",
            run=len(record.attempts),
            scheduling=scheduling_of(config, after, time.time()),
        )
        if self._cluster.local:
            self._write_locally(td, files, manifest)
        else:
            plan = self._upload(record.task_id, files, manifest, plan)
        rc, out, err = self._run(submit_script(plan), 600)
        if rc == DEPENDENCY_FORGOTTEN and after:
            raise ForgottenDependencyError(f"Slurm no longer knows a job of {', '.join(job for _, job in after)}")
        if rc != 0:
            error = submit_refusal(rc, err, config.working_dir or cwd, self._settings.name)
            raise LaunchError(error.message, error)
        if manifest is not None and not self._cluster.local:
            self._remote_blobs.update(manifest.digests)
        job_id = out.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if not job_id[0].isdigit():
            raise LaunchError(f"sbatch printed no job id (got {out[:200]!r}); is this a Slurm cluster?")
        return job_id[0]

    def _job_files(self, record: TaskRecord, request: JobRequest) -> dict[str, tuple[bytes, int]]:
        rendered = render_job(request)
        if isinstance(rendered, Failure):
            raise LaunchError(rendered.failure().message, rendered.failure())
        files = rendered.unwrap()
        found: dict[str, tuple[bytes, int]] = {task_files.JOB: (files.job_script.encode(), 0o600)}
        if files.user_script is not None:
            found[task_files.SCRIPT] = (files.user_script.encode(), 0o700)
        if files.secrets is not None:
            found[task_files.SECRETS] = (files.secrets.encode(), 0o600)
        if record.function_call is not None:
            found[task_files.RUNNER] = (RUNNER_SOURCE.read_bytes(), 0o600)
            invocation = json.dumps(invocation_document(record.function_call)).encode()
            found[task_files.INVOCATION] = (invocation, 0o600)
        return found

    def _manifest(self, digest: str) -> Manifest:
        parsed = parse_manifest(self._blobs.read(digest))
        if isinstance(parsed, Failure):
            raise LaunchError(f"the code snapshot {digest} is unreadable: {parsed.failure().message}")
        return parsed.unwrap()

    def _write_locally(self, td: str, files: dict[str, tuple[bytes, int]], manifest: Manifest | None) -> None:
        task_dir = TaskDir(Path(td))
        for name, (data, mode) in files.items():
            task_dir.write(name, data, mode)
        if manifest is None:
            return
        dest = task_dir.file(task_files.CODE_DIR)
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
        rc, _, err = self._run(f"umask 077; mkdir -p -- {dirs}", 60)
        if rc != 0:
            raise LaunchError(f"cannot create the work directory {self._work_dir} on the cluster: {err}")
        self._prepared = True

    def _upload(
        self, task_id: str, files: dict[str, tuple[bytes, int]], manifest: Manifest | None, plan: SubmitPlan
    ) -> SubmitPlan:
        """Sends what the cluster lacks in one SFTP upload: the task's files and only the blobs
        missing from its store (asked in one query)."""
        self._prepare_remote()
        blob_dir = f"{self._work_dir}/blobs/sha256"
        missing: list[str] = []
        if manifest is not None:
            unknown = sorted(manifest.digests - self._remote_blobs)
            if unknown:
                rc, out, err = self._run(missing_blobs_script(blob_dir, unknown), 300)
                if rc != 0:
                    raise LaunchError(f"cannot list the blobs on the cluster: {err}")
                missing = sorted(set(out.decode().split()))
                self._remote_blobs.update(d for d in unknown if d.removeprefix("sha256:") not in missing)
        local_dir = TaskDir(self._tasks_root / task_id).create()
        pack = local_dir.file(UPLOAD_FILE)
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
            plan, pack=remote_pack, blob_dir=blob_dir, snapshot=manifest.entries if manifest is not None else None
        )
