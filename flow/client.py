"""Flow: the SDK's entry point. Talks to the user's flowd, starting it on first use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flow import task as tasks
from flow.connection import DaemonConnection
from flow.domain.task.states import TaskState
from flow.errors import ValidationError
from flow.home import resolve_home
from flow.task import Task, TaskStatus, WaitUntil
from flow.transport.channel import Remote
from flow.wire.daemon_codec import DaemonInfo, daemon_info_call, list_providers_call

if TYPE_CHECKING:
    from flow.code_upload import Progress, Upload, UploadPlan
    from flow.config import TaskConfig
    from flow.domain.task.function_call import FunctionCall
    from flow.providers.local import LocalProvider
    from flow.providers.mithril import MithrilProvider
    from flow.volumes import Volume, VolumeClient


def _as_config(task: TaskConfig | str | Path | Sequence[str], overrides: dict[str, Any]) -> TaskConfig:
    import attrs  # here, not at the top: `flow status` never builds a config

    from flow.config import TaskConfig, job_file

    if isinstance(task, Path):
        task = TaskConfig.from_yaml(task)
    if isinstance(task, str):
        task = job_file(task) or TaskConfig(command=task)  # "job.yaml" is read as `flow run job.yaml` does
    if isinstance(task, TaskConfig):
        config = attrs.evolve(task, **overrides) if overrides else task  # a misspelt field: ValidationError
    elif isinstance(task, Sequence):
        config = TaskConfig(command=list(task), **overrides)
    else:
        raise ValidationError(
            f"run() takes a TaskConfig, a command string, a YAML job file or an argument list, not "
            f"{type(task).__name__}",
            suggestions=['flow.run("python train.py")', 'flow.run(TaskConfig(command=["python", "train.py"]))'],
        )
    if config.upload_code and not config.code_root:
        # The task runs in a snapshot of the directory it was submitted from.
        config = attrs.evolve(config, code_root=str(Path.cwd()))
    return config


def _check_snapshot_working_dir(config: TaskConfig) -> None:
    """A relative working_dir is below the code snapshot: refused now when code_root lacks it."""
    from returns.result import Failure

    from flow.domain.task.working_dir import checked_working_dir, snapshot_working_dir
    from flow.wire.error_table import exception_from_domain_error

    inside = snapshot_working_dir(config)
    if inside is None or not config.code_root:
        return
    checked = checked_working_dir(config, exists=(Path(config.code_root) / inside).is_dir())
    if isinstance(checked, Failure):
        raise exception_from_domain_error(checked.failure())


def _state(value: TaskState | str) -> TaskState:
    if isinstance(value, TaskState):
        return value
    if isinstance(value, str) and value.upper() in TaskState.__members__:
        return TaskState(value)
    raise ValidationError(
        f"status={value!r} is not a task state",
        suggestions=[f"use one of {', '.join(s.value for s in TaskState)} (either case)"],
    )


class FoundInstances(list[dict[str, Any]]):
    """The offers of find_instances, best first. When empty, `explanation` says why nothing
    matched (the closest miss) and `suggestions` what to change."""

    def __init__(self, offers: Iterable[dict[str, Any]], explanation: str = "", suggestions: list[str] | None = None):
        super().__init__(offers)
        self.explanation = explanation
        self.suggestions = suggestions or []


class Flow:
    """The client. `Flow()` finds the user's flowd (starting it if none runs) and uses the
    provider named by `provider`, $FLOW_PROVIDER, or the daemon's default ("local").

    The facade: the one place that knows both the connection and the feature modules (flow.task,
    flow.volumes, flow.code_upload, ...), which take the connection and nothing else."""

    def __init__(
        self,
        provider: str | LocalProvider | MithrilProvider | None = None,
        *,
        flow_home: str | os.PathLike[str] | None = None,
        auto_start: bool = True,
    ) -> None:
        named = provider if provider is None or isinstance(provider, str) else provider.name
        self.provider = named or os.environ.get("FLOW_PROVIDER", "")
        remote = Remote.from_env(os.environ)  # FLOW_DAEMON_ADDRESS: a daemon on another machine
        self._conn = DaemonConnection(resolve_home(explicit=flow_home), auto_start=auto_start, remote=remote)
        self._conn.ensure_daemon()
        self._local_python: tuple[str] | None = None
        if provider is not None and not isinstance(provider, str) and provider.kind == "mithril":
            from flow.providers.mithril import MithrilProvider

            assert isinstance(provider, MithrilProvider)
            self._configure_provider(provider)
        elif not self.provider and os.environ.get("MITHRIL_API_KEY"):
            self._pick_mithril()

    def _configure_provider(self, provider: MithrilProvider) -> None:
        """Hands the provider's settings to flowd (which keeps the key in a 0600 file)."""
        self.provider = provider.configure(self._conn)

    def _pick_mithril(self) -> None:
        """`Flow()` with MITHRIL_API_KEY set: Mithril, as flowd has it configured or from the
        environment."""
        info = self.daemon_info()
        mithril = [p.name for p in info.providers if p.kind == "mithril"]
        if mithril:
            if info.kind_of(info.default_provider) != "mithril":
                self.provider = mithril[0]
            return
        from flow.providers.mithril import MithrilProvider

        self._configure_provider(MithrilProvider())

    @property
    def connection(self) -> DaemonConnection:
        """The connection to flowd that the feature modules (flow.task, flow.exec_client, ...) take."""
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- tasks ------------------------------------------------------------------------------

    def run(
        self,
        task: TaskConfig | str | Path | Sequence[str],
        *,
        wait_until: WaitUntil | None = None,
        dry_run: bool = False,
        max_wait_seconds: float | None = 3600,
        **overrides: Any,
    ) -> Task:
        """Submits a task and returns at once (PENDING or RUNNING). `task` is a TaskConfig, a
        shell command string, the path of a YAML job file ("job.yaml", read as `flow run
        job.yaml` reads it) or an argument list; keyword arguments set TaskConfig fields,
        e.g. `flow.run("python train.py", instance_type="a100")`. With upload_code (the
        default), the task runs in a snapshot of code_root (the current directory) taken now.

        As in flow-compute: `wait_until="running"` or `"terminal"` returns once the task runs
        (or has finished) or has finished, within `max_wait_seconds` (None: no limit; else
        flow.TimeoutError); `dry_run=True` submits nothing and returns the handle of `validate`;
        `data_mounts` also takes a dict {target: source} ("s3://...", "volume://NAME", a path)."""
        mounts = overrides.pop("data_mounts", None)
        config = _as_config(task, overrides)
        if mounts is not None:
            from flow.config import with_data_mounts

            config = with_data_mounts(config, mounts)
        if dry_run:
            return self.submit(config, validate_only=True)
        if wait_until is not None:
            tasks.check_wait_until(wait_until)  # before anything is submitted
        if max_wait_seconds is not None and not max_wait_seconds > 0:
            raise ValidationError(
                f"max_wait_seconds={max_wait_seconds!r} must be a positive number of seconds",
                suggestions=["give e.g. 3600, or None to wait without a limit"],
            )
        submitted = self.submit(config)
        if wait_until is None or wait_until == "submitted":
            return submitted
        return submitted.wait(timeout=max_wait_seconds, until=wait_until)

    def submit(
        self,
        config: TaskConfig,
        function_call: FunctionCall | None = None,
        validate_only: bool = False,
        progress: Progress | None = None,
        *,
        provider: str | None = None,
    ) -> Task:
        """Submits a ready TaskConfig (and, for FlowApp and invoke, a function call) to
        `provider` (default: this client's). `progress` is told how the code upload goes."""
        missing = [name for name in config.secret_env if not os.environ.get(name)]
        if missing:
            raise ValidationError(
                f"secret_env names {', '.join(missing)}, not set in this environment",
                suggestions=[f"export {missing[0]}=... before submitting (its value is never stored in the config)"],
            )
        from flow.wire.task_codec import create_task_call

        _check_snapshot_working_dir(config)
        request_id = "" if validate_only else uuid.uuid4().hex  # a retried create never launches twice

        def create(digest: str | None) -> Task:
            call = create_task_call(
                config,
                {name: os.environ[name] for name in config.secret_env},
                code_digest=digest,
                function_call=function_call,
                request_id=request_id,
                validate_only=validate_only,
                provider=self.provider if provider is None else provider,
            )
            # Generous: flowd copies the code snapshot for the task before it answers.
            return Task(self._conn, self._conn.unary(call, timeout=600))

        if not (config.upload_code and config.code_root):
            return create(None)
        return self._submitted_from(Path(config.code_root), progress, create)

    def validate(self, task: TaskConfig | str | Sequence[str], **overrides: Any) -> Task:
        """Asks flowd to validate and place the task without launching it (a dry run). The code
        is uploaded (only what flowd lacks), so a bad function path is caught too."""
        return self.submit(_as_config(task, overrides), validate_only=True)

    def upload_code(self, root: Path | str, progress: Progress | None = None) -> Upload:
        """Uploads a snapshot of `root` (only files flowd has not seen) and returns it."""
        from flow.code_upload import upload_code

        return upload_code(self._conn, Path(root), self._upload_cache, progress)

    @property
    def _upload_cache(self) -> Path:
        return self._conn.home.root / "upload-cache.db"

    def _submitted_from(self, root: Path, progress: Progress | None, create: Callable[[str], Task]) -> Task:
        """`create(digest)` with the snapshot of `root` (flow.code_upload.submitted_with_snapshot:
        an unchanged project's snapshot is named without asking flowd first). For submit, and
        for the CLI's plain path, which builds its CreateTask without a TaskConfig."""
        from flow.code_upload import submitted_with_snapshot

        return submitted_with_snapshot(self._conn, root, self._upload_cache, progress, create)

    def plan_upload(self, root: Path | str | None = None) -> UploadPlan:
        """What a task submitted from `root` (default: the current directory) would upload."""
        from flow.code_upload import plan_upload

        return plan_upload(Path(root) if root is not None else Path.cwd(), private=[self._conn.home.root])

    def local_python(self) -> str | None:
        """The interpreter functions run with: this one when tasks run on this machine."""
        if self._local_python is None:
            import sys

            info = self.daemon_info()
            self._local_python = (sys.executable if info.kind_of(self.chosen_provider(info)) == "local" else "",)
        return self._local_python[0] or None

    def chosen_provider(self, info: DaemonInfo) -> str:
        """The provider this client submits to: its own, else the daemon's default."""
        return self.provider or next((p.name for p in info.providers if p.default), "local")

    def get_task(self, task_id: str) -> Task:
        return tasks.get_task(self._conn, task_id)

    def status(self, task_id: str) -> TaskStatus:
        return self.get_task(task_id).last_status

    def list_tasks(
        self,
        status: TaskState | str | Sequence[TaskState | str] | None = None,
        limit: int = 100,
        force_refresh: bool = False,
    ) -> list[Task]:
        """Tasks, newest first, optionally only those in the given state(s): TaskStatus values
        or their names in either case ("completed"). (`force_refresh` is flow-compute's: every
        listing here is current.)"""
        wanted = [status] if isinstance(status, str) else list(status or [])
        return tasks.list_tasks(self._conn, limit, [_state(s) for s in wanted])

    def cancel(self, task_id: str) -> None:
        self.get_task(task_id).cancel()

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        return self.get_task(task_id).wait(timeout=timeout)

    def logs(self, task_id: str, follow: bool = False, tail: int | None = None) -> Any:
        """As Task.logs (a number in follow's place is a tail, as in flow-compute)."""
        task = self.get_task(task_id)
        if isinstance(follow, int) and not isinstance(follow, bool):
            follow, tail = False, follow
        return task.logs(follow=True, tail=tail) if follow else task.logs(tail=tail)

    # --- volumes ----------------------------------------------------------------------------

    @property
    def volumes(self) -> VolumeClient:
        """flow-compute's volume calls: `f.volumes.create(size_gb=1, name=...)`, `.list()`,
        `.get(id_or_name)`, `.delete(volume_id)`."""
        from flow.volumes import VolumeClient

        return VolumeClient(self._conn, self.provider)

    def create_volume(self, size_gb: int, name: str, interface: str = "block", *, iops: int | None = None) -> Volume:
        """Creates persistent storage: `flow.create_volume(size_gb=100, name="checkpoints")`.
        A `block` volume attaches to one running task at a time, a `file` volume to many."""
        from flow.volumes import create_volume

        return create_volume(self._conn, size_gb, name, interface, iops, self.provider)

    def get_volume(self, volume_id: str) -> Volume:
        from flow.volumes import get_volume

        return get_volume(self._conn, volume_id)

    def list_volumes(self, limit: int = 100) -> list[Volume]:
        """Volumes, newest first, each with the live tasks it is attached to."""
        from flow.volumes import list_volumes

        return list_volumes(self._conn, limit, self.provider)

    def delete_volume(self, volume_id: str) -> bool:
        """Deletes a volume and its data (VolumeError while a live task uses it)."""
        from flow.volumes import delete_volume

        return delete_volume(self._conn, volume_id)

    # --- instances --------------------------------------------------------------------------

    def find_instances(self, requirements: Mapping[str, Any] | None = None, limit: int = 100) -> FoundInstances:
        """Offers that meet `requirements`, best first (cheapest, then the closest fit). Keys:
        gpu_memory_gb, max_price (USD/hour), region, gpu_type, min_gpu_count, instance_type.
        Each result has instance_type, price_per_hour, gpu_type, gpu_count, gpu_memory_gb,
        region, provider and available."""
        from returns.result import Failure

        from flow.domain.instances.matching import requirements_from_dict
        from flow.wire.error_table import exception_from_domain_error
        from flow.wire.instance_codec import find_instances_call

        wanted = dict(requirements or {})
        checked = requirements_from_dict(wanted)
        if isinstance(checked, Failure):
            raise exception_from_domain_error(checked.failure())
        found = self._conn.unary(find_instances_call(wanted, self.provider, limit), timeout=60)
        return FoundInstances(found.offers, explanation=found.explanation, suggestions=list(found.suggestions))

    # --- the daemon -------------------------------------------------------------------------

    def daemon_info(self) -> DaemonInfo:
        """What the daemon says about itself, and its providers."""
        info = self._conn.unary(daemon_info_call(), timeout=10)
        return info._replace(providers=self._conn.unary(list_providers_call(), timeout=10))
