"""Exec into running tasks: `flow ssh`, `task.ssh()`, `task.exec()`, over ExecTask."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pexpect
import pytest

from conftest import Daemon, wait_until
from flow import Flow, Task, TaskStatus
from flow.errors import FlowError
from flowapi.v1 import task_service_pb2, task_service_pb2_grpc


@pytest.fixture
def running(flow: Flow) -> Iterator[Task]:
    task = flow.run(["sleep", "600"], env={"GREETING": "hello"}, upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING, 10)
    yield task
    task.cancel()


def test_flow_ssh_runs_one_command_and_returns_its_exit_code(shared_daemon: Daemon, running: Task) -> None:
    done = shared_daemon.flow_cli("ssh", running.task_id, "--", "echo", "hi")
    assert (done.returncode, done.stdout) == (0, "hi\n")
    failing = shared_daemon.flow_cli("ssh", running.task_id, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (failing.returncode, failing.stdout, failing.stderr) == (7, "out\n", "err\n")


def test_exec_runs_in_the_tasks_directory_with_its_environment(running: Task, shared_daemon: Daemon) -> None:
    result = running.exec('echo "$GREETING $FLOW_TASK_ID $(pwd)"')
    expected = f"hello {running.task_id} {shared_daemon.home.task_dir(running.task_id) / 'work'}\n"
    assert (result.exit_code, result.stdout.decode()) == (0, expected)
    assert running.exec(["cat"], stdin=b"piped bytes\x00\xff").stdout == b"piped bytes\x00\xff"


def test_interactive_session_through_a_real_terminal(shared_daemon: Daemon, running: Task) -> None:
    flow_bin = str(Path(sys.executable).parent / "flow")
    child = pexpect.spawn(
        flow_bin, ["ssh", running.task_id], env=shared_daemon.env, dimensions=(33, 111), timeout=30, encoding="utf-8"
    )
    child.expect(r"[#$] ")  # the shell's prompt: it is reading now
    child.sendline("stty size; echo task=$FLOW_TASK_ID; tty")
    child.expect("33 111")
    child.expect(f"task={running.task_id}")
    child.expect("/dev/pts/")
    child.setwinsize(40, 120)
    child.sendline("stty size")
    child.expect("40 120")
    child.sendline("exit 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3


def test_exec_needs_a_running_task(flow: Flow) -> None:
    finished = flow.run(["true"], upload_code=False).wait(timeout=30)
    with pytest.raises(FlowError, match="commands run only in a RUNNING task"):
        finished.exec("echo no")


def test_exec_refuses_bad_requests_cleanly(shared_daemon: Daemon, running: Task) -> None:
    stub = task_service_pb2_grpc.TaskServiceStub(grpc.insecure_channel(shared_daemon.home.address))
    no_start = iter([task_service_pb2.ExecTaskRequest(stdin=b"x")])
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ExecTask(no_start, timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    nul = task_service_pb2.ExecStart(name=f"tasks/{running.task_id}", command=["echo", "a\x00b"])
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.ExecTask(iter([task_service_pb2.ExecTaskRequest(start=nul)]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = task_service_pb2.ExecStart(name=f"tasks/{running.task_id}", command=["no-such-program-xyz"])
    with pytest.raises(grpc.RpcError) as not_found:
        list(stub.ExecTask(iter([task_service_pb2.ExecTaskRequest(start=missing)]), timeout=10))
    assert "cannot run 'no-such-program-xyz'" in not_found.value.details()


def test_a_dropped_client_ends_its_command(shared_daemon: Daemon, running: Task, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    stub = task_service_pb2_grpc.TaskServiceStub(grpc.insecure_channel(shared_daemon.home.address))
    start = task_service_pb2.ExecStart(
        name=f"tasks/{running.task_id}", command=["sh", "-c", f"echo $$ > {marker}; exec sleep 600"]
    )
    call = stub.ExecTask(iter([task_service_pb2.ExecTaskRequest(start=start)]))
    wait_until(lambda: marker.exists() and marker.read_text().strip(), 10)
    pid = int(marker.read_text())
    call.cancel()
    from conftest import pid_alive

    wait_until(lambda: not pid_alive(pid), 10)


@pytest.mark.parametrize("tty", [False, True])
def test_closing_the_request_stream_is_end_of_input(shared_daemon: Daemon, running: Task, tty: bool) -> None:
    """A client (any language) that half-closes after its input, without ExecTaskRequest.stdin_closed,
    still ends the command's input: `cat` finishes instead of waiting for the deadline."""
    stub = task_service_pb2_grpc.TaskServiceStub(grpc.insecure_channel(shared_daemon.home.address))
    start = task_service_pb2.ExecStart(name=f"tasks/{running.task_id}", command=["cat"], tty=tty)
    requests = iter(
        [task_service_pb2.ExecTaskRequest(start=start), task_service_pb2.ExecTaskRequest(stdin=b"half-closed\n")]
    )
    replies = list(stub.ExecTask(requests, timeout=60))
    output = b"".join(r.stdout for r in replies if r.WhichOneof("kind") == "stdout")
    assert b"half-closed" in output
    assert [r.exit_code for r in replies if r.WhichOneof("kind") == "exit_code"] == [0]
