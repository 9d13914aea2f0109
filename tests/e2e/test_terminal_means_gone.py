"""A task is terminal, and its GPUs go to the next task, only once every process of every node of
it is gone; cancel likewise (issue 15 #13: a multi-node task turned FAILED while a node was still
alive). Processes in process groups of their own (a shell's job control) count too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import pid_alive, wait_until
from flow import Flow, TaskStatus

# `set -m`: the background job gets a process group of its own, in the task's session.
LEFTOVER = "set -m; sleep 600 & echo $! > {pid}; "


def _pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().endswith("\n"), 30)
    return int(path.read_text())


def test_a_task_that_leaves_a_process_behind_ends_only_once_it_is_gone(flow: Flow, tmp_path: Path) -> None:
    pid = tmp_path / "pid"
    task: Any = flow.run(["bash", "-c", LEFTOVER.format(pid=pid) + "exit 0"], upload_code=False)
    final = task.wait(timeout=60)
    assert final.last_status is TaskStatus.COMPLETED
    assert not pid_alive(_pid(pid))  # gone when COMPLETED was reported, not later


def test_cancel_ends_once_every_process_is_gone(flow: Flow, tmp_path: Path) -> None:
    pid = tmp_path / "pid"
    script = LEFTOVER.format(pid=pid) + "trap '' TERM; while :; do sleep 0.05; done"
    task: Any = flow.run(["bash", "-c", script], upload_code=False)
    leftover = _pid(pid)
    task.cancel()
    final = task.wait(timeout=60)
    assert final.last_status is TaskStatus.CANCELLED
    assert not pid_alive(leftover)


def test_a_multi_node_task_fails_only_once_every_node_is_gone(flow: Flow, tmp_path: Path) -> None:
    script = (
        f'if [ "$NODE_RANK" = 1 ]; then while [ ! -s {tmp_path}/pid0 ]; do sleep 0.02; done; exit 9; fi; '
        + LEFTOVER.format(pid=f"{tmp_path}/pid0")
        + "trap '' TERM; while :; do sleep 0.05; done"
    )
    task: Any = flow.run(["bash", "-c", script], num_instances=2, upload_code=False)
    final = task.wait(timeout=60)  # node 0 ignores SIGTERM: killed after the grace period
    assert (final.last_status, final.exit_code) == (TaskStatus.FAILED, 9)
    assert not pid_alive(_pid(tmp_path / "pid0"))
