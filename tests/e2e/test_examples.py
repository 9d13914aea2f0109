"""Every example in examples/ runs as documented."""

from __future__ import annotations

import pytest

from conftest import REPO, Daemon
from flow import Flow, TaskConfig, TaskStatus

EXAMPLES = REPO / "examples"


def test_train_example_runs_as_a_task_from_its_directory(flow: Flow) -> None:
    task = flow.run("python3 train.py --epochs 2", code_root=str(EXAMPLES)).wait(timeout=60)
    assert task.last_status is TaskStatus.COMPLETED, task.logs()
    lines = task.logs().splitlines()
    # A task that asked for no GPU sees none (CUDA_VISIBLE_DEVICES is empty): said as "none".
    assert lines[0] == f"task {task.task_id}: training on synthetic, GPUs: none"
    assert sum("loss:" in line for line in lines) == 10
    assert lines[-1].startswith("done: accuracy=")


def test_the_yaml_job_file_runs_from_the_cli(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "job.yaml", cwd=EXAMPLES)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith(": training on synthetic, GPUs: none")
    assert sum("loss:" in line for line in lines) == 10
    assert "COMPLETED" in done.stderr


def test_the_yaml_job_file_runs_from_the_sdk(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    assert TaskConfig.from_yaml(EXAMPLES / "job.yaml").name == "train-example"
    monkeypatch.chdir(EXAMPLES)
    task = flow.run("job.yaml").wait(timeout=60)
    assert (task.last_status, task.name) == (TaskStatus.COMPLETED, "train-example")
    assert task.logs().splitlines()[-1].startswith("done: accuracy=")
