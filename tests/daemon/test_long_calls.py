"""Long-lived calls (log followers, WaitTask, exec) never starve short ones, and a call whose
client went away releases what it held at once (issue 15 #2: with 256 of them open flowd answered
nothing, not even health, and a vanished WaitTask held its worker up to 60 s)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import Daemon, _cleanup, short_tmpdir, wait_until
from flow import TaskStatus
from flowapi.v1 import task_service_pb2, task_service_pb2_grpc

FOLLOWERS = 1000
WAITERS = 1000
BATCH = 100


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


@pytest.fixture
def small_budget() -> Iterator[Daemon]:
    os.environ["FLOW_DAEMON_LONG_CALLS"] = "40"
    try:
        d = Daemon(short_tmpdir("flow-lc-"))
        d.start()
    finally:
        del os.environ["FLOW_DAEMON_LONG_CALLS"]
    yield d
    _cleanup(d)


def _channel(daemon: Daemon) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{daemon.home.socket}")


def _wait(stub: Any, name: str, seconds: int) -> Any:
    request = task_service_pb2.WaitTaskRequest(name=name, timeout=Duration(seconds=seconds))
    return stub.WaitTask.future(request, timeout=seconds + 60)


def test_short_calls_answer_with_1000_followers_and_1000_waiters_open(daemon: Daemon) -> None:
    flow: Any = daemon.client()
    task = flow.run("echo started; sleep 600", upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING, 30)
    name = f"tasks/{task.task_id}"
    with _channel(daemon) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        follow = task_service_pb2.StreamTaskLogsRequest(name=name, follow=True)
        followers: list[Any] = []
        waiters: list[Any] = []
        try:
            # Opened a hundred at a time (gRPC's transport resets some of thousands of streams
            # opened in the same instant, before any server sees them), each batch being served
            # (each call holds a worker thread in flowd) before the next.
            for _ in range(FOLLOWERS // BATCH):
                followers += [tasks.StreamTaskLogs(follow, timeout=600) for _ in range(BATCH)]
                waiters += [_wait(tasks, name, 300) for _ in range(BATCH)]
                opened = len(followers) + len(waiters)
                wait_until(lambda n=opened: threads_of(daemon.pid or 0) >= n, 120)
            assert not any(w.done() for w in waiters)
            # ... and the short calls still answer.
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            got = tasks.GetTask(task_service_pb2.GetTaskRequest(name=name), timeout=60)
            assert got.task.name == name
            assert flow.run("true", upload_code=False).wait(timeout=120).last_status is TaskStatus.COMPLETED
            assert next(followers[0]).data == b"started\n"
        finally:
            for call in [*followers, *waiters]:
                call.cancel()
    task.cancel()


def test_a_call_whose_client_went_away_gives_its_place_back_at_once(small_budget: Daemon) -> None:
    flow: Any = small_budget.client()
    task = flow.run("sleep 600", upload_code=False)
    name = f"tasks/{task.task_id}"
    with _channel(small_budget) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        held = [_wait(tasks, name, 60) for _ in range(40)]

        def refused() -> bool:
            try:
                _wait(tasks, name, 0).result()
            except grpc.RpcError as error:
                return error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            return False

        wait_until(refused, 60)  # the budget is spent: one more is refused, saying why
        for call in held:
            call.cancel()  # the clients go away, 60 s before their waits would end

        def admitted() -> bool:
            try:
                _wait(tasks, name, 0).result()
            except grpc.RpcError:
                return False
            return True

        wait_until(admitted, 30)  # their places are back well before 60 s
        assert all(not _wait(tasks, name, 0).exception() for _ in range(10))
    task.cancel()
