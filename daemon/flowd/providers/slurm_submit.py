"""Submitting a task to Slurm: its directory on the cluster, then sbatch.

Launching a task writes its directory on the cluster (`<work_dir>/tasks/<task_id>`): the job
script rendered by the core (`flow.domain.slurm.sbatch`), the program's script or function call,
and a private copy of the code snapshot, built from a content-addressed blob store under
`<work_dir>/blobs` that only ever receives the blobs it lacks (one query for the lot, one upload,
one remote command). Then sbatch, in the snapshot's directory. Submitting is idempotent: the
task's job_id file on the cluster answers a second submission.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from attrs import evolve
from returns.result import Failure

from flow.domain.code.manifest import Manifest, parse_manifest
from flow.domain.daemon_config import SlurmSettings
from flow.domain.errors import DomainError
from flow.domain.slurm.placement import ArrayElement, array_element
from flow.domain.slurm.refusals import SBATCH_REFUSED, submit_refusal
from flow.domain.slurm.sbatch import (
    ELEMENT_TASK_FILE,
    ArrayJob,
    JobRequest,
    output_dirs,
    render_job,
    working_dir_of,
)
from flow.domain.slurm.scripts import (
    DEPENDENCY_FORGOTTEN,
    ElementRegistration,
    SubmitPlan,
    job_id_file_name,
    missing_blobs_script,
    register_script,
    scheduling_of,
    submit_script,
    test_only_script,
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
        # Native arrays submitted by this flowd (array id -> job id), each with its lock: the
        # first element submits, the others register (after a restart, the cluster's
        # arrays/<id>/job_id file answers instead).
        self._arrays: dict[str, str] = {}
        self._array_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def task_dir(self, task_id: str) -> str:
        return f"{self._work_dir}/tasks/{task_id}"

    def array_dir(self, array_id: str) -> str:
        return f"{self._work_dir}/arrays/{array_id}"

    def _request(self, record: TaskRecord, gres: str | None, td: str, array: ArrayElement | None) -> JobRequest:
        config = record.config
        call = record.function_call
        name = record.name
        if array is not None:  # the array job is named as the script's job, not as its first element
            name = name.removesuffix(f"-{array.index}") or name
        return JobRequest(
            task_id=record.task_id,
            name=name,
            config=config,
            task_dir=td,
            code_dir=f"{td}/{task_files.CODE_DIR}" if record.code_digest else None,
            gres=gres,
            partition=self._settings.partition,
            account=self._settings.account,
            qos=self._settings.qos,
            function_call=call is not None,
            python=(call.python if call is not None and call.python else self._settings.python),
            secrets=dict(record.secrets),
            array=ArrayJob(indices=array.indices) if array is not None else None,
        )

    def submit(self, record: TaskRecord, gres: str | None, after: Sequence[tuple[Dependency, str]] = ()) -> str:
        """The job id of the task's job, submitted now (or before), waiting for `after` (jobs of
        this cluster) and honouring start_after and priority: for an element of a native array,
        `<array job>_<index>`, the array submitted by whichever element comes first. Raises
        LaunchError (with the user's error: flow.domain.slurm.refusals) when sbatch or a step
        before it refuses, ForgottenDependencyError when a job of `after` is gone, ClusterError
        when the cluster cannot be reached."""
        array = array_element(record.config)
        if array is None:
            request = self._request(record, gres, self.task_dir(record.task_id), None)
            return self._submit(record, request, None, after)
        registration = ElementRegistration(
            array_dir=self.array_dir(array.array_id),
            index=array.index,
            task_id=record.task_id,
            task_name=record.name,
            task_dir=self.task_dir(record.task_id),
        )
        with self._array_lock(array.array_id):
            job_id = self._arrays.get(array.array_id)
            if job_id is None and self._cluster.local:  # submitted before a restart: never again
                known = TaskDir(Path(registration.array_dir)).read(task_files.JOB_ID)
                job_id = known.decode().strip() or None if known is not None else None
            if job_id is not None:  # a further element: registering it is all there is to do
                rc, _, err = self._run(register_script(registration), 60)
                if rc != 0:
                    error = submit_refusal(rc, err, "", self._settings.name)
                    raise LaunchError(error.message, error)
            else:
                request = self._request(record, gres, registration.array_dir, array)
                job_id = self._submit(record, request, registration, after)
                self._arrays[array.array_id] = job_id
        return f"{job_id}_{array.index}"

    def _array_lock(self, array_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._array_locks.setdefault(array_id, threading.Lock())

    def _submit(
        self,
        record: TaskRecord,
        request: JobRequest,
        registration: ElementRegistration | None,
        after: Sequence[tuple[Dependency, str]],
    ) -> str:
        config = record.config
        td = request.task_dir
        code_dir = request.code_dir
        files = self._job_files(record, request)
        manifest = self._manifest(record.code_digest) if record.code_digest else None
        cwd = working_dir_of(request)
        relative = bool(config.working_dir) and not (config.working_dir or "").startswith("/")
        indices = request.array.indices if request.array is not None else ()
        plan = SubmitPlan(
            task_dir=td,
            submit_dir=code_dir or f"{td}/{task_files.WORK_DIR}",
            code_dir=code_dir,
            check_dir=cwd if relative else None,
            make_work_dir=None if code_dir else f"{td}/{task_files.WORK_DIR}",
            run=len(record.attempts),
            scheduling=scheduling_of(config, after, time.time()),
            register=registration,
            element_dirs=tuple(f"{td}/{index}" for index in indices),
            output_dirs=output_dirs(request),
        )
        if self._cluster.local and plan.scheduling.plain:
            rc, out, err = self._submit_here(plan, files, manifest)
        else:  # the script's steps: a held job, its dependencies checked, a refused --nice retried
            if self._cluster.local:
                self._write_locally(td, files, manifest)
            else:
                plan = self._upload(record.task_id, files, manifest, plan)
            rc, out, err = self._run(submit_script(plan), 600)
        if rc == DEPENDENCY_FORGOTTEN and after:
            raise ForgottenDependencyError(f"Slurm no longer knows a job of {', '.join(job for _, job in after)}")
        if rc != 0:
            error = submit_refusal(rc, err, config.working_dir or cwd, self._settings.name, config.script)
            raise LaunchError(error.message, error)
        if manifest is not None and not self._cluster.local:
            self._remote_blobs.update(manifest.digests)
        job_id = out.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if not job_id[0].isdigit():
            raise LaunchError(f"sbatch printed no job id (got {out[:200]!r}); is this a Slurm cluster?")
        return job_id[0]

    def test_only(self, record: TaskRecord, gres: str | None) -> DomainError | None:
        """What sbatch --test-only says of the task's job, submitting nothing (None: it would be
        accepted). The job script is fed on stdin, from the work directory."""
        array = array_element(record.config)
        td = self.array_dir(array.array_id) if array is not None else self.task_dir(record.task_id or "dry-run")
        request = self._request(record, gres, td, array)
        files = self._job_files(record, request)
        script = files[task_files.JOB][0].decode()
        rc, _, err = self._run(test_only_script(script, self._work_dir), 60)
        if rc == 0:
            return None
        return submit_refusal(SBATCH_REFUSED, err, "", self._settings.name, record.config.script)

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

    def _submit_here(
        self, plan: SubmitPlan, files: dict[str, tuple[bytes, int]], manifest: Manifest | None
    ) -> tuple[int, bytes, str]:
        """submit_script's steps on the login node itself, with one process (sbatch) instead of a
        shell and its helpers: under load each fork and exec costs milliseconds. Answers as the
        script does (its exit statuses, its output)."""
        task_dir = TaskDir(Path(plan.task_dir))
        try:
            if plan.register is not None:
                self._register_here(plan.register)
            id_file = job_id_file_name(plan.run)
            known = (task_dir.read(id_file) or b"").strip()
            if known:
                return 0, known, ""
            if plan.run:
                task_dir.clear_run()  # how the previous run ended is not how this one ends
            self._write_locally(plan.task_dir, files, manifest)
            if plan.make_work_dir is not None:
                Path(plan.make_work_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            if plan.check_dir is not None and not Path(plan.check_dir).is_dir():
                return 94, b"", ""
            for made in (*plan.element_dirs, *plan.output_dirs):
                Path(made).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            return 90, b"", str(exc)
        done = self._cluster.command(
            ["sbatch", "--parsable", "--", str(task_dir.file(task_files.JOB))], plan.submit_dir
        )
        if done.rc != 0:
            return 95, done.stdout, done.error_text
        job_id = done.stdout.decode("utf-8", "replace").strip().split(";")[0]
        partial = task_dir.write(f"{id_file}.tmp", f"{job_id}\n".encode())
        partial.replace(task_dir.file(id_file))
        return 0, job_id.encode(), ""

    def _register_here(self, r: ElementRegistration) -> None:
        element = TaskDir(Path(r.element_dir))
        partial = element.write(f"{ELEMENT_TASK_FILE}.tmp", f"{r.task_id} {r.task_name}\n".encode())
        partial.replace(element.file(ELEMENT_TASK_FILE))
        link = Path(r.task_dir)
        link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(r.element_dir)

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
