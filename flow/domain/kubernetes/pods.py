"""What a task's pods say, as values: a pure reading of pod objects (the watch's events).

`pod_view` reads one pod; `task_view` combines the pods of one task into what the provider reports:
still pending (with the scheduler's reason), started, or ended (how, with which exit code). A node
whose pod was deleted without a recorded end counts as ended with an unknown code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

from attrs import frozen

from flow.domain.kubernetes.manifests import (
    CODE_ANNOTATION,
    CODE_CONTAINER,
    CODE_STREAMED,
    CONTAINER,
    DATA_CONTAINER,
    NODE_INDEX_ANNOTATION,
)
from flow.domain.kubernetes.volumes import claims_of
from flow.domain.task.multinode import group_outcome

PULL_ERRORS: Final = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_ERRORS: Final = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
EVICTIONS: Final = ("PreemptionByScheduler", "EvictionByEvictionAPI", "DeletionByTaintManager", "TerminationByKubelet")


class Ending(enum.Enum):
    EXITED = "exited"
    TIMED_OUT = "timed out"
    PREEMPTED = "preempted"
    COULD_NOT_START = "could not start"
    LOST = "lost"


@frozen
class PodView:
    name: str
    node: int  # the completion index (0 for a one-node task)
    pending_reason: str = ""  # why it is not scheduled ("0/5 nodes are available: ...")
    running: bool = False  # the task container runs (or ran)
    started_at: str = ""  # when it started (RFC 3339), as the kubelet says
    pod_started_at: str = ""  # when the kubelet took the pod
    exit_code: int | None = None  # once the task container ended
    reason: str = ""  # its termination reason (OOMKilled, Error, StartError, ...)
    message: str = ""  # its termination message (a function call's result)
    start_error: str = ""  # cannot start at all (image pull, config): the words to show
    timed_out: bool = False  # activeDeadlineSeconds
    evicted: str = ""  # why it was evicted or preempted
    deleted: bool = False  # the pod object is gone (or going)
    failed_without_exit: str = ""  # phase Failed with no container status (node lost, ...)
    awaits_code: bool = False  # its init container runs: it waits for a streamed code snapshot


def _waiting_problem(statuses: Sequence[Mapping[str, Any]], image: str) -> str:
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason", ""))
        message = str(waiting.get("message", "")).strip()
        if reason in PULL_ERRORS:
            pulled = status.get("image") or image
            return f"the image {pulled} cannot be pulled ({reason}: {message or 'no detail'})"
        if reason in CONFIG_ERRORS:
            return f"{reason}: {message or 'no detail'}"
    return ""


def pod_view(pod: Mapping[str, Any], deleted: bool = False) -> PodView:
    meta, status, spec = pod.get("metadata") or {}, pod.get("status") or {}, pod.get("spec") or {}
    annotations = meta.get("annotations") or {}
    try:
        node = int(str(annotations.get(NODE_INDEX_ANNOTATION, "0")))
    except ValueError:
        node = 0
    containers = {c.get("name"): c for c in spec.get("containers") or []}
    image = str((containers.get(CONTAINER) or {}).get("image", ""))
    conditions = status.get("conditions") or []
    pending = next(
        (
            str(c.get("message", ""))
            for c in conditions
            if c.get("type") == "PodScheduled" and c.get("status") == "False"
        ),
        "",
    )
    if "PersistentVolumeClaim" in pending:  # the scheduler does not say which: name the claims
        claims = claims_of(spec)
        if claims:
            pending += (
                f" (the task's volume claims: {', '.join(claims)}; a claim binds once a PersistentVolume "
                "of its storage class and size is there: kubectl describe pvc NAME)"
            )
    disruption = next(
        (c for c in conditions if c.get("type") == "DisruptionTarget" and c.get("status") == "True"), None
    )
    evicted = ""
    if status.get("reason") == "Evicted":
        evicted = str(status.get("message") or "evicted by the kubelet")
    elif disruption is not None and disruption.get("reason") in EVICTIONS:
        evicted = f"{disruption.get('reason')}: {disruption.get('message', '')}".strip(": ")
    main = next((s for s in status.get("containerStatuses") or [] if s.get("name") == CONTAINER), None)
    inits = [s for s in status.get("initContainerStatuses") or [] if s.get("name") == CODE_CONTAINER]
    data = [s for s in status.get("initContainerStatuses") or [] if s.get("name") == DATA_CONTAINER]
    start_error = _waiting_problem([*inits, *data, *([main] if main else [])], image)
    for init in inits:
        ended = (init.get("state") or {}).get("terminated") or {}
        if ended and ended.get("exitCode") not in (0, None):
            start_error = f"unpacking the code failed ({ended.get('reason', '')}, exit {ended.get('exitCode')})"
    for init in data:
        ended = (init.get("state") or {}).get("terminated") or {}
        if ended and ended.get("exitCode") not in (0, None):
            said = str(ended.get("message") or "").strip().splitlines()
            start_error = (
                f"syncing the data mounts failed: {said[-1] if said else 'exit ' + str(ended.get('exitCode'))}"
            )
    streamed = annotations.get(CODE_ANNOTATION) == CODE_STREAMED
    awaits_code = streamed and any("running" in (init.get("state") or {}) for init in inits)
    state = (main or {}).get("state") or {}
    running = "running" in state or "terminated" in state
    started_at = str((state.get("running") or state.get("terminated") or {}).get("startedAt") or "")
    terminated = state.get("terminated") or {}
    exit_code = terminated.get("exitCode") if terminated else None
    reason = str(terminated.get("reason", "")) if terminated else ""
    if reason == "StartError" or (reason == "ContainerCannotRun"):
        start_error = str(terminated.get("message", "")).strip() or reason
    failed_without_exit = ""
    if status.get("phase") == "Failed" and exit_code is None and not start_error:
        failed_without_exit = str(status.get("message") or status.get("reason") or "the pod failed")
    return PodView(
        name=str(meta.get("name", "")),
        node=node,
        pending_reason=pending,
        running=running and reason != "StartError",
        started_at=started_at,
        pod_started_at=str(status.get("startTime") or ""),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        reason=reason,
        message=str(terminated.get("message", "")) if terminated else "",
        start_error=start_error,
        timed_out=status.get("reason") == "DeadlineExceeded",
        evicted=evicted,
        deleted=deleted,
        failed_without_exit=failed_without_exit,
        awaits_code=awaits_code,
    )


@frozen
class TaskView:
    started: bool
    pending_reason: str
    ended: Ending | None  # None: not ended yet
    exit_code: int | None = None
    detail: str = ""  # words for the state reason
    stop_others: bool = False  # a node failed: the rest must be stopped (Kubernetes does, for a Job)


def _ended(pod: PodView) -> bool:
    return pod.exit_code is not None or pod.deleted or bool(pod.failed_without_exit) or bool(pod.start_error)


def task_view(num_nodes: int, pods: Sequence[PodView]) -> TaskView:
    """The task's state from its pods (the latest view of each node)."""
    by_node = {p.node: p for p in pods}
    started = any(p.running for p in pods)
    pending = next((p.pending_reason for p in pods if p.pending_reason), "")
    for pod in pods:
        if pod.start_error:
            return TaskView(started, pending, Ending.COULD_NOT_START, None, pod.start_error, stop_others=True)
    for pod in pods:
        if pod.evicted:
            return TaskView(started, pending, Ending.PREEMPTED, None, pod.evicted, stop_others=True)
    exits = [(p.node, p.exit_code) for p in pods if _ended(p)]
    outcome = group_outcome(num_nodes, exits)
    if not outcome.finished:
        if outcome.stop_others and len(by_node) < num_nodes:
            pass  # the nodes Kubernetes never created will not come: wait for the Job's pods only
        return TaskView(started, pending, None, stop_others=outcome.stop_others)
    decisive = by_node.get(outcome.failed_node if outcome.failed_node is not None else 0)
    code = outcome.exit_code
    detail = ""
    if decisive is not None:
        if decisive.reason and decisive.reason not in ("Completed", "Error"):
            detail = decisive.reason
            if decisive.reason == "OOMKilled":
                detail = "OOMKilled: the task went over its memory limit (memory_mb)"
        if any(p.timed_out for p in pods):
            return TaskView(started, pending, Ending.TIMED_OUT, code, "DeadlineExceeded")
        if code is None:
            why = decisive.failed_without_exit or "its pod was deleted before it ended"
            return TaskView(started, pending, Ending.LOST, None, why)
    return TaskView(started, pending, Ending.EXITED, code, detail)
