"""flowd as a process: one per FLOW_HOME, private, discoverable, and clean to stop."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import BIN, Daemon, _cleanup, pid_alive, short_tmpdir, wait_until
from flow import Flow, TaskStatus
from flow.errors import DaemonUnavailableError
from flowapi.v1 import daemon_service_pb2, daemon_service_pb2_grpc


def test_second_daemon_on_the_same_home_refuses_and_the_first_keeps_serving(daemon: Daemon) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "flowd", "--home", str(daemon.home.root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 3
    assert "already running" in second.stderr and str(daemon.home.root) in second.stderr
    assert f"pid {daemon.pid}" in second.stderr
    client: Flow = daemon.client()
    assert client.daemon_info().pid == daemon.pid
    assert client.run("echo still-here", upload_code=False).wait(timeout=30).logs() == "still-here\n"


def test_socket_and_state_are_private(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.home.socket).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(daemon.home.socket).st_mode)
    assert stat.S_IMODE(os.stat(daemon.home.root).st_mode) == 0o700
    for path in (daemon.home.database, daemon.home.lock, daemon.home.daemon_log):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    client: Flow = daemon.client()
    task = client.run("echo x", upload_code=False).wait(timeout=30)
    log_file = daemon.home.task_dir(task.task_id) / "output.log"
    assert stat.S_IMODE(os.stat(log_file).st_mode) == 0o600


def test_reflection_lists_the_services(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.home.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {
        "flowapi.v1.TaskService",
        "flowapi.v1.DaemonService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def test_health_reports_serving(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.home.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "flowapi.v1.TaskService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_sigterm_stops_cleanly_and_leaves_tasks_running(daemon: Daemon) -> None:
    client: Flow = daemon.client()
    task = client.run(["sleep", "600"], upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING, 10)
    daemon.stop()
    assert not daemon.home.socket.exists()
    daemon.start()
    assert client.get_task(task.task_id).last_status is TaskStatus.RUNNING
    task.cancel()


def test_sdk_starts_the_daemon_on_first_use() -> None:
    root = short_tmpdir("flow-a-")
    client = Flow(flow_home=root)
    d = Daemon(root)
    try:
        info = client.daemon_info()
        d.pid = info.pid
        assert pid_alive(info.pid)
        assert info.flow_home == str(root)
        assert client.run("echo auto", upload_code=False).wait(timeout=30).logs() == "auto\n"
    finally:
        client.close()
        _cleanup(d)


def test_two_clients_starting_at_once_share_one_daemon() -> None:
    root = short_tmpdir("flow-r-")
    pids: list[int] = []
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            pids.append(Flow(flow_home=root).daemon_info().pid)
        except BaseException as exc:  # noqa: BLE001 - any failure in a thread is collected for the test to raise
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    d = Daemon(root)
    d.pid = pids[0] if pids else None
    try:
        assert not errors
        assert len(pids) == 4 and len(set(pids)) == 1
    finally:
        _cleanup(d)


@pytest.mark.parametrize("stale_socket", [False, True], ids=["no-socket", "stale-socket"])
def test_the_first_cli_command_starts_the_daemon(stale_socket: bool) -> None:
    """`flow status` with no daemon: with no socket at all the CLI starts flowd before it has
    imported what its call needs (flow.connection.start_daemon_early); with the socket of a
    killed daemon left behind, once its call finds nobody there. Either way, one daemon, serving."""
    root = short_tmpdir("flow-f-")
    d = Daemon(root)
    if stale_socket:
        d.start()
        d.kill9()
        assert d.home.socket.exists()
    env = d.env
    try:
        done = subprocess.run([str(BIN / "flow"), "status"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "no tasks yet" in done.stdout
        d.pid = int(d.home.lock.read_text().strip())
        assert pid_alive(d.pid)
        again = subprocess.run([str(BIN / "flow"), "daemon", "status"], capture_output=True, text=True, env=env)
        assert again.returncode == 0 and str(d.pid) in again.stdout, again.stdout + again.stderr
    finally:
        _cleanup(d)


def test_unreachable_daemon_without_autostart_names_the_socket() -> None:
    root = short_tmpdir("flow-u-")
    with pytest.raises(DaemonUnavailableError) as caught:
        Flow(flow_home=root, auto_start=False)
    assert str(root / "flowd.sock") in caught.value.message
    assert any("flow daemon start" in s for s in caught.value.suggestions)


def test_shutdown_rpc_stops_the_daemon(daemon: Daemon) -> None:
    with grpc.insecure_channel(daemon.home.address) as channel:
        daemon_service_pb2_grpc.DaemonServiceStub(channel).ShutdownDaemon(
            daemon_service_pb2.ShutdownDaemonRequest(), timeout=5
        )
    wait_until(lambda: not pid_alive(daemon.pid or 0), 15)


def test_too_long_home_path_is_refused_with_a_fix() -> None:
    root = short_tmpdir("flow-l-") / ("x" * 120)
    done = subprocess.run(
        [sys.executable, "-m", "flowd", "--home", str(root)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "shorter directory" in done.stderr
