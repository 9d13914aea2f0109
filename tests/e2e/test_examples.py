"""Every example in examples/ runs as documented."""

from __future__ import annotations

from conftest import REPO
from flow import Flow, TaskStatus


def test_train_example_runs_as_a_task_from_its_directory(flow: Flow) -> None:
    task = flow.run("python3 train.py --epochs 2", code_root=str(REPO / "examples")).wait(timeout=60)
    assert task.last_status is TaskStatus.COMPLETED, task.logs()
    lines = task.logs().splitlines()
    assert lines[0] == f"task {task.task_id}: training on synthetic, GPUs: none" or lines[0].startswith(
        f"task {task.task_id}"
    )
    assert sum("loss:" in line for line in lines) == 10
    assert lines[-1].startswith("done: accuracy=")
