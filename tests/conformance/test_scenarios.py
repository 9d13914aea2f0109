"""The provider conformance suite: one list of black-box scenarios, through the public SDK (and the
public gRPC contract where the SDK hides a detail, like a log cursor), against a real flowd for
every provider set-up in conformance.setups. A provider is done when it passes all of them.

Where a set-up cannot do something, the scenario asserts the refusal it documents (the set-up says
so as data: `max_nodes`, `node_logs`, `always_reachable`), never skips.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest

from conformance.setups import ALL_GPUS, GPU, Setup
from conftest import wait_until
from flow import TaskConfig, TaskStatus, errors
from flowapi.v1 import task_service_pb2, task_service_pb2_grpc

LINES = 200_000
MB = 1 << 20


def run(setup: Setup, command: str | list[str], **options: Any) -> Any:
    return setup.run(command, **options)


def finished(task: Any, timeout: float = 180) -> Any:
    return task.wait(timeout=timeout)


def written_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().endswith("\n"), 120)
    return int(path.read_text())


# --- how a task ends -------------------------------------------------------------------------------


def test_exit_0_completes(setup: Setup) -> None:
    task = finished(run(setup, "echo hello"))
    assert (task.last_status, task.exit_code, task.state_reason) == (TaskStatus.COMPLETED, 0, "exited with code 0")
    assert task.logs() == "hello\n"


def test_exit_3_fails_with_its_code(setup: Setup) -> None:
    task = finished(run(setup, "echo oops >&2; exit 3"))
    assert (task.last_status, task.exit_code, task.state_reason) == (TaskStatus.FAILED, 3, "exited with code 3")
    assert task.logs() == "oops\n"


def test_killed_by_a_signal_is_128_plus_n(setup: Setup) -> None:
    task = finished(run(setup, ["bash", "-c", "echo bye; kill -USR1 $$"]))
    assert (task.last_status, task.exit_code) == (TaskStatus.FAILED, 128 + 10)
    assert "killed by signal 10" in task.state_reason


def test_a_process_left_behind_is_gone_when_the_task_ends(setup: Setup) -> None:
    pid = setup.path("pid")
    task = finished(run(setup, ["bash", "-c", f"set -m; sleep 600 & echo $! > {pid}; exit 0"]))
    assert task.last_status is TaskStatus.COMPLETED
    assert not setup.alive(written_pid(pid))


# --- logs ------------------------------------------------------------------------------------------


def _chunks(setup: Setup, task: Any, cursor: str) -> Any:
    with grpc.insecure_channel(f"unix:{setup.daemon.home.socket}") as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.StreamTaskLogsRequest(name=f"tasks/{task.task_id}", cursor=cursor)
        return next(iter(stub.StreamTaskLogs(request, timeout=60)), None)


def test_200k_lines_reach_a_follower_and_a_resuming_reader_exactly_once(setup: Setup) -> None:
    task = run(setup, ["seq", "1", str(LINES)])
    followed = list(task.logs(follow=True))
    assert finished(task).last_status is TaskStatus.COMPLETED
    assert followed == [str(i) for i in range(1, LINES + 1)]
    want = "".join(f"{i}\n" for i in range(1, LINES + 1)).encode()
    cursor, got = "", b""
    while (reply := _chunks(setup, task, cursor)) is not None:  # a new stream after every chunk
        got += reply.data
        cursor = reply.cursor
    assert got == want


def test_a_1_mb_line_without_a_newline_arrives_whole(setup: Setup) -> None:
    task = run(setup, ["python3", "-c", f"import sys; sys.stdout.write('x' * {MB})"])
    followed = list(task.logs(follow=True))
    assert finished(task).last_status is TaskStatus.COMPLETED
    assert followed == ["x" * MB]
    assert task.logs() == "x" * MB


def test_carriage_return_progress_bars_arrive_verbatim(setup: Setup) -> None:
    task = finished(run(setup, ["bash", "-c", "for i in 10 50 100; do printf '\\rprogress %s%%' $i; done; echo"]))
    assert task.logs() == "\rprogress 10%\rprogress 50%\rprogress 100%\n"
    assert task.logs(tail=1) == task.logs()


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_while_queued_never_runs_it(setup: Setup) -> None:
    ran = setup.path("ran")
    with setup.busy():
        task = run(setup, f"touch {ran}", instance_type=GPU)
        assert task.status is TaskStatus.PENDING
        task.cancel()
        final = finished(task)
    assert final.last_status is TaskStatus.CANCELLED and final.state_reason == "cancelled before it started"
    assert not ran.exists()


def test_cancel_while_running_ends_once_its_processes_are_gone(setup: Setup) -> None:
    pid = setup.path("pid")
    task = run(setup, ["bash", "-c", f"sleep 600 & echo $! > {pid}; echo up; wait"])
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs() == "up\n", 120)
    child = written_pid(pid)
    task.cancel()
    final = finished(task)
    assert final.last_status is TaskStatus.CANCELLED and final.state_reason == "cancelled by user"
    assert not setup.alive(child)


# --- what a task sees ------------------------------------------------------------------------------


def test_env_and_secret_env_reach_the_task_and_the_secret_nowhere_else(setup: Setup) -> None:
    secret = "s3cr3t-" + setup.path("v").name
    check = 'echo "A=$A"; [ "$SECRET_TOKEN" = "$EXPECTED" ] && echo secret-ok'
    config = TaskConfig(
        command=["bash", "-c", check.replace("$EXPECTED", secret)],
        env={"A": 'it\'s $HOME `x` "q"'},
        secret_env=["SECRET_TOKEN"],
        upload_code=False,
        **setup.task_options,
    )
    client = setup.flow()
    os.environ["SECRET_TOKEN"] = secret
    try:
        task = finished(client.run(config))
    finally:
        del os.environ["SECRET_TOKEN"]
    assert task.logs() == 'A=it\'s $HOME `x` "q"\nsecret-ok\n'
    listed = repr([t.to_dict() for t in client.list_tasks()])
    assert secret not in listed and secret not in (setup.daemon.home.root / "flowd.log").read_text()


def test_working_dir_is_a_directory_of_the_code(setup: Setup, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "data.txt").write_text("inside pkg\n")
    task = finished(run(setup, "cat data.txt; pwd", code_root=str(tmp_path), working_dir="pkg", upload_code=True))
    lines = task.logs().splitlines()
    assert lines[0] == "inside pkg" and lines[1].endswith("/pkg"), task.logs()


def test_two_nodes_get_their_distributed_variables(setup: Setup) -> None:
    show = "echo NODE_RANK=$NODE_RANK NNODES=$NNODES WORLD_SIZE=$WORLD_SIZE"
    if setup.max_nodes < 2:
        with pytest.raises(errors.ResourceNotAvailableError) as caught:
            run(setup, show, num_instances=2)
        assert "num_instances=2" in caught.value.message and caught.value.suggestions
        return
    task = finished(run(setup, show, num_instances=2, **setup.multi_node_options))
    assert task.last_status is TaskStatus.COMPLETED, task.logs()
    if setup.node_logs:
        assert [task.logs(node=k) for k in (0, 1)] == [f"NODE_RANK={k} NNODES=2 WORLD_SIZE=2\n" for k in (0, 1)]
    else:  # one output for the task
        lines = task.logs().splitlines()
        assert lines and all(line.split()[1:] == ["NNODES=2", "WORLD_SIZE=2"] for line in lines), task.logs()


def test_exec_runs_a_command_inside_the_running_task(setup: Setup) -> None:
    task = run(setup, "echo up; sleep 600")
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs() == "up\n", 120)
    result = task.exec("echo from-exec; echo err >&2; exit 4")
    assert (result.exit_code, result.stdout) == (4, b"from-exec\n")
    assert b"err\n" in result.stderr  # (srun may add a line of its own about the exit code)
    task.cancel()
    assert finished(task).last_status is TaskStatus.CANCELLED
    with pytest.raises(errors.FlowError):
        task.exec("true")  # only a RUNNING task runs commands


def test_a_remote_function_returns_its_value(setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fns_conformance.py").write_text(
        textwrap.dedent(
            """
            import os

            from flow import FlowApp

            app = FlowApp()


            @app.function(gpu=os.environ.get("CONFORMANCE_GPU"))
            def double(x):
                return {"value": 2 * x}
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLOW_HOME", str(setup.daemon.home.root))
    monkeypatch.setenv("FLOW_PROVIDER", setup.provider)
    if "instance_type" in setup.task_options:
        monkeypatch.setenv("CONFORMANCE_GPU", setup.task_options["instance_type"])
    sys.modules.pop("fns_conformance", None)
    import fns_conformance  # type: ignore[import-not-found]

    try:
        assert fns_conformance.double.remote(21) == {"value": 42}
    finally:
        fns_conformance.app.flow.close()


# --- refusals and offers ---------------------------------------------------------------------------


def test_each_documented_refusal_raises_its_exception_from_run_and_leaves_no_task(setup: Setup) -> None:
    assert setup.refusals
    for refusal in setup.refusals:
        before = {t.task_id for t in setup.flow().list_tasks()}
        with refusal.prepare(), pytest.raises(refusal.exception) as caught:
            setup.run("true", refusal.provider, **refusal.options)
        assert caught.value.message and caught.value.suggestions, refusal.name
        assert {t.task_id for t in setup.flow().list_tasks()} == before, refusal.name


def test_no_capacity_and_an_unknown_region_are_refused_alike_by_run_and_find_instances(setup: Setup) -> None:
    client = setup.flow()
    with pytest.raises(errors.ResourceNotAvailableError) as huge:
        client.run("true", min_gpu_memory_gb=500, upload_code=False)  # (instead of an instance type)
    assert "cpu" not in huge.value.message.split("closest offer")[-1].split(",")[0]  # never a CPU for a GPU request
    assert not client.find_instances({"gpu_memory_gb": 500})
    with pytest.raises(errors.ResourceNotAvailableError):
        setup.run("true", region="nowhere-9")
    found = client.find_instances({"region": "nowhere-9"})
    assert not found and found.explanation
    assert client.find_instances({"region": setup.region})  # the region it offers, both ways
    assert finished(setup.run("true", region=setup.region)).last_status is TaskStatus.COMPLETED


def test_find_instances_on_a_provider_that_cannot_be_asked_raises(setup: Setup) -> None:
    if not setup.unreachable:
        assert setup.always_reachable
        assert setup.flow().find_instances()  # nobody to ask: it answers from what it has
        return
    for case in setup.unreachable:
        with pytest.raises(case.exception) as caught:
            setup.flow(case.provider).find_instances()
        assert caught.value.suggestions, case.provider


def test_the_seeds_error_handling_example_catches_the_named_exception(setup: Setup) -> None:
    """The seed's example, as a user writes it, for each refusal the provider documents."""
    for refusal in setup.refusals:
        flow = setup.flow(refusal.provider)
        program = {} if "script" in refusal.options else {"command": "python train.py"}
        config = TaskConfig(upload_code=False, **{**setup.task_options, **program, **refusal.options})
        caught: list[str] = []
        with refusal.prepare():
            try:
                flow.run(config)
            except refusal.exception as e:
                caught.append(f"Error: {e.message}")
                caught += [f"  - {suggestion}" for suggestion in e.suggestions]
                caught.append(f"Error code: {e.error_code}")
        assert caught and caught[-1] != "Error code: None", refusal.name


def test_all_gpus_are_offered(setup: Setup) -> None:
    """(The set-ups' own premise: one GPU and all of them are things every provider here runs.)"""
    names = {o["instance_type"] for o in setup.flow().find_instances()}
    assert {GPU, ALL_GPUS} <= names, names


# --- last: the time limit, set when the set-up started ------------------------------------------


def test_max_run_time_hours_ends_failed_timeout(setup: Setup) -> None:
    task = setup.timed.wait(timeout=300)
    assert task.last_status is TaskStatus.FAILED and task.state_reason.startswith("TIMEOUT"), task.state_reason
    assert task.logs().startswith("started\n")  # (then what its shell says about the signal, if anything)
    assert task.started_at and task.completed_at and (task.completed_at - task.started_at).total_seconds() >= 59
