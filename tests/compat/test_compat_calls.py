"""flow-compute's spellings of the SDK's calls, through a real flowd and the local provider: the
default client of `flow.run`, run's waiting and dry runs, a Task outliving its client, the
volumes sub-client's refusals, log_stream and shell, and map's flow-compute keywords."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flow
from conftest import Daemon
from flow.errors import (
    ProviderCapabilityError,
    RemoteExecutionError,
    TaskExecutionError,
    ValidationError,
    VolumeError,
)

FNS = """
from flow import FlowApp

app = FlowApp()


@app.function()
def div(a, b=1):
    return a / b
"""


@pytest.fixture
def home(shared_daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOW_HOME", str(shared_daemon.home.root))
    monkeypatch.delenv("FLOW_PROVIDER", raising=False)
    return shared_daemon.home.root


@pytest.fixture
def client(shared_daemon: Daemon) -> Iterator[Any]:
    made = shared_daemon.client()
    yield made
    made.close()


def test_flow_run_uses_the_default_client_of_the_environment(
    shared_daemon: Daemon, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_HOME", str(shared_daemon.home.root))
    first = flow.run("true", upload_code=False)
    monkeypatch.setenv("FLOW_HOME", str(daemon.home.root))
    second = flow.run("true", upload_code=False, wait_until="terminal")
    assert second.status == "completed"
    assert [t.task_id for t in daemon.client().list_tasks()] == [second.task_id]
    assert first.task_id in [t.task_id for t in shared_daemon.client().list_tasks()]
    assert first.wait(timeout=120).status == "completed"  # its client was replaced, not closed


def test_run_checks_its_waiting_keywords_before_submitting(home: Path, client: Any) -> None:
    before = len(client.list_tasks(limit=1000))
    with pytest.raises(ValidationError, match="until='soon' is not something to wait for"):
        flow.run("true", upload_code=False, wait_until="soon")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_wait_seconds=0 must be a positive number"):
        flow.run("true", upload_code=False, wait_until="terminal", max_wait_seconds=0)
    assert len(client.list_tasks(limit=1000)) == before
    running = flow.run("sleep 30", upload_code=False, wait_until="running", max_wait_seconds=None)
    assert running.status == "running"
    running.cancel()
    done = flow.run("echo fast", upload_code=False, wait_until="running")  # running, or already finished
    assert done.status in ("running", "completed")


def test_a_dry_run_handle_answers_from_memory_and_refuses_the_rest(client: Any) -> None:
    handle = client.run("echo never", upload_code=False, dry_run=True)
    assert (handle.task_id, handle.status, handle.dry_run, handle.is_terminal) == ("", "PENDING", True, False)
    assert handle.status == "pending" and not handle.is_running
    assert handle.refresh() is handle
    for call in (handle.wait, handle.result, handle.cancel, handle.logs, lambda: list(handle.log_stream())):
        with pytest.raises(ValidationError, match="handle of a dry run"):
            call()
    assert client.validate("echo never", upload_code=False).dry_run
    assert not client.run("true", upload_code=False).dry_run


def test_a_task_keeps_working_after_its_client_is_closed(shared_daemon: Daemon) -> None:
    with shared_daemon.client() as f:
        done = f.run("echo after-close", upload_code=False)
        held = f.run("sleep 60", upload_code=False)
    assert done.wait(timeout=120).status == "completed"  # each call reopens the connection
    assert done.logs() == "after-close\n"
    assert held.status in ("pending", "running")
    held.cancel()
    assert held.wait(timeout=120).status == "cancelled"
    assert f.status(done.task_id) == "completed"  # the closed client itself too


def test_list_tasks_takes_states_by_name_in_either_case(client: Any) -> None:
    done = client.run("true", upload_code=False, wait_until="terminal")
    for status in (
        "completed",
        "COMPLETED",
        "Completed",
        ["completed", "FAILED"],
        ("cancelled", flow.TaskStatus.COMPLETED),
    ):
        assert done.task_id in [t.task_id for t in client.list_tasks(status=status, limit=1000)], status
    assert done.task_id not in [t.task_id for t in client.list_tasks(status="failed", limit=1000)]
    with pytest.raises(ValidationError, match="status='done' is not a task state") as raised:
        client.list_tasks(status="done")
    assert "COMPLETED" in " ".join(raised.value.suggestions)
    with pytest.raises(ValidationError, match="status='c' is not a task state"):
        client.list_tasks(status=["c"])


def test_a_log_stream_survives_its_client_being_closed_mid_stream(shared_daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with shared_daemon.client() as f:
        task = f.run(f"echo one; while [ ! -e {gate} ]; do sleep 0.05; done; echo two", upload_code=False)
        lines = task.log_stream()
        assert next(lines) == "one"
    gate.touch()  # the client is closed now; the stream goes on
    assert list(lines) == ["two"]
    assert task.status == "completed"


def test_log_stream_keywords_and_shell(client: Any) -> None:
    task = client.run("echo out; echo err >&2; echo; sleep 30", upload_code=False, wait_until="running")
    try:
        with pytest.raises(ValidationError, match="log_stream\\(stream='stderr'\\): a task's output here"):
            task.log_stream(stream="stderr")
        with pytest.raises(ValidationError, match="source="):
            task.log_stream(source="host")
        with pytest.raises(RemoteExecutionError, match="exited with code 3") as raised:
            task.shell("exit 3", capture_output=True)
        assert raised.value.exit_code == 3
        with pytest.raises(ValidationError, match="node=1"):
            task.shell("true", node=1)
        assert task.shell("echo inside", capture_output=True) == "inside\n"
    finally:
        task.cancel()
    assert list(task.log_stream(stream="combined"))[:2] == ["out", "err"]  # the empty line is left out
    with pytest.raises(AttributeError, match=r"flow-compute's Task\.total_cost is not provided here"):
        task.total_cost  # noqa: B018 - the access is the test


def test_volume_sub_client_refusals(client: Any) -> None:
    with pytest.raises(ValidationError, match="region='us-east-1'"):
        client.volumes.create(size_gb=1, name="x", region="us-east-1")
    with pytest.raises(VolumeError, match="No volume with id or name 'no-such-volume'"):
        client.volumes.get("no-such-volume")
    with pytest.raises(ProviderCapabilityError, match="not to a running task") as raised:
        client.volumes.mount("vol-0123456789", "t-1")
    assert isinstance(raised.value, NotImplementedError)
    assert "VolumeSpec(volume_id='vol-0123456789', mount_path='/volumes/NAME')" in str(raised.value)


def test_map_keywords_of_flow_compute(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fns_compat.py").write_text(FNS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fns_compat", None)
    from fns_compat import div  # type: ignore[import-not-found]

    assert div.map([4, 2], kwargs={"b": 2}) == [2, 1]
    failed = div.map([4, 2], kwargs={"b": 0}, return_exceptions=True)
    assert all(isinstance(e, TaskExecutionError) and isinstance(e, ZeroDivisionError) for e in failed)
    failing = div.starmap([(1, 0), (6, 3)], return_exceptions=True, max_concurrent=1)
    assert isinstance(failing[0], ZeroDivisionError) and failing[1] == 2
    assert sorted(div.map([1, 2, 3], order_outputs=False)) == [1, 2, 3]
    with pytest.raises(ZeroDivisionError):
        div.starmap([(1, 0)])


MOVER = """
import flow

app = flow.FlowApp()


class Point:
    def __init__(self, x):
        self.x = x


@app.cls(encoding="pickle")
class Mover:
    step: int = flow.param(default=1)

    @flow.on_enter()
    def setup(self):
        self.origin = Point(100)

    @flow.remote()
    def move(self, p):
        return Point(p.x + self.step + self.origin.x)
"""


def test_a_class_call_with_pickled_arguments(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cloudpickle")
    (tmp_path / "mover_compat.py").write_text(MOVER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mover_compat", None)
    from mover_compat import Mover, Point  # type: ignore[import-not-found]

    task = Mover(step=5).move.spawn(Point(1))
    assert task.name == "Mover-move"
    assert task.result().x == 106
