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
"""

from __future__ import annotations

import calendar
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from attrs import define, evolve, field, frozen
from returns.result import Failure, Result, Success

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.instances.matching import Offer
from flow.domain.instances.placement import choose_offer
from flow.domain.kubernetes.manifests import (
    CODE_ARCHIVE,
    CODE_CONTAINER,
    CODE_IN_CONFIGMAP,
    CODE_STREAMED,
    INVOCATION,
    MAX_FILES_BYTES,
    PROVIDER_LABEL,
    RUNNER,
    TASK_LABEL,
    UNPACK_STREAM,
    PodPlan,
    deadline_seconds,
    files_manifest,
    job_manifest,
    job_name,
    secret_manifest,
    service_manifest,
)
from flow.domain.kubernetes.nodes import REGION_LABEL, KubeOffer, node_facts, offers_of
from flow.domain.kubernetes.pods import Ending, PodView, pod_view, task_view
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import (
    Exited,
    LaunchFailed,
    Lost,
    Preempted,
    Preparing,
    Started,
    TaskEvent,
    TaskRecord,
    TaskState,
    TimedOut,
)
from flow.runtime import runner
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
    Refused,
    Reporter,
    Running,
    StateType,
)
from flowd.providers.code_archive import snapshot_archive
from flowd.providers.kubernetes_api import KubeApi, KubeError, WatchExpiredError
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)

CATALOG_TTL: Final = 15.0
RETRY_SECONDS: Final = 1.0
MAX_RETRY_SECONDS: Final = 30.0
RUNNER_SOURCE: Final = Path(runner.__file__)
STDIN_CHUNK: Final = 256 * 1024
DELIVERY_ATTEMPTS: Final = 5


@frozen
class KubeJob:
    """The runtime state of a task on Kubernetes: its Job (and the objects of the same name)."""

    job: str
    namespace: str
    num_nodes: int = 1


KUBE_STATES: Final = StateType(classes=(KubeJob,), legacy=lambda _data: None)


@define
class _Task:
    """A task the watch follows."""

    task_id: str
    job: str
    num_nodes: int
    function_call: bool
    deadline: int | None  # max_run_time_hours in seconds
    started: bool = False
    pending_reason: str = ""
    cancelling: bool = False
    ended: bool = False
    pods: dict[str, PodView] = field(factory=dict)
    followers: dict[str, threading.Thread] = field(factory=dict)  # by pod name
    logs_done: set[str] = field(factory=set)  # pods whose output is all in
    deadline_set: set[str] = field(factory=set)
    code_digest: str | None = None  # a snapshot flowd streams into each pod's init container
    delivering: set[str] = field(factory=set)  # pods it was (or is being) streamed to
    delivery_attempts: int = 0


def _timestamp(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, OverflowError):
        return None


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
        self._tasks_root = tasks_root
        self._report = reporter
        self._blobs = blobs
        self._clock = clock
        self._lock = threading.RLock()
        self._tasks: dict[str, _Task] = {}
        self._seen: dict[str, dict[str, PodView]] = {}  # every labelled pod seen, by task
        self._catalog: tuple[float, tuple[KubeOffer, ...]] | None = None
        self._stop = threading.Event()
        self._last_warning = -60.0
        self.api: KubeApi | None = None
        self._config_error: DomainError | None = None
        try:
            self.api = KubeApi(settings, env)
        except KubeError as exc:
            self._config_error = exc.error
        self.capabilities = Capabilities(offers=self, exec=self, results=self, node_logs=True)
        self._watcher = threading.Thread(target=self._watch_loop, name=f"watch-{self.name}", daemon=True)
        self._watcher.start()

    @property
    def state_type(self) -> StateType:
        return KUBE_STATES

    def _api(self) -> KubeApi:
        if self.api is None:
            assert self._config_error is not None
            raise KubeError(self._config_error)
        return self.api

    # --- files ------------------------------------------------------------------------------

    def _dir(self, task_id: str) -> TaskDir:
        return TaskDir(self._tasks_root / task_id)

    def _node_dir(self, task: _Task, node: int) -> TaskDir:
        base = self._dir(task.task_id)
        return base.node(node) if task.num_nodes > 1 else base

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        base = self._dir(record.task_id)
        if record.config.num_instances > 1:
            return [base.node(k).output for k in range(record.config.num_instances)]
        return [base.output]

    def read_result(self, task_id: str) -> bytes | None:
        return self._dir(task_id).read(task_files.RESULT)

    # --- offers and placement ---------------------------------------------------------------

    def _offers(self, fresh: bool = False) -> tuple[KubeOffer, ...]:
        with self._lock:
            if not fresh and self._catalog is not None and self._clock() - self._catalog[0] < CATALOG_TTL:
                return self._catalog[1]
        api = self._api()
        facts = [f for n in api.nodes() if (f := node_facts(n, self.settings, api.cluster)) is not None]
        offers = offers_of(facts, self.name)
        with self._lock:
            self._catalog = (self._clock(), offers)
        return offers

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        try:
            return Success(tuple(o.offer for o in self._offers(fresh=True)))
        except KubeError as exc:
            return Failure(exc.error)

    def _unsupported(self, config: TaskConfig) -> DomainError | None:
        problems = []
        if config.ssh_keys:
            fix = "remove ssh_keys: flow ssh reaches the pods through the Kubernetes API"
            problems.append(violation("ssh_keys", list(config.ssh_keys), "has no meaning on Kubernetes", fix))
        for i, mount in enumerate(config.data_mounts):
            fix = "fetch the data from your task, or put it on a node path (node_paths in the provider's settings)"
            problems.append(violation(f"data_mounts[{i}]", mount.source, "is not supported on Kubernetes yet", fix))
        for i, volume in enumerate(config.volumes):
            fix = "use a directory the nodes share (node_paths in the provider's settings) instead"
            what = getattr(volume, "name", None) or getattr(volume, "mount_path", "")
            problems.append(violation(f"volumes[{i}]", what, "is not supported on Kubernetes yet", fix))
        if problems:
            return validation_error(problems, subject=f"task for provider {self.name}")
        return None

    def _choose(self, config: TaskConfig, offers: Sequence[KubeOffer]) -> Result[KubeOffer, DomainError]:
        chosen = choose_offer(config, [o.offer for o in offers])
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        offer = chosen.unwrap()
        found = next(o for o in offers if o.offer == offer)
        if config.memory_mb:
            api = self._api()
            fits = [
                f
                for n in api.nodes()
                if (f := node_facts(n, self.settings, api.cluster)) is not None
                and f.memory_mib >= config.memory_mb
                and (not found.product or (f.product == found.product and f.gpus >= found.gpus))
            ]
            if not fits:
                return Failure(
                    DomainError(
                        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                        message=f"no node of provider {self.name} has memory_mb={config.memory_mb} MiB to give "
                        f"(with {format_instance_type(offer.instance_type)})",
                        suggestions=(
                            "ask for less memory (memory_mb)",
                            f"see the nodes: flow instances --provider {self.name}",
                        ),
                        metadata=(("provider", self.name),),
                    )
                )
        return Success(found)

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        refused = self._unsupported(config)
        if refused is not None:
            return Failure(refused)
        try:
            chosen = self._choose(config, self._offers())
        except KubeError as exc:
            return Failure(exc.error)
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        return Success(Placement(instance_type=format_instance_type(chosen.unwrap().offer.instance_type)))

    # --- launching --------------------------------------------------------------------------

    def _code_archive(self, digest: str | None) -> bytes | None:
        return snapshot_archive(self._blobs, digest, compresslevel=9)  # a ConfigMap holds 1 MiB: every byte counts

    def _plan(self, record: TaskRecord) -> tuple[PodPlan, dict[str, bytes]]:
        config = record.config
        for fresh in (False, True):
            offers = self._offers(fresh=fresh)
            same = [o for o in offers if format_instance_type(o.offer.instance_type) == record.instance_type]
            chosen = self._choose(config, same) if same else None
            if chosen is not None and not isinstance(chosen, Failure):
                break
        else:
            raise LaunchError(
                f"the cluster no longer offers {record.instance_type}; look at `flow instances --provider {self.name}`",
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=f"provider {self.name} no longer offers {record.instance_type}",
                    suggestions=(f"look at what it offers: flow instances --provider {self.name}",),
                ),
            )
        offer = chosen.unwrap()
        files: dict[str, bytes] = {}
        archive = self._code_archive(record.code_digest)
        if archive is not None:
            files[CODE_ARCHIVE] = archive
        call = record.function_call
        if call is not None:
            files[RUNNER] = RUNNER_SOURCE.read_bytes()
            files[INVOCATION] = json.dumps(invocation_document(call)).encode()
        code = CODE_IN_CONFIGMAP if archive is not None else ""
        if sum(len(v) for v in files.values()) > MAX_FILES_BYTES:  # too large for a ConfigMap: streamed
            files.pop(CODE_ARCHIVE, None)
            code = CODE_STREAMED if archive is not None else ""
        size = sum(len(v) for v in files.values())
        if size > MAX_FILES_BYTES:  # a function call's arguments alone
            problem = (
                f"is {size // 1024} KiB; the kubernetes provider sends a function call through a ConfigMap, "
                f"which holds {MAX_FILES_BYTES // 1024} KiB"
            )
            fix = "pass large data through a volume or a data mount, not as an argument"
            error = validation_error(
                [violation("args", call.function if call else "", problem, fix)], subject="function call"
            )
            raise LaunchError(error.message, error)
        region = offer.offer.region  # a node label's region selects those nodes; the cluster's, any
        plan = PodPlan(
            task_id=record.task_id,
            task_name=record.name,
            config=config,
            image=config.image or self.settings.image,
            gpus=offer.gpus,
            gpu_product=offer.product,
            region_label=(REGION_LABEL, region) if config.region and region != self._cluster() else None,
            secret_names=tuple(sorted(record.secrets)),
            code=code,
            function_python=(call.python or "python3") if call is not None else None,
        )
        return plan, files

    def _cluster(self) -> str:
        return self.api.cluster if self.api is not None else ""

    def launch(self, record: TaskRecord) -> Launched[KubeJob]:
        try:
            api = self._api()
            plan, files = self._plan(record)
        except KubeError as exc:
            return Refused(exc.error)
        except (LaunchError, OSError) as exc:
            return (exc if isinstance(exc, LaunchError) else LaunchError(str(exc))).refused(self.name)
        name = job_name(record.task_id)
        created: list[str] = []
        try:
            if record.secrets:
                api.create("secrets", secret_manifest(record.task_id, self.name, record.secrets))
                created.append("secrets")
            if files:
                api.create("configmaps", files_manifest(record.task_id, self.name, files))
                created.append("configmaps")
            if record.config.num_instances > 1:
                api.create("services", service_manifest(record.task_id, self.name))
                created.append("services")
            api.create("jobs", job_manifest(plan, self.settings))
        except KubeError as exc:
            if exc.status == 409 and not created:  # launched before flowd stopped: it is there
                return Queued(KubeJob(name, api.namespace, record.config.num_instances))
            for kind in created:
                try:
                    api.delete(kind, name)
                except KubeError:
                    log.warning("provider %s: could not delete %s %s after a refusal", self.name, kind, name)
            return Refused(exc.error)
        return Queued(KubeJob(name, api.namespace, record.config.num_instances))

    # --- following --------------------------------------------------------------------------

    def _follow(self, record: TaskRecord, state: KubeJob) -> None:
        task = _Task(
            task_id=record.task_id,
            job=state.job,
            num_nodes=state.num_nodes,
            function_call=record.function_call is not None,
            deadline=deadline_seconds(record.config),
            started=record.state is TaskState.RUNNING,
            code_digest=record.code_digest,
        )
        base = self._dir(record.task_id)
        for node in range(state.num_nodes):
            (base.node(node) if state.num_nodes > 1 else base).touch(task_files.OUTPUT)
        with self._lock:
            self._tasks[record.task_id] = task
            task.pods.update(self._seen.get(record.task_id, {}))
        self._advance(task)

    def watch(self, record: TaskRecord, state: KubeJob) -> None:
        self._follow(record, state)

    def _warn(self, message: str) -> None:
        now = self._clock()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%s", message)

    def _watch_loop(self) -> None:
        selector = f"{PROVIDER_LABEL}={self.name}"
        pause = RETRY_SECONDS
        while not self._stop.is_set():
            if self.api is None:
                return
            try:
                pods, version = self.api.list_pods(selector)
                pause = RETRY_SECONDS
                self._resync(pods)
                while not self._stop.is_set():
                    for kind, pod in self.api.watch_pods(selector, version, self._stop):
                        version = str((pod.get("metadata") or {}).get("resourceVersion") or version)
                        if kind != "BOOKMARK":
                            self._on_pod(pod, deleted=kind == "DELETED")
            except WatchExpiredError:
                continue
            except KubeError as exc:
                if not self._stop.is_set():
                    self._warn(f"provider {self.name}: watching pods failed (retrying): {exc}")
            except Exception:
                if not self._stop.is_set():
                    log.exception("provider %s: watching pods failed", self.name)
            self._stop.wait(pause)
            pause = min(pause * 2, MAX_RETRY_SECONDS)  # a cluster that stays away is asked less often

    def _resync(self, pods: list[dict[str, Any]]) -> None:
        """A fresh listing: what it lacks was deleted while the watch was away."""
        listed: dict[str, dict[str, PodView]] = {}
        for pod in pods:
            task_id = str(((pod.get("metadata") or {}).get("labels") or {}).get(TASK_LABEL, ""))
            view = pod_view(pod)
            listed.setdefault(task_id, {})[view.name] = view
        with self._lock:
            self._seen = listed
            tasks = list(self._tasks.values())
            for task in tasks:
                now = listed.get(task.task_id, {})
                for name, old in task.pods.items():
                    if name not in now:
                        now[name] = evolve(old, deleted=True)
                task.pods = dict(now)
        for task in tasks:
            self._advance(task)

    def _on_pod(self, pod: dict[str, Any], deleted: bool) -> None:
        task_id = str(((pod.get("metadata") or {}).get("labels") or {}).get(TASK_LABEL, ""))
        view = pod_view(pod, deleted=deleted)
        with self._lock:
            seen = self._seen.setdefault(task_id, {})
            if deleted:
                seen.pop(view.name, None)
                if not seen:
                    self._seen.pop(task_id, None)
            else:
                seen[view.name] = view
            task = self._tasks.get(task_id)
            if task is None:
                return
            task.pods[view.name] = view
        self._advance(task)

    def _advance(self, task: _Task) -> None:
        """Reports what the task's pods say now; ends it once they have ended and their output is in."""
        with self._lock:
            if task.ended:
                return
            pods = list(task.pods.values())
            seen = task_view(task.num_nodes, pods)
            follow = [p for p in pods if p.running and not p.deleted and p.name not in task.followers]
            for pod in pods:
                if pod.name not in task.followers and (pod.deleted or pod.exit_code is not None) and not pod.running:
                    task.logs_done.add(pod.name)  # it never ran: nothing to read
            deliver = [p for p in pods if p.awaits_code and not p.deleted and p.name not in task.delivering]
            task.delivering.update(p.name for p in deliver)
            for pod in follow:
                thread = threading.Thread(
                    target=self._mirror, args=(task, pod.name), name=f"log-{pod.name}", daemon=True
                )
                task.followers[pod.name] = thread
            started = seen.started and not task.started
            task.started = task.started or seen.started
            pending = ""
            if not task.started and seen.pending_reason != task.pending_reason:
                task.pending_reason = pending = seen.pending_reason
            deadlines = [
                p for p in pods if task.deadline and p.started_at and not p.deleted and p.exit_code is None
                and p.name not in task.deadline_set
            ]  # fmt: skip
            task.deadline_set.update(p.name for p in deadlines)
            ending = None
            if seen.ended is not None:
                urgent = seen.ended in (Ending.COULD_NOT_START, Ending.PREEMPTED)
                ran = {p.name for p in pods if p.running}
                logs_in = ran <= task.logs_done
                gone = all(p.deleted for p in pods)
                if urgent or (logs_in and (gone or not task.cancelling)):
                    task.ended = True
                    ending = seen
            elif seen.stop_others and not task.cancelling:
                pass  # the Job's controller stops the other pods (backoffLimit 0)
        for pod in follow:
            task.followers[pod.name].start()
        for pod in deliver:
            threading.Thread(target=self._deliver, args=(task, pod.name), name=f"code-{pod.name}", daemon=True).start()
        state = KubeJob(task.job, self.api.namespace if self.api else "", task.num_nodes)
        if started:
            self._report(task.task_id, Started(), state)
        if pending:
            self._report(task.task_id, Preparing(reason=f"waiting for a node: {pending}"))
        for pod in deadlines:
            self._set_deadline(task, pod)
        if ending is not None:
            self._finish(task, ending, pods)

    def _set_deadline(self, task: _Task, pod: PodView) -> None:
        """The pod's clock started before its program did: the deadline becomes exactly
        max_run_time_hours from the program's start (it may only shrink)."""
        began, took = _timestamp(pod.started_at), _timestamp(pod.pod_started_at)
        if began is None or took is None or task.deadline is None or self.api is None:
            return
        try:
            self.api.patch(
                "pods", pod.name, {"spec": {"activeDeadlineSeconds": int(begin_gap(began, took)) + task.deadline}}
            )
        except KubeError as exc:
            log.info("provider %s: pod %s keeps its deadline allowance: %s", self.name, pod.name, exc)

    def _deliver(self, task: _Task, pod: str) -> None:
        """Streams the code snapshot into the pod's waiting init container (one too large for a
        ConfigMap); the init container ends once it is unpacked, and the task's program starts.
        A stream that breaks before the command's end is known is tried again (unpacking twice
        is harmless); a few such breaks in a row, or tar's refusal, fail the task."""
        said, code, answered = b"", -1, False
        try:
            archive = self._code_archive(task.code_digest)
            if archive is None:
                raise LaunchError("the task's code snapshot is gone")
            channel = self._api().exec(pod, UNPACK_STREAM, False, container=CODE_CONTAINER)
            for start in range(0, len(archive), STDIN_CHUNK):
                channel.write(archive[start : start + STDIN_CHUNK])
            channel.close_stdin()
            said = b"".join(chunk for _, chunk in iter(channel.read, None))
            code, answered = channel.wait(), channel.answered
        except KubeError as exc:
            said = str(exc).encode()
        except (LaunchError, OSError) as exc:
            said, answered = str(exc).encode(), True
        if code == 0:
            return
        text = said.decode("utf-8", "replace").strip()[-300:] or f"exit status {code}"
        with self._lock:
            task.delivery_attempts += 1
            again = not answered and task.delivery_attempts < DELIVERY_ATTEMPTS
        if again:  # the cluster did not answer, or the stream broke: again, a little later
            log.warning("provider %s: streaming the code into pod %s failed (retrying): %s", self.name, pod, text)
            self._stop.wait(RETRY_SECONDS * task.delivery_attempts)
            with self._lock:
                task.delivering.discard(pod)
            self._advance(task)
            return
        self._fail(task, f"the code snapshot could not be unpacked in pod {pod} (it needs sh, tar and gzip): {text}")

    def _fail(self, task: _Task, reason: str) -> None:
        """Ends the task FAILED ("could not start: ...") and deletes what it left."""
        with self._lock:
            if task.ended:
                return
            task.ended = True
            self._tasks.pop(task.task_id, None)
        self._delete_objects(task.job)
        self._report(task.task_id, LaunchFailed(reason=reason))

    def _mirror(self, task: _Task, pod: str) -> None:
        """Follows one pod's output into its node's log file until the container has ended."""
        try:
            self._mirror_until_ended(task, pod)
        except Exception:
            if not self._stop.is_set():  # (closing: the client went away under it)
                log.exception("provider %s: following the output of pod %s failed", self.name, pod)
            return
        with self._lock:
            task.logs_done.add(pod)
        self._advance(task)

    def _mirror_until_ended(self, task: _Task, pod: str) -> None:
        assert self.api is not None
        with self._lock:
            view = task.pods.get(pod)
        node = view.node if view is not None else 0
        out = self._node_dir(task, node)
        out.touch(task_files.OUTPUT)
        pause = RETRY_SECONDS
        read_after_end = False
        while not self._stop.is_set():
            failed: Exception | None = None
            try:
                for chunk in self.api.follow_log(pod, out.output.stat().st_size, self._stop):
                    out.append_at(task_files.OUTPUT, out.output.stat().st_size, chunk)
            except KubeError as exc:
                failed = exc
            except Exception as exc:  # a stream error the client does not wrap: followed again, not given up
                if self._stop.is_set():
                    return
                log.exception("provider %s: following the output of pod %s failed (retrying)", self.name, pod)
                failed = exc
            with self._lock:
                now = task.pods.get(pod)
                over = now is None or now.deleted or now.exit_code is not None
            if over or task.ended:
                if failed is not None and not read_after_end and not task.ended:
                    read_after_end = True  # it ended while the stream was broken: what it left, once more
                    continue
                if failed is not None:  # e.g. a node without a kubelet to ask (a virtual node)
                    log.info("provider %s: the output of pod %s cannot be read: %s", self.name, pod, failed)
                break
            self._stop.wait(pause)  # the stream ended early (a kubelet restart), or failed: again
            pause = min(pause * 2, MAX_RETRY_SECONDS) if failed is not None else RETRY_SECONDS

    def _finish(self, task: _Task, seen: Any, pods: list[PodView]) -> None:
        if task.function_call:
            first = next((p for p in pods if p.node == 0 and p.message), None)
            if first is not None:
                self._dir(task.task_id).write(task_files.RESULT, first.message.encode())
        self._delete_objects(task.job)
        with self._lock:
            self._tasks.pop(task.task_id, None)
        event: TaskEvent
        if seen.ended is Ending.EXITED:
            event = Exited(exit_code=seen.exit_code if seen.exit_code is not None else 1, detail=seen.detail)
        elif seen.ended is Ending.TIMED_OUT:
            event = TimedOut(exit_code=seen.exit_code)
        elif seen.ended is Ending.PREEMPTED:
            event = Preempted(reason=f"PREEMPTED: {seen.detail}")
        elif seen.ended is Ending.COULD_NOT_START:
            event = LaunchFailed(reason=seen.detail)
        else:
            event = Lost(reason=seen.detail)
        if isinstance(event, Exited | TimedOut) and not task.started:
            self._report(
                task.task_id, Started(), KubeJob(task.job, self.api.namespace if self.api else "", task.num_nodes)
            )
        self._report(task.task_id, event)

    def _delete_objects(self, job: str) -> None:
        if self.api is None:
            return
        for kind in ("jobs", "services", "secrets", "configmaps"):
            try:
                self.api.delete(kind, job)
            except KubeError as exc:
                log.warning("provider %s: could not delete %s %s: %s", self.name, kind, job, exc)

    def cancel(self, record: TaskRecord, state: KubeJob) -> None:
        with self._lock:
            task = self._tasks.get(record.task_id)
            if task is not None:
                task.cancelling = True
        if record.state is not TaskState.RUNNING:  # cancelled before it started: CANCELLED already
            with self._lock:
                if task is not None:
                    task.ended = True
                self._tasks.pop(record.task_id, None)
            self._delete_objects(state.job)
            return
        try:
            self._api().delete("jobs", state.job)
        except KubeError as exc:
            log.warning("provider %s: cannot cancel job %s: %s", self.name, state.job, exc)
        if task is not None:
            self._advance(task)

    def recover(self, record: TaskRecord, state: KubeJob | None) -> Recovered[KubeJob]:
        if state is None:
            return self.launch(record)
        try:
            found = self._api().get("jobs", state.job)
        except KubeError:
            found = {}  # unreachable now: followed, and the watch finds out
        if found is None:
            self._delete_objects(state.job)
            self._report(record.task_id, Lost(reason="its Job was deleted while flowd was down"))
            return Ended()
        return Running(state) if record.state is TaskState.RUNNING else Queued(state)

    def recovered(self) -> None:
        pass

    # --- exec -------------------------------------------------------------------------------

    def exec(self, record: TaskRecord, state: KubeJob, request: ExecRequest) -> ExecChannel:
        with self._lock:
            task = self._tasks.get(record.task_id)
            pods = sorted(
                (
                    p
                    for p in (task.pods.values() if task else ())
                    if p.running and p.exit_code is None and not p.deleted
                ),
                key=lambda p: p.node,
            )
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


def begin_gap(began: float, took: float) -> float:
    """Seconds between the kubelet taking the pod and the program starting (never negative)."""
    return max(0.0, began - took)
