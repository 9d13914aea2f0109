"""Secrets reach the task and nothing else: not the logs, listings, errors, YAML or other tasks."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat

import grpc
import pytest

from conftest import Daemon
from flow import Flow, TaskConfig, TaskStatus
from flow.errors import ValidationError
from flowapi.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc


def test_a_canary_secret_reaches_the_task_and_no_output_channel(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "canary-" + secrets.token_hex(16)
    monkeypatch.setenv("WANDB_API_KEY", canary)
    client: Flow = daemon.client()
    config = TaskConfig(
        command=["sh", "-c", 'printf %s "$WANDB_API_KEY" | sha256sum | cut -c1-64'],  # proof, not the value
        secret_env=["WANDB_API_KEY"],
        upload_code=False,
    )
    task = client.run(config).wait(timeout=30)
    assert (task.last_status, task.logs()) == (TaskStatus.COMPLETED, hashlib.sha256(canary.encode()).hexdigest() + "\n")

    seen: list[str] = []
    seen.append(TaskConfig(secret_env=["WANDB_API_KEY"]).to_yaml())
    seen.append(repr(client.get_task(task.task_id).config))
    seen.append(json.dumps([t.to_dict() for t in client.list_tasks()]))
    stub = task_service_pb2_grpc.TaskServiceStub(grpc.insecure_channel(daemon.home.address))
    raw = stub.GetTask(task_service_pb2.GetTaskRequest(name=f"tasks/{task.task_id}"), timeout=10)
    assert dict(raw.task.spec.secret_env) == {"WANDB_API_KEY": ""}
    seen.append(raw.SerializeToString().decode("latin-1"))
    seen.append(stub.ListTasks(task_service_pb2.ListTasksRequest(), timeout=10).SerializeToString().decode("latin-1"))
    for args in (("status", "--json"), ("status", task.task_id, "--json"), ("logs", task.task_id)):
        seen.append(daemon.flow_cli(*args).stdout)
    # An error about the secret never repeats it.
    bad = task_pb2.TaskSpec(command=["true"], secret_env={"WANDB_API_KEY": canary + "\x00"})
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateTask(task_service_pb2.CreateTaskRequest(spec=bad), timeout=10)
    seen.append(caught.value.details())
    seen.append(str(caught.value.trailing_metadata()))
    seen.append(daemon.home.daemon_log.read_text())
    for text in seen:
        assert canary not in text
    # Where the value must live (to start the task after a restart), the file is private.
    assert stat.S_IMODE(os.stat(daemon.home.database).st_mode) == 0o600


def test_a_missing_secret_is_refused_before_submit(flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ValidationError, match="NOT_SET_ANYWHERE"):
        flow.run(["true"], secret_env=["NOT_SET_ANYWHERE"], upload_code=False)


def test_a_secret_cannot_also_be_in_clear_env() -> None:
    with pytest.raises(ValidationError) as caught:
        TaskConfig(env={"TOKEN": "x"}, secret_env=["TOKEN"])
    assert [v.field for v in caught.value.violations] == ["secret_env[0]"]
    assert "x" not in caught.value.violations[0].description.replace("e.g.", "")


def test_daemon_secrets_never_reach_tasks(daemon: Daemon) -> None:
    client: Flow = daemon.client()
    listing = client.run(["sh", "-c", "env | cut -d= -f1"], upload_code=False).wait(timeout=30).logs().split()
    assert "MITHRIL_API_KEY" not in listing and "FLOW_DAEMON_TOKEN" not in listing


def _holds(daemon: Daemon, text: str) -> bool:
    """Whether any byte of flowd's database as it lies on disk (its WAL included) holds `text`."""
    root = daemon.home.database
    return any(text.encode() in p.read_bytes() for p in root.parent.glob(root.name + "*") if p.is_file())


def test_a_finished_tasks_secret_values_are_erased_and_its_names_kept(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "canary-" + secrets.token_hex(16)
    monkeypatch.setenv("WANDB_API_KEY", canary)
    client: Flow = daemon.client()  # type: ignore[assignment]
    live = client.run(TaskConfig(command=["sleep", "600"], secret_env=["WANDB_API_KEY"], upload_code=False))
    done = client.run(TaskConfig(command=["true"], secret_env=["WANDB_API_KEY"], upload_code=False)).wait(timeout=30)
    assert done.last_status is TaskStatus.COMPLETED
    live.cancel()
    assert live.wait(timeout=30).last_status is TaskStatus.CANCELLED
    assert not _holds(daemon, canary)  # not in a row, a freed page or the WAL
    for task in (done, live):
        assert client.get_task(task.task_id).config.secret_env == ("WANDB_API_KEY",)  # the names remain


def test_secret_values_left_by_an_older_flowd_are_erased_at_start(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    monkeypatch.setenv("WANDB_API_KEY", "placeholder")
    client: Flow = daemon.client()  # type: ignore[assignment]
    task = client.run(TaskConfig(command=["true"], secret_env=["WANDB_API_KEY"], upload_code=False)).wait(timeout=30)
    daemon.stop()
    canary = "canary-" + secrets.token_hex(16)
    with sqlite3.connect(daemon.home.database) as db:  # what an older flowd kept for finished tasks
        db.execute(
            "UPDATE tasks SET record = json_set(record, '$.secrets', json(?)) WHERE task_id = ?",
            (json.dumps({"WANDB_API_KEY": canary}), task.task_id),
        )
    db.close()
    assert _holds(daemon, canary)
    daemon.start()
    assert not _holds(daemon, canary)
    again: Flow = daemon.client()  # type: ignore[assignment]
    assert again.get_task(task.task_id).config.secret_env == ("WANDB_API_KEY",)
