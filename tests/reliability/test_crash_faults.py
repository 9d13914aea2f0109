"""flowd killed with SIGKILL at random points (right after a submit or a cancel was sent, at a
random moment under the write load of tasks ending, with logs being followed) and restarted,
again and again: every acknowledged task exists exactly once with its final state, exit code and
complete logs, retries with the same request_id never create a second task, nothing is left
running, and the database passes PRAGMA integrity_check. bench/bench_reliability.py runs a
longer soak of the same code."""

from __future__ import annotations

import os

import pytest
from reliability_support import bench_reliability as soak

from conftest import Daemon, wait_until
from flowapi.v1 import task_pb2, task_service_pb2

SEED = int(os.environ["FLOW_FAULT_SEED"]) if "FLOW_FAULT_SEED" in os.environ else None


@pytest.mark.slow
def test_nothing_is_lost_when_flowd_is_killed_at_random_points(daemon: Daemon) -> None:
    report = soak.crash_soak(daemon, tasks=100, kills=12, seed=SEED, say=print)
    soak.print_soak(report)
    assert report.errors == [], "\n".join(report.errors[:40])
    assert report.tasks_checked == 100
    assert report.kills == 13
    assert report.cancels == 15
    assert report.integrity == "ok"


def test_a_retry_after_a_restart_returns_the_task_the_lost_reply_announced(daemon: Daemon) -> None:
    client = soak.Client(daemon.home.address)
    try:
        spec = task_pb2.TaskSpec(command=["sh", "-c", "echo once"], upload_code=False)
        request = task_service_pb2.CreateTaskRequest(spec=spec, request_id="lost-reply-1")
        first = client.tasks.CreateTask(request, timeout=30).task
        daemon.kill9()  # as if the reply had been lost with the daemon
        daemon.start()
        again = client.tasks.CreateTask(request, timeout=30).task
        assert again.task_id == first.task_id
        listed = client.tasks.ListTasks(task_service_pb2.ListTasksRequest(), timeout=30).tasks
        assert [t.task_id for t in listed] == [first.task_id]
        retry = soak.Retry([])
        assert soak.read_logs(client, first.name, retry) == b"once\n"
    finally:
        client.close()


def test_a_task_adopted_after_a_restart_takes_its_background_processes_with_it(daemon: Daemon) -> None:
    client = soak.Client(daemon.home.address)
    try:
        spec = task_pb2.TaskSpec(command=["sh", "-c", "sleep 300 & echo up; sleep 1"], upload_code=False)
        task = client.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=30).task
        daemon.kill9()
        daemon.start()
        final = soak.wait_terminal(client, task.name, soak.Retry([]), timeout=60)
        assert final is not None and final.state == task_pb2.TASK_STATE_COMPLETED
        wait_until(lambda: not soak.task_processes({task.task_id}), 60)
    finally:
        client.close()
