"""Log streaming: every line exactly once, in order, across cuts, resumes and daemon crashes."""

from __future__ import annotations

import threading

import grpc
import pytest

from conftest import Daemon, wait_until
from flow import Flow, TaskConfig, TaskStatus
from flow.errors import ValidationError
from flowapi.v1 import task_service_pb2, task_service_pb2_grpc

LINES = 200_000
# 200,000 lines of exactly 100 bytes (99 characters and the newline): 20 MB.
PRODUCER = TaskConfig(
    script=(f"import sys\nw = sys.stdout.write\nfor i in range({LINES}):\n    w(f'{{i:08d}} ' + 'x' * 90 + '\\n')\n"),
    upload_code=False,
)


def expected_line(i: int) -> str:
    return f"{i:08d} " + "x" * 90


def check_all_lines(lines: list[str]) -> None:
    assert len(lines) == LINES
    for i in (0, 1, LINES // 2, LINES - 1):
        assert lines[i] == expected_line(i)
    # In order and none duplicated: the counters are exactly 0..N-1.
    assert [int(line[:8]) for line in lines] == list(range(LINES))


def test_follow_receives_all_200k_lines_in_order(flow: Flow) -> None:
    task = flow.run(PRODUCER)
    lines = list(task.logs(follow=True))
    check_all_lines(lines)
    assert task.status is TaskStatus.COMPLETED


def test_a_cut_stream_resumes_from_its_cursor_without_loss_or_duplicates(flow: Flow) -> None:
    task = flow.run(PRODUCER)
    lines: list[str] = []
    cursor = ""
    cuts = 0
    while True:
        stream = task.log_chunks(cursor=cursor, follow=True)
        finished = True
        for n, chunk in enumerate(stream):
            lines.extend(chunk.lines)
            cursor = chunk.cursor
            if n == 3:  # cut the stream after a few chunks, as a dropped connection would
                stream.close()
                cuts += 1
                finished = False
                break
        if finished:
            break
    assert cuts >= 5
    check_all_lines(lines)


def test_raw_grpc_resume_with_cursor_mid_stream(shared_daemon: Daemon, flow: Flow) -> None:
    task = flow.run(PRODUCER).wait(timeout=120)
    channel = grpc.insecure_channel(shared_daemon.home.address)
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    name = f"tasks/{task.task_id}"
    first = stub.StreamTaskLogs(task_service_pb2.StreamTaskLogsRequest(name=name))
    head = next(first)
    first.cancel()  # the client goes away mid-stream
    rest = b"".join(
        r.data for r in stub.StreamTaskLogs(task_service_pb2.StreamTaskLogsRequest(name=name, cursor=head.cursor))
    )
    whole = head.data + rest
    assert head.data.endswith(b"\n")  # chunks hold whole lines only
    check_all_lines(whole.decode().splitlines())
    channel.close()


def test_sdk_stream_survives_a_daemon_kill(daemon: Daemon) -> None:
    client: Flow = daemon.client()
    slow = TaskConfig(
        script=(
            "import sys, time\n"
            "for i in range(3000):\n"
            "    print(f'{i:08d}', flush=True)\n"
            "    if i % 100 == 0: time.sleep(0.05)\n"
        ),
        upload_code=False,
    )
    task = client.run(slow)
    got: list[str] = []
    killed = threading.Event()

    def consume() -> None:
        for line in task.logs(follow=True):
            got.append(line)
            if len(got) == 500 and not killed.is_set():
                daemon.kill9()
                killed.set()

    reader = threading.Thread(target=consume)
    reader.start()
    reader.join(timeout=120)
    assert killed.is_set()
    assert not reader.is_alive()
    assert got == [f"{i:08d}" for i in range(3000)]
    # The SDK restarted the daemon by itself to resume; remember its pid for clean-up.
    daemon.pid = int(daemon.home.lock.read_text())


def test_partial_last_line_is_delivered_once_the_task_ends(flow: Flow) -> None:
    task = flow.run("printf 'one\\ntwo'", upload_code=False)
    assert list(task.logs(follow=True)) == ["one", "two"]


def test_a_foreign_cursor_is_a_validation_error(flow: Flow) -> None:
    task = flow.run("true", upload_code=False).wait(timeout=30)
    with pytest.raises(ValidationError) as caught:
        list(task.log_chunks(cursor="not-a-cursor", follow=False))
    assert caught.value.violations[0].field == "cursor"


def test_following_a_long_running_task_sees_lines_as_they_are_printed(flow: Flow) -> None:
    task = flow.run(["sh", "-c", "echo first; sleep 600"], upload_code=False)
    stream = task.logs(follow=True)
    assert next(stream) == "first"
    task.cancel()
    list(stream)  # the stream ends once the task is terminal (sh may still say "Terminated")
    wait_until(lambda: task.status is TaskStatus.CANCELLED, 30)
