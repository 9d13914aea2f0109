"""Flow: the SDK's entry point. Talks to the user's flowd, starting it on first use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flow.connection import DaemonConnection, Remote
from flow.domain.task.states import TaskState
from flow.errors import ValidationError
from flow.home import resolve_home
from flow.task import Task, TaskStatus
from flow.wire.task_state_codec import task_resource_name, task_state_to_proto
from flowapi.v1 import daemon_service_pb2, task_service_pb2

if TYPE_CHECKING:
    from flow.code_upload import Progress, Upload, UploadPlan
    from flow.config import TaskConfig
    from flow.providers.local import LocalProvider
    from flow.providers.mithril import MithrilProvider
    from flow.volumes import Volume


def _as_config(task: TaskConfig | str | Sequence[str], overrides: dict[str, Any]) -> TaskConfig:
    import attrs  # here, not at the top: `flow status` never builds a config

    from flow.config import TaskConfig

    known = {f.name for f in attrs.fields(TaskConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValidationError(
            f"Unknown TaskConfig field(s): {', '.join(unknown)}",
            suggestions=[f"known fields: {', '.join(sorted(known))}"],
        )
    if isinstance(task, TaskConfig):
        config = attrs.evolve(task, **overrides) if overrides else task
    elif isinstance(task, str):
        config = TaskConfig(command=task, **overrides)
    elif isinstance(task, Sequence):
        config = TaskConfig(command=list(task), **overrides)
    else:
        raise ValidationError(
            f"run() takes a TaskConfig, a command string or an argument list, not {type(task).__name__}",
            suggestions=['flow.run("python train.py")', 'flow.run(TaskConfig(command=["python", "train.py"]))'],
        )
    if config.upload_code and not config.code_root:
        # The task runs in a snapshot of the directory it was submitted from.
        config = attrs.evolve(config, code_root=str(Path.cwd()))
    return config


class FoundInstances(list[dict[str, Any]]):
    """The offers of find_instances, best first. When empty, `explanation` says why nothing
    matched (the closest miss) and `suggestions` what to change."""

    def __init__(self, offers: Iterable[dict[str, Any]], explanation: str = "", suggestions: list[str] | None = None):
        super().__init__(offers)
        self.explanation = explanation
        self.suggestions = suggestions or []


class Flow:
    """The client. `Flow()` finds the user's flowd (starting it if none runs) and uses the
    provider named by `provider`, $FLOW_PROVIDER, or the daemon's default ("local")."""

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
        from flowapi.v1 import provider_pb2, provider_pb2_grpc

        request = provider_pb2.ConfigureProviderRequest(
            name=provider.name, kind=provider.kind, settings=provider.settings()
        )

        def configure(c: DaemonConnection) -> provider_pb2.ConfigureProviderResponse:
            assert c._channel is not None
            return provider_pb2_grpc.ProviderServiceStub(c._channel).ConfigureProvider(request, timeout=60)

        self._conn.call(configure)
        self.provider = provider.name

    def _pick_mithril(self) -> None:
        """`Flow()` with MITHRIL_API_KEY set: Mithril, as flowd has it configured or from the
        environment."""
        info = self.daemon_info()
        kinds = {p["name"]: p["kind"] for p in info["providers"]}
        if "mithril" in kinds.values():
            if kinds.get(info["default_provider"]) != "mithril":
                self.provider = next(name for name, kind in kinds.items() if kind == "mithril")
            return
        from flow.providers.mithril import MithrilProvider

        self._configure_provider(MithrilProvider())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- tasks ------------------------------------------------------------------------------

    def run(self, task: TaskConfig | str | Sequence[str], **overrides: Any) -> Task:
        """Submits a task and returns at once (PENDING or RUNNING). `task` is a TaskConfig, a
        shell command string, or an argument list; keyword arguments set TaskConfig fields,
        e.g. `flow.run("python train.py", instance_type="a100")`. With upload_code (the
        default), the task runs in a snapshot of code_root (the current directory) taken now."""
        return self.submit(_as_config(task, overrides))

    def submit(
        self,
        config: TaskConfig,
        function_call: Any = None,
        validate_only: bool = False,
        progress: Progress | None = None,
    ) -> Task:
        """Submits a ready TaskConfig (and, for FlowApp and invoke, a function call)."""
        missing = [name for name in config.secret_env if not os.environ.get(name)]
        if missing:
            raise ValidationError(
                f"secret_env names {', '.join(missing)}, not set in this environment",
                suggestions=[f"export {missing[0]}=... before submitting (its value is never stored in the config)"],
            )
        from flow.wire.task_codec import task_config_to_proto

        spec = task_config_to_proto(config, {name: os.environ[name] for name in config.secret_env})
        if config.upload_code and config.code_root:
            spec.code_digest = self.upload_code(Path(config.code_root), progress=progress).digest
        if function_call is not None:
            from flow.wire.function_codec import function_call_to_proto

            spec.function_call.CopyFrom(function_call_to_proto(function_call))
        request = task_service_pb2.CreateTaskRequest(
            spec=spec,
            request_id="" if validate_only else uuid.uuid4().hex,  # a retried create never launches twice
            validate_only=validate_only,
            provider=self.provider,
        )
        # Generous: flowd copies the code snapshot for the task before it answers.
        reply = self._conn.call(lambda c: c.tasks.CreateTask(request, timeout=600))
        return Task(self._conn, reply.task)

    def validate(self, task: TaskConfig | str | Sequence[str], **overrides: Any) -> Task:
        """Asks flowd to validate and place the task without launching it (a dry run). The code
        is uploaded (only what flowd lacks), so a bad function path is caught too."""
        return self.submit(_as_config(task, overrides), validate_only=True)

    def upload_code(self, root: Path | str, progress: Progress | None = None) -> Upload:
        """Uploads a snapshot of `root` (only files flowd has not seen) and returns it."""
        from flow.code_upload import upload_code

        return upload_code(self._conn, Path(root), self._conn.home.root / "upload-cache.db", progress)

    def plan_upload(self, root: Path | str | None = None) -> UploadPlan:
        """What a task submitted from `root` (default: the current directory) would upload."""
        from flow.code_upload import plan_upload

        return plan_upload(Path(root) if root is not None else Path.cwd(), private=[self._conn.home.root])

    def local_python(self) -> str | None:
        """The interpreter functions run with: this one when tasks run on this machine."""
        if self._local_python is None:
            import sys

            providers = self.daemon_info()["providers"]
            kinds = {p["name"]: p["kind"] for p in providers}
            chosen = self.provider or next((p["name"] for p in providers if p["default"]), "local")
            self._local_python = (sys.executable if kinds.get(chosen) == "local" else "",)
        return self._local_python[0] or None

    def get_task(self, task_id: str) -> Task:
        request = task_service_pb2.GetTaskRequest(name=task_resource_name(task_id))
        reply = self._conn.call(lambda c: c.tasks.GetTask(request, timeout=30))
        return Task(self._conn, reply.task)

    def status(self, task_id: str) -> TaskStatus:
        return self.get_task(task_id).last_status

    def list_tasks(self, status: TaskState | Sequence[TaskState] | None = None, limit: int = 100) -> list[Task]:
        """Tasks, newest first, optionally only those in the given state(s)."""
        wanted = [status] if isinstance(status, TaskState) else list(status or [])
        found: list[Task] = []
        token = ""
        while len(found) < limit:
            reply = self._list_page(min(limit - len(found), 1000), token, wanted)
            found.extend(Task(self._conn, t) for t in reply.tasks)
            token = reply.next_page_token
            if not token:
                break
        return found

    def _list_page(self, size: int, token: str, states: list[TaskState]) -> task_service_pb2.ListTasksResponse:
        request = task_service_pb2.ListTasksRequest(
            page_size=size, page_token=token, states=[task_state_to_proto(s) for s in states]
        )
        return self._conn.call(lambda c: c.tasks.ListTasks(request, timeout=30))

    def cancel(self, task_id: str) -> None:
        self.get_task(task_id).cancel()

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        return self.get_task(task_id).wait(timeout=timeout)

    def logs(self, task_id: str, follow: bool = False, tail: int | None = None) -> Any:
        task = self.get_task(task_id)
        return task.logs(follow=True, tail=tail) if follow else task.logs(tail=tail)

    def slurm_submit(self, path: str | os.PathLike[str], provider: str | None = None, **options: Any) -> list[Task]:
        """Runs an existing #SBATCH script (`flow slurm submit`): natively on a Slurm provider,
        translated into TaskConfig settings on any other. One Task, or one per array element."""
        from flow.slurm import submit_sbatch

        return submit_sbatch(self, path, provider, **options)

    # --- volumes ----------------------------------------------------------------------------

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

        return list_volumes(self._conn, limit)

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
        from flow.wire.instance_codec import offer_dict_from_proto, requirements_to_proto

        wanted = dict(requirements or {})
        checked = requirements_from_dict(wanted)
        if isinstance(checked, Failure):
            raise exception_from_domain_error(checked.failure())
        request = requirements_to_proto(wanted, self.provider, limit)
        reply = self._conn.call(lambda c: c.instances.FindInstances(request, timeout=60))
        return FoundInstances(
            (offer_dict_from_proto(o) for o in reply.offers),
            explanation=reply.explanation,
            suggestions=list(reply.suggestions),
        )

    # --- the daemon -------------------------------------------------------------------------

    def daemon_info(self) -> dict[str, Any]:
        info = self._conn.call(lambda c: c.daemon.GetDaemonInfo(daemon_service_pb2.GetDaemonInfoRequest(), timeout=10))
        providers = self._conn.call(
            lambda c: c.daemon.ListProviders(daemon_service_pb2.ListProvidersRequest(), timeout=10)
        )
        return {
            "version": info.version,
            "api_version": info.api_version,
            "pid": info.pid,
            "flow_home": info.flow_home,
            "addresses": list(info.addresses),
            "default_provider": info.default_provider,
            "started_at": info.start_time.ToDatetime().isoformat() + "Z",
            "providers": [
                {"name": p.name.removeprefix("providers/"), "kind": p.kind, "default": p.is_default}
                for p in providers.providers
            ],
        }
