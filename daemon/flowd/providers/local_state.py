"""The local provider's runtime states: what flowd stores to find a local task again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from attrs import frozen

from flowd.providers.base import StateType


@frozen
class LocalWaiting:
    """Accepted, not started: waiting for its GPUs, or (`syncing`) for its s3:// data."""

    task_dir: str
    syncing: bool = False


@frozen
class LocalProcess:
    """One process (the wrapper), identified by pid and kernel start time. `warm`: a call in a
    warm worker (warm_workers.py), a process that outlives the call."""

    pid: int
    start_ticks: int | None
    task_dir: str
    gpus: tuple[int, ...] = ()
    cwd: str = ""
    warm: bool = False


@frozen
class LocalNode:
    pid: int
    start_ticks: int | None
    gpus: tuple[int, ...] = ()


@frozen
class LocalGroup:
    """A multi-node task: one wrapper per node (nodes/K/ under the task directory)."""

    task_dir: str
    nodes: tuple[LocalNode, ...]
    gpus: tuple[int, ...] = ()
    cwd: str = ""
    master_port: int = 0

    @property
    def pid(self) -> int:
        return self.nodes[0].pid


LocalState = LocalWaiting | LocalProcess | LocalGroup


def _legacy(data: Mapping[str, Any]) -> LocalState | None:
    """The dicts flowds before typed states stored ({"pid": ..}, {"queued": True, ..}, {"nodes": ..})."""
    task_dir = str(data.get("task_dir", ""))
    gpus = tuple(int(g) for g in data.get("gpus") or ())
    if data.get("queued") or data.get("syncing"):
        return LocalWaiting(task_dir=task_dir, syncing=bool(data.get("syncing")))
    if data.get("nodes"):
        nodes = tuple(
            LocalNode(pid=int(n["pid"]), start_ticks=n.get("start_ticks"), gpus=tuple(n.get("gpus") or ()))
            for n in data["nodes"]
        )
        return LocalGroup(
            task_dir=task_dir,
            nodes=nodes,
            gpus=gpus,
            cwd=str(data.get("cwd", "")),
            master_port=int(data.get("master_port", 0)),
        )
    if data.get("pid") is not None:
        return LocalProcess(
            pid=int(data["pid"]),
            start_ticks=data.get("start_ticks"),
            task_dir=task_dir,
            gpus=gpus,
            cwd=str(data.get("cwd", "")),
        )
    return None


LOCAL_STATES: Final = StateType(classes=(LocalWaiting, LocalProcess, LocalGroup), legacy=_legacy)
