"""Warm functions (`@app.function(keep_warm=N)`): calls run in worker processes that imported the
module once, through a real flowd and the local provider (daemon/flowd/providers/warm_workers.py)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Daemon, pid_alive, wait_until
from flow import FlowApp, TaskStatus
from flow.domain.task.function_call import MAX_KEEP_WARM, FunctionCall
from flow.errors import TaskExecutionError, ValidationError
from flow.transport.grpc_channel import translate
from flow.wire.function_codec import function_call_from_proto, function_call_to_proto
from flowapi.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

MODULE = """
import os
import sys
import time
from pathlib import Path

from flow import FlowApp

app = FlowApp()
VERSION = "one"
CALLS = []


def where():
    return {"pid": os.getpid(), "warm": "--worker" in sys.argv, "calls": len(CALLS), "version": VERSION}


@app.function(keep_warm=1)
def count(tag="call"):
    CALLS.append(tag)
    print(f"calling {tag} in {os.getpid()}")
    return where()


@app.function(keep_warm=1)
def add(a, b=1):
    return a + b


@app.function(keep_warm=1)
def fail(x):
    CALLS.append("fail")
    raise KeyError(f"no key {x}")


@app.function(keep_warm=1)
def block(marker, release):
    Path(marker).write_text(str(os.getpid()))
    while not Path(release).exists():
        time.sleep(0.01)
    return where()


@app.function(keep_warm=1, max_run_time_hours=2.0 / 3600)
def stuck(marker):
    Path(marker).write_text(str(os.getpid()))
    time.sleep(600)


@app.function(keep_warm=2)
def pair(marker, release):
    Path(marker).write_text(str(os.getpid()))
    while not Path(release).exists():
        time.sleep(0.01)
    return where()


@app.function()
def cold():
    CALLS.append("cold")
    return where()


@app.cls(keep_warm=1)
class Counter:
    @__import__("flow").remote()
    def tick(self):
        CALLS.append("tick")
        return where()
"""


def load(project: Path) -> ModuleType:
    sys.modules.pop("warm_fns", None)
    import importlib

    return importlib.import_module("warm_fns")


def make_project(root: Path, monkeypatch: pytest.MonkeyPatch, daemon: Daemon) -> Path:
    """The code root (the current directory); the calls' marker files go beside it, in signals/,
    since a file written into the code root would make the next call's snapshot a new one."""
    project = root / "project"
    project.mkdir()
    (root / "signals").mkdir()
    (project / "warm_fns.py").write_text(MODULE)
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("FLOW_HOME", str(daemon.home.root))
    return project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_daemon: Daemon) -> Iterator[Path]:
    yield make_project(tmp_path, monkeypatch, shared_daemon)
    module = sys.modules.pop("warm_fns", None)
    if module is not None:
        module.app.flow.close()


OTHER_MODULE = """
import os

from flow import FlowApp

app = FlowApp()


@app.function(keep_warm=1)
def ping():
    return os.getpid()
"""


def test_a_worker_stays_warm_while_other_functions_start_and_retire_theirs(project: Path) -> None:
    (project / "other_fns.py").write_text(OTHER_MODULE)  # before the first call: one snapshot throughout
    sys.modules.pop("other_fns", None)
    import importlib

    fns, other = load(project), importlib.import_module("other_fns")
    try:
        first = fns.count.remote("first")
        assert first["warm"]
        other.ping.remote()  # another module's worker starts beside it
        assert fns.count.remote("second")["pid"] == first["pid"]
        with pytest.raises(KeyError):
            fns.fail.remote("x")  # its worker retires (it raised), and a fresh one starts next
        assert fns.count.remote("third")["pid"] != first["pid"]
        fourth = fns.count.remote("fourth")  # the fresh one, warm again
        assert fourth["warm"] and fns.count.remote("fifth")["pid"] == fourth["pid"]
    finally:
        other.app.flow.close()
        sys.modules.pop("other_fns", None)


def test_warm_calls_return_values_and_raise_what_the_function_raised(project: Path) -> None:
    fns = load(project)
    assert fns.add.remote(2, 3) == 5
    assert fns.add.remote(40, b=2) == 42
    with pytest.raises(KeyError) as raised:
        fns.fail.remote("x")
    assert isinstance(raised.value, TaskExecutionError)
    assert "no key x" in str(raised.value)


def test_calls_of_a_keep_warm_1_function_share_one_process_and_its_module_state(project: Path) -> None:
    fns = load(project)
    first = fns.count.remote("a")
    second = fns.count.remote("b")
    assert first["warm"] and second["warm"]
    assert second["pid"] == first["pid"]
    assert second["calls"] == first["calls"] + 1  # the module's globals carried over, as documented


def test_each_warm_call_is_a_task_with_its_own_log(project: Path) -> None:
    fns = load(project)
    first = fns.count.spawn("one")
    assert first.result()["warm"]
    second = fns.count.spawn("two")
    assert second.result()["warm"]
    assert second.status is TaskStatus.COMPLETED
    assert "calling two" in second.logs()
    assert "calling one" not in second.logs()
    assert first.task_id != second.task_id


def test_a_call_that_raised_leaves_no_state_behind_the_next_call_gets_a_fresh_worker(project: Path) -> None:
    fns = load(project)
    before = fns.count.remote()
    with pytest.raises(KeyError):
        fns.fail.remote(1)  # same module, same worker: it raised there
    after = fns.count.remote()
    assert after["warm"]
    assert after["pid"] != before["pid"]
    assert after["calls"] == 1  # a new interpreter: nothing of the failed call's module state
    wait_until(lambda: not pid_alive(before["pid"]), 60)


def test_an_edited_module_gets_a_new_worker_that_sees_the_edit(project: Path) -> None:
    fns = load(project)
    before = fns.count.remote()
    assert before["version"] == "one"
    source = project / "warm_fns.py"
    source.write_text(source.read_text().replace('VERSION = "one"', 'VERSION = "two"'))
    after = fns.count.remote()
    assert after["version"] == "two"
    assert after["pid"] != before["pid"]
    assert after["warm"]
    wait_until(lambda: not pid_alive(before["pid"]), 60)  # the old snapshot's idle worker retired


def test_cancel_kills_a_warm_call_and_the_next_call_gets_a_fresh_worker(project: Path) -> None:
    fns = load(project)
    marker, release = project.parent / "signals" / "started", project.parent / "signals" / "release"
    task = fns.block.spawn(str(marker), str(release))
    wait_until(marker.exists, 60)
    pid = int(marker.read_text())
    task.cancel()
    wait_until(lambda: task.refresh().is_terminal, 60)
    assert task.status is TaskStatus.CANCELLED
    wait_until(lambda: not pid_alive(pid), 60)
    marker.unlink()
    release.touch()
    again = fns.block.remote(str(marker), str(release))
    assert again["warm"]
    assert again["pid"] != pid


def test_a_warm_call_past_its_time_limit_is_stopped_and_its_worker_replaced(project: Path) -> None:
    fns = load(project)
    marker = project.parent / "signals" / "stuck"
    task = fns.stuck.spawn(str(marker))
    wait_until(marker.exists, 60)
    final = task.wait(timeout=120)
    assert final.last_status is TaskStatus.FAILED
    assert final.state_reason.startswith("TIMEOUT")
    wait_until(lambda: not pid_alive(int(marker.read_text())), 60)


def test_a_function_keeps_at_most_keep_warm_workers_and_other_calls_run_cold(project: Path) -> None:
    fns = load(project)
    signals = project.parent / "signals"
    release = signals / "release"
    markers = [signals / f"started-{i}" for i in range(4)]
    results: list[dict[str, object]] = []
    errors: list[Exception] = []

    def call(marker: Path) -> None:
        try:
            results.append(fns.pair.remote(str(marker), str(release)))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(m,)) for m in markers]
    for thread in threads:
        thread.start()
    wait_until(lambda: all(m.exists() for m in markers), 120)  # all four run at once
    release.touch()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    warm = {r["pid"] for r in results if r["warm"]}
    assert len(results) == 4
    assert len(warm) == 2  # keep_warm=2: two workers, each one call at a time
    assert sum(1 for r in results if not r["warm"]) == 2  # the others ran cold, one process each
    for marker in markers:
        marker.unlink()
    again = [fns.pair.remote(str(signals / f"again-{i}"), str(release)) for i in range(3)]
    assert {r["pid"] for r in again} <= warm


def test_a_function_without_keep_warm_still_runs_one_process_per_call(project: Path) -> None:
    fns = load(project)
    first, second = fns.cold.remote(), fns.cold.remote()
    assert not first["warm"] and not second["warm"]
    assert first["pid"] != second["pid"]
    assert first["calls"] == second["calls"] == 1


def test_app_cls_keep_warm_keeps_the_class_module_warm(project: Path) -> None:
    fns = load(project)
    counter = fns.Counter()
    first, second = counter.tick.remote(), counter.tick.remote()
    assert first["warm"] and second["pid"] == first["pid"]
    assert second["calls"] == first["calls"] + 1


def test_idle_workers_exit_when_flowd_is_killed(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fns = load(make_project(tmp_path, monkeypatch, daemon))
    try:
        pid = fns.count.remote()["pid"]
        daemon.kill9()
        wait_until(lambda: not pid_alive(pid), 60)  # its pipe closed with flowd: no orphan left
        daemon.start()
        after = fns.count.remote()  # a new flowd starts a new worker
        assert after["warm"] and after["pid"] != pid
    finally:
        fns.app.flow.close()
        sys.modules.pop("warm_fns", None)


def test_a_warm_call_running_when_flowd_is_killed_is_reconciled_by_the_next_flowd(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fns = load(make_project(tmp_path, monkeypatch, daemon))
    marker, release = tmp_path / "signals" / "started", tmp_path / "signals" / "release"
    try:
        task = fns.block.spawn(str(marker), str(release))
        wait_until(marker.exists, 60)
        daemon.kill9()
        daemon.start()
        release.touch()
        wait_until(lambda: task.refresh().is_terminal, 60)
        assert task.status is TaskStatus.COMPLETED
        assert task.result()["warm"]
        wait_until(lambda: not pid_alive(int(marker.read_text())), 60)  # it exited after its call
    finally:
        fns.app.flow.close()
        sys.modules.pop("warm_fns", None)


@given(
    st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=MAX_KEEP_WARM + 1),
        st.booleans(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.none(),
    )
)
def test_keep_warm_must_be_a_whole_number_from_0_to_the_cap(value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        FlowApp(flow=None).function(keep_warm=value)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "keep_warm" in message
    assert repr(value) in message or str(value) in message
    assert f"from 0 (one process per call, the default) to {MAX_KEEP_WARM}" in message
    with pytest.raises(ValidationError):
        FlowApp(flow=None).cls(keep_warm=value)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=MAX_KEEP_WARM))
def test_keep_warm_within_the_cap_is_accepted(value: int) -> None:
    decorated = FlowApp(flow=None).function(keep_warm=value)(os.getpid)
    assert decorated() == os.getpid()  # a plain local call is unchanged


@given(st.integers(min_value=0, max_value=MAX_KEEP_WARM))
def test_keep_warm_crosses_the_wire_unchanged(value: int) -> None:
    call = FunctionCall(function="f", path="f.py", args=(1,), keep_warm=value)
    assert function_call_from_proto(function_call_to_proto(call)) == call


@pytest.mark.parametrize("value", [-1, MAX_KEEP_WARM + 1, 2**31 - 1])
def test_flowd_refuses_a_keep_warm_out_of_range_from_any_client(shared_daemon: Daemon, value: int) -> None:
    """Another language's client sends the field as it likes: flowd's answer names it."""
    channel = grpc.insecure_channel(shared_daemon.home.address)
    spec = task_pb2.TaskSpec(
        command=[],
        function_call=task_pb2.FunctionCall(module="fns", function="f", keep_warm=value),
    )
    with pytest.raises(grpc.RpcError) as caught:
        task_service_pb2_grpc.TaskServiceStub(channel).CreateTask(
            task_service_pb2.CreateTaskRequest(spec=spec), timeout=30
        )
    channel.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = translate(caught.value, str(shared_daemon.home.socket))
    assert isinstance(error, ValidationError)
    assert "function_call.keep_warm" in [v.field for v in error.violations]
    assert str(value) in error.message
