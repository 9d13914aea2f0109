"""The kubernetes provider: a task is a Job in one namespace of a cluster (the user's kubeconfig).

Placing matches the task against what the nodes offer (flow.domain.kubernetes.nodes: allocatable
GPUs and GPU feature discovery's model labels, cached for CATALOG_TTL; find_instances asks anew).
Launching creates the task's objects (flow.domain.kubernetes.manifests: a Secret for secret_env, a
ConfigMap with the code snapshot, a headless Service for several nodes, then the Job): the Job
created means accepted (`Queued`: PENDING until a pod runs); anything the API server refuses is
`Refused` with its words, and what was created is deleted again.

One watch per provider follows every pod it labelled (flow.dev/provider=<name>): a list, then a
watch from its resourceVersion, listed again when the watch is too old (410) or breaks. Each pod
event updates the task's view (flow.domain.kubernetes.pods): PENDING with the scheduler's reason,
RUNNING once a task container runs, and the end: the exit code and Kubernetes' reason (OOMKilled),
DeadlineExceeded as TIMEOUT, an image that cannot be pulled or a program that cannot start as an
immediate FAILED naming it, eviction or preemption as PREEMPTED. Each running pod's output is
followed through the pod log API into the task's log file (one per node), so flowd serves logs with
the same byte cursors as for any task; after a flowd restart the stream is read again from the
start and the bytes already mirrored are skipped. A task ends once its pods have ended and their
output is in; then its objects are deleted (Background propagation). Cancel deletes the Job (its
pods get SIGTERM, SIGKILL after the grace) and the task ends once its pods are gone.

KubernetesProvider is the Provider surface; the work is its collaborators': KubeCatalog (offers
and placing, kubernetes_catalog), KubeLauncher (the objects and the code, kubernetes_launch),
KubeWatch (the pod watch and each task's course, kubernetes_watch), KubeLogs (the task's files
and the pods' output, kubernetes_logs) and KubeVolumes (volumes as PersistentVolumeClaims,
kubernetes_volumes), over the state they share (kubernetes_state).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from returns.result import Failure, Result

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.errors import DomainError
from flow.domain.instances.matching import Offer
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import Lost, TaskRecord, TaskState
from flowd.blobs import BlobStore
from flowd.exec_session import ExecChannel
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
from flowd.providers.kubernetes_api import KubeApi, KubeError
from flowd.providers.kubernetes_catalog import KubeCatalog
from flowd.providers.kubernetes_launch import KubeLauncher
from flowd.providers.kubernetes_logs import KubeLogs
from flowd.providers.kubernetes_state import KUBE_STATES, KubeJob
from flowd.providers.kubernetes_volumes import KubeVolumes
from flowd.providers.kubernetes_watch import KubeWatch
from flowd.providers.s3_credentials import no_storage_credentials, storage_credentials


class KubernetesProvider:
    """Runs tasks as Kubernetes Jobs. See the module docstring."""

    kind = "kubernetes"

    def __init__(
        self,
        settings: KubernetesSettings,
        tasks_root: Path,
        reporter: Reporter,
        blobs: BlobStore,
        env: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._env = env
        self._report = reporter
        self._stop = threading.Event()
        self.api: KubeApi | None = None
        self._config_error: DomainError | None = None
        try:
            self.api = KubeApi(settings, env)
        except KubeError as exc:
            self._config_error = exc.error
        lock = threading.RLock()  # guards the followed tasks' state, which the watch and the log followers share
        self._catalog = KubeCatalog(settings, self._api, clock)
        self._volumes = KubeVolumes(settings, self._api)
        self._launcher = KubeLauncher(settings, self._api, self._catalog, self._volumes, blobs, env)
        self._logs = KubeLogs(self.name, tasks_root, self.api, lock, self._stop)
        self._watch = KubeWatch(self.name, self.api, reporter, self._logs, self._launcher, lock, self._stop, clock)
        self.capabilities = Capabilities(offers=self, exec=self, results=self, node_logs=True, volumes=self._volumes)
        self._watch.start()

    @property
    def state_type(self) -> StateType:
        return KUBE_STATES

    def _api(self) -> KubeApi:
        if self.api is None:
            assert self._config_error is not None
            raise KubeError(self._config_error)
        return self.api

    # --- files ------------------------------------------------------------------------------

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        return self._logs.log_files(record)

    def read_result(self, task_id: str) -> bytes | None:
        return self._logs.dir(task_id).read(task_files.RESULT)

    # --- offers and placement ---------------------------------------------------------------

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        return self._catalog.offers()

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        placed = self._catalog.place(config)
        if not isinstance(placed, Failure) and config.data_mounts and storage_credentials(self._env) is None:
            return Failure(no_storage_credentials(self.name))
        if isinstance(placed, Failure) or not config.volumes:
            return placed
        try:
            resolved = self._volumes.for_task(config)
        except KubeError as exc:
            return Failure(exc.error)
        return Failure(resolved.failure()) if isinstance(resolved, Failure) else placed

    # --- launching and following ------------------------------------------------------------

    def launch(self, record: TaskRecord) -> Launched[KubeJob]:
        return self._launcher.launch(record)

    def watch(self, record: TaskRecord, state: KubeJob) -> None:
        self._watch.follow(record, state)

    def cancel(self, record: TaskRecord, state: KubeJob) -> None:
        self._watch.cancel(record, state, self._api)

    def recover(self, record: TaskRecord, state: KubeJob | None) -> Recovered[KubeJob]:
        if state is None:
            return self.launch(record)
        try:
            found = self._api().get("jobs", state.job)
        except KubeError:
            found = {}  # unreachable now: followed, and the watch finds out
        if found is None:
            self._watch.delete_objects(state.job)
            self._report(record.task_id, Lost(reason="its Job was deleted while flowd was down"))
            return Ended()
        return Running(state) if record.state is TaskState.RUNNING else Queued(state)

    def recovered(self) -> None:
        pass

    # --- exec -------------------------------------------------------------------------------

    def exec(self, record: TaskRecord, state: KubeJob, request: ExecRequest) -> ExecChannel:
        pods = self._watch.running_pods(record.task_id)
        if not pods:
            raise LaunchError(f"task {record.task_id} has no running pod to run the command in")
        # A login shell: bash where the image has it (its prompt goes to stderr, which stays the terminal).
        argv = list(request.argv) or ["sh", "-c", "if command -v bash >/dev/null; then exec bash -l; fi; exec sh -l"]
        if request.tty:
            argv = ["env", f"TERM={request.term or 'xterm-256color'}", *argv]
        try:
            return self._api().exec(pods[0].name, argv, request.tty, request.rows, request.columns)
        except KubeError as exc:
            raise LaunchError(str(exc), exc.error) from None

    def close(self) -> None:
        self._stop.set()
        if self.api is not None:
            self.api.close()
