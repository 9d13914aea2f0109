"""Multi-node tasks of the local provider: the effects around flow.domain.task.multinode.

Node K of a task lives in `<task dir>/nodes/K/` (its output.log and exit_status, written by the
same wrapper as a single-node task) and is watched under the key "<task id>@K". The tracker
remembers, per task, which nodes have ended with which status; the pure `group_outcome` decides
what that means (stop the others, end the task).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Final

from attrs import define, field

from flow.domain.task.multinode import GroupOutcome, group_outcome

NODES_DIR: Final = "nodes"
NODE_KEY_SEPARATOR: Final = "@"


def node_dir(task_dir: Path, node: int) -> Path:
    return task_dir / NODES_DIR / str(node)


def node_key(task_id: str, node: int) -> str:
    return f"{task_id}{NODE_KEY_SEPARATOR}{node}"


def split_node_key(key: str) -> tuple[str, int] | None:
    """'<task id>@K' -> (task id, K); None for a plain task id."""
    task_id, sep, node = key.rpartition(NODE_KEY_SEPARATOR)
    if not sep or not node.isdigit():
        return None
    return task_id, int(node)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it), for MASTER_PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@define
class _Group:
    num_nodes: int
    exits: list[tuple[int, int | None]] = field(factory=list)
    timed_out: bool = False
    stopping: bool = False  # the others were told to stop already


@define
class NodeTracker:
    """Which nodes of which multi-node tasks have ended (thread-safe)."""

    _lock: threading.Lock = field(factory=threading.Lock)
    _groups: dict[str, _Group] = field(factory=dict)

    def begin(self, task_id: str, num_nodes: int) -> None:
        with self._lock:
            self._groups.setdefault(task_id, _Group(num_nodes))

    def ended(
        self, task_id: str, node: int, code: int | None, timed_out: bool
    ) -> tuple[GroupOutcome, tuple[int, ...], bool] | None:
        """Records a node's end. Returns the outcome, the nodes to stop now (those still running,
        the first time a node fails; else none) and whether the task timed out; None for a task
        not tracked (any more)."""
        with self._lock:
            group = self._groups.get(task_id)
            if group is None:
                return None
            group.exits.append((node, code))
            group.timed_out = group.timed_out or timed_out
            outcome = group_outcome(group.num_nodes, group.exits)
            stop: tuple[int, ...] = ()
            if outcome.stop_others and not group.stopping:
                group.stopping = True
                done = {n for n, _ in group.exits}
                stop = tuple(n for n in range(group.num_nodes) if n not in done)
            if outcome.finished:
                del self._groups[task_id]
            return outcome, stop, group.timed_out

    def running(self, task_id: str, num_nodes: int) -> tuple[int, ...]:
        """The nodes of a task not seen to end (all of them for a task not watched yet)."""
        with self._lock:
            group = self._groups.get(task_id)
            done = {n for n, _ in group.exits} if group is not None else set()
        return tuple(n for n in range(num_nodes) if n not in done)
