"""Following a kubernetes provider's tasks: the one pod watch (list, then watch, listed again
when it is too old or breaks), each pod event onto its task's course, and the task's end once its
pods have ended and their output is in. The course itself is described in flowd.providers.kubernetes."""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from attrs import evolve

from flow.domain.kubernetes.manifests import PROVIDER_LABEL, TASK_LABEL, deadline_seconds
from flow.domain.kubernetes.pods import Ending, PodView, pod_view, task_view
from flow.domain.task import task_files
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
from flowd.providers.base import Reporter
from flowd.providers.kubernetes_api import KubeApi, KubeError, WatchExpiredError
from flowd.providers.kubernetes_launch import KubeLauncher
from flowd.providers.kubernetes_logs import KubeLogs
from flowd.providers.kubernetes_state import MAX_RETRY_SECONDS, RETRY_SECONDS, KubeJob, KubeTask

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS: Final = 5


def _timestamp(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, OverflowError):
        return None


class KubeWatch:
    """The tasks one kubernetes provider follows, and the pod watch that moves them along.
    `lock` guards the tasks' state (KubeTask), shared with KubeLogs."""

    def __init__(
        self,
        name: str,
        api: KubeApi | None,
        reporter: Reporter,
        logs: KubeLogs,
        launcher: KubeLauncher,
        lock: threading.RLock,
        stop: threading.Event,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self._api = api
        self._report = reporter
        self._logs = logs
        self._launcher = launcher
        self._lock = lock
        self._stop = stop
        self._clock = clock
        self._tasks: dict[str, KubeTask] = {}
        self._seen: dict[str, dict[str, PodView]] = {}  # every labelled pod seen, by task
        self._last_warning = -60.0
        self._watcher = threading.Thread(target=self._watch_loop, name=f"watch-{name}", daemon=True)

    def start(self) -> None:
        self._watcher.start()

    def follow(self, record: TaskRecord, state: KubeJob) -> None:
        task = KubeTask(
            task_id=record.task_id,
            job=state.job,
            num_nodes=state.num_nodes,
            function_call=record.function_call is not None,
            deadline=deadline_seconds(record.config),
            started=record.state is TaskState.RUNNING,
            code_digest=record.code_digest,
        )
        self._logs.create(record.task_id, state.num_nodes)
        with self._lock:
            self._tasks[record.task_id] = task
            task.pods.update(self._seen.get(record.task_id, {}))
        self._advance(task)

    def running_pods(self, task_id: str) -> list[PodView]:
        """The task's pods whose program runs now, first node first."""
        with self._lock:
            task = self._tasks.get(task_id)
            return sorted(
                (
                    p
                    for p in (task.pods.values() if task else ())
                    if p.running and p.exit_code is None and not p.deleted
                ),
                key=lambda p: p.node,
            )

    def _warn(self, message: str) -> None:
        now = self._clock()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%s", message)

    def _watch_loop(self) -> None:
        selector = f"{PROVIDER_LABEL}={self.name}"
        pause = RETRY_SECONDS
        while not self._stop.is_set():
            if self._api is None:
                return
            try:
                pods, version = self._api.list_pods(selector)
                pause = RETRY_SECONDS
                self._resync(pods)
                while not self._stop.is_set():
                    for kind, pod in self._api.watch_pods(selector, version, self._stop):
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

    def _advance(self, task: KubeTask) -> None:
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
                # Every pod whose output is being followed, also one that has stopped running by
                # now: its last bytes may still be on their way into its log file.
                logs_in = set(task.followers) <= task.logs_done
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
        state = KubeJob(task.job, self._api.namespace if self._api else "", task.num_nodes)
        if started:
            self._report(task.task_id, Started(), state)
        if pending:
            self._report(task.task_id, Preparing(reason=f"waiting for a node: {pending}"))
        for pod in deadlines:
            self._set_deadline(task, pod)
        if ending is not None:
            self._finish(task, ending, pods)

    def _set_deadline(self, task: KubeTask, pod: PodView) -> None:
        """The pod's clock started before its program did: the deadline becomes exactly
        max_run_time_hours from the program's start (it may only shrink)."""
        began, took = _timestamp(pod.started_at), _timestamp(pod.pod_started_at)
        if began is None or took is None or task.deadline is None or self._api is None:
            return
        try:
            self._api.patch(
                "pods", pod.name, {"spec": {"activeDeadlineSeconds": int(begin_gap(began, took)) + task.deadline}}
            )
        except KubeError as exc:
            log.info("provider %s: pod %s keeps its deadline allowance: %s", self.name, pod.name, exc)

    def _mirror(self, task: KubeTask, pod: str) -> None:
        if not self._logs.mirror(task, pod) and self._stop.is_set():
            return  # closing: a restarted flowd follows it again
        with self._lock:  # (a stream that failed for good was logged: the output is what it is)
            task.logs_done.add(pod)
        self._advance(task)

    def _deliver(self, task: KubeTask, pod: str) -> None:
        """Streams the code into the pod (KubeLauncher.stream_code). A stream that breaks before
        the command's end is known is tried again (unpacking twice is harmless); a few such breaks
        in a row, or tar's refusal, fail the task."""
        code, said, answered = self._launcher.stream_code(task.code_digest, pod)
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

    def _fail(self, task: KubeTask, reason: str) -> None:
        """Ends the task FAILED ("could not start: ...") and deletes what it left."""
        with self._lock:
            if task.ended:
                return
            task.ended = True
            self._tasks.pop(task.task_id, None)
        self.delete_objects(task.job)
        self._report(task.task_id, LaunchFailed(reason=reason))

    def _finish(self, task: KubeTask, seen: Any, pods: list[PodView]) -> None:
        if task.function_call:
            first = next((p for p in pods if p.node == 0 and p.message), None)
            if first is not None:
                self._logs.dir(task.task_id).write(task_files.RESULT, first.message.encode())
        self.delete_objects(task.job)
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
                task.task_id, Started(), KubeJob(task.job, self._api.namespace if self._api else "", task.num_nodes)
            )
        self._report(task.task_id, event)

    def delete_objects(self, job: str) -> None:
        if self._api is None:
            return
        for kind in ("jobs", "services", "secrets", "configmaps"):
            try:
                self._api.delete(kind, job)
            except KubeError as exc:
                log.warning("provider %s: could not delete %s %s: %s", self.name, kind, job, exc)

    def cancel(self, record: TaskRecord, state: KubeJob, api: Callable[[], KubeApi]) -> None:
        with self._lock:
            task = self._tasks.get(record.task_id)
            if task is not None:
                task.cancelling = True
        if record.state is not TaskState.RUNNING:  # cancelled before it started: CANCELLED already
            with self._lock:
                if task is not None:
                    task.ended = True
                self._tasks.pop(record.task_id, None)
            self.delete_objects(state.job)
            return
        try:
            api().delete("jobs", state.job)
        except KubeError as exc:
            log.warning("provider %s: cannot cancel job %s: %s", self.name, state.job, exc)
        if task is not None:
            self._advance(task)


def begin_gap(began: float, took: float) -> float:
    """Seconds between the kubelet taking the pod and the program starting (never negative)."""
    return max(0.0, began - took)
