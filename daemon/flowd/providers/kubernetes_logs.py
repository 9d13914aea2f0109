"""A Kubernetes task's files on this machine, and each running pod's output followed through the
pod log API into its node's log file (after a flowd restart, the bytes already mirrored are skipped),
its end marks left out and answered (flow.domain.kubernetes.output_end)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from attrs import evolve

from flow.domain.kubernetes.output_end import OUTPUT_IN, MarkScan, end_marks, scan
from flow.domain.task import task_files
from flow.domain.task.lifecycle import TaskRecord
from flowd.providers.kubernetes_api import KubeApi, KubeError
from flowd.providers.kubernetes_state import MAX_RETRY_SECONDS, RETRY_SECONDS, KubeTask
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)

MAX_READS_AFTER_END = 5  # reads of an ended container's log that still brought bytes (or failed)


class KubeLogs:
    """The task directories of one kubernetes provider, and the pods' output mirrored into them.
    `lock` is the one that guards the tasks' state (KubeTask), shared with the watch."""

    def __init__(
        self, name: str, tasks_root: Path, api: KubeApi | None, lock: threading.RLock, stop: threading.Event
    ) -> None:
        self.name = name
        self._tasks_root = tasks_root
        self._api = api
        self._lock = lock
        self._stop = stop

    def dir(self, task_id: str) -> TaskDir:
        return TaskDir(self._tasks_root / task_id)

    def _node_dir(self, task: KubeTask, node: int) -> TaskDir:
        base = self.dir(task.task_id)
        return base.node(node) if task.num_nodes > 1 else base

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        base = self.dir(record.task_id)
        if record.config.num_instances > 1:
            return [base.node(k).output for k in range(record.config.num_instances)]
        return [base.output]

    def create(self, task_id: str, num_nodes: int) -> None:
        """Makes the task's log files (one per node), empty until its pods say something."""
        base = self.dir(task_id)
        for node in range(num_nodes):
            (base.node(node) if num_nodes > 1 else base).touch(task_files.OUTPUT)

    def mirror(self, task: KubeTask, pod: str) -> bool:
        """Follows one pod's output into its node's log file until the container has ended; True
        once its output is all in (False: following it failed, or flowd is closing)."""
        try:
            self._mirror_until_ended(task, pod)
        except Exception:
            if not self._stop.is_set():  # (closing: the client went away under it)
                log.exception("provider %s: following the output of pod %s failed", self.name, pod)
            return False
        return True

    def _mirror_until_ended(self, task: KubeTask, pod: str) -> None:
        assert self._api is not None
        with self._lock:
            view = task.pods.get(pod)
        node = view.node if view is not None else 0
        out = self._node_dir(task, node)
        out.touch(task_files.OUTPUT)
        marks = _restored_marks(out, task.task_id)
        told = False  # the wrapper has been told its output is in (output_end)
        pause = RETRY_SECONDS
        reads_after_end = 0
        while not self._stop.is_set():
            failed: Exception | None = None
            got = 0
            try:
                # The log API counts the marks left out of the file: a new stream starts after them.
                marks = evolve(marks, held=b"")
                skip = out.output.stat().st_size + marks.stripped
                for chunk in self._api.follow_log(pod, skip, self._stop):
                    got += len(chunk)
                    before = marks.stripped
                    marks, data = scan(marks, chunk)
                    if data:
                        out.append_at(task_files.OUTPUT, out.output.stat().st_size, data)
                    if marks.stripped != before:
                        out.write(task_files.OUTPUT_MARKS, _marks_record(marks))
                    if marks.complete and not told:
                        told = self._say_output_in(pod)
            except KubeError as exc:
                failed = exc
            except Exception as exc:  # a stream error the client does not wrap: followed again, not given up
                if self._stop.is_set():
                    return
                log.exception("provider %s: following the output of pod %s failed (retrying)", self.name, pod)
                failed = exc
            if marks.complete and not told:
                told = self._say_output_in(pod)
            with self._lock:
                now = task.pods.get(pod)
                over = now is None or now.deleted or now.exit_code is not None
            if over or task.ended:
                # The kubelet may close a follow as the container exits, before the runtime has
                # written its last bytes (seen: a log cut mid-line), and a stream can break as it
                # ends: read what the ended container left until a read brings nothing new.
                if (failed is not None or got) and reads_after_end < MAX_READS_AFTER_END and not task.ended:
                    reads_after_end += 1
                    continue
                if failed is not None:  # e.g. a node without a kubelet to ask (a virtual node)
                    log.info("provider %s: the output of pod %s cannot be read: %s", self.name, pod, failed)
                break
            self._stop.wait(pause)  # the stream ended early (a kubelet restart), or failed: again
            pause = min(pause * 2, MAX_RETRY_SECONDS) if failed is not None else RETRY_SECONDS
        if marks.held and not self._stop.is_set():  # what looked like the start of a mark was output
            out.append_at(task_files.OUTPUT, out.output.stat().st_size, marks.held)

    def _say_output_in(self, pod: str) -> bool:
        """Tells the pod's wrapper that its program's output is all in, so the container may end
        (output_end); False if the cluster did not take it (the wrapper stops waiting by itself)."""
        assert self._api is not None
        try:
            channel = self._api.exec(pod, ("sh", "-c", f": > {OUTPUT_IN}"), False)
            for _ in iter(channel.read, None):
                pass
            return channel.wait() == 0
        except (KubeError, OSError) as exc:
            log.info("provider %s: could not tell pod %s its output is in: %s", self.name, pod, exc)
            return False


def _restored_marks(out: TaskDir, task_id: str) -> MarkScan:
    """The marks seen before a flowd restart (none for a new pod)."""
    state = MarkScan(end_marks(task_id))
    record = (out.read(task_files.OUTPUT_MARKS) or b"").decode("ascii", "replace").split()
    if len(record) == 2 and record[0].isdigit():
        seen = frozenset(int(i) for i in record[1].split(",") if i.isdigit() and int(i) < len(state.marks))
        state = evolve(state, stripped=int(record[0]), seen=seen)
    return state


def _marks_record(marks: MarkScan) -> bytes:
    return f"{marks.stripped} {','.join(str(i) for i in sorted(marks.seen))}\n".encode()
