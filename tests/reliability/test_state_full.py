"""A full disk or a read-only database under $FLOW_HOME: what cannot be written is refused with
an error that says so and what to do (never INTERNAL), and everything saved before stays intact
(tasks listed, logs readable, PRAGMA integrity_check ok); once the disk has room again nothing
observed in between is lost.

How: FLOW_HOME on a small tmpfs filled up with a file (disk full), and state.db bind-mounted
read-only over itself (a read-only database). Both need root (mount); elsewhere these tests skip.
Making the file read-only with chmod does not work for root, and a running SQLite keeps its open
descriptor writable anyway; a file system remounted read-only refuses while files are open."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from reliability_support import bench_reliability as tools
from reliability_support import channel, clean_failure, healthy

from conftest import Daemon, _cleanup, short_tmpdir
from flow import TaskConfig
from flowapi.v1 import code_service_pb2, code_service_pb2_grpc, task_pb2, task_service_pb2, task_service_pb2_grpc
from flowd.store import Store


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = short_tmpdir("flow-mnt-")
    try:
        if mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)).returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=False)
        return True
    finally:
        probe.rmdir()


pytestmark = pytest.mark.skipif(not can_mount(), reason="needs root and mount (tmpfs, bind mounts)")


class Client:
    def __init__(self, daemon: Daemon) -> None:
        self.channel = channel(daemon)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.code = code_service_pb2_grpc.CodeServiceStub(self.channel)

    def run(self, argv: list[str], wait: bool = True) -> task_pb2.Task:
        spec = task_pb2.TaskSpec(command=argv, upload_code=False)
        task = self.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=60).task
        return self.wait(task.name) if wait else task

    def wait(self, name: str) -> task_pb2.Task:
        request = task_service_pb2.WaitTaskRequest(name=name)
        request.timeout.seconds = 30
        return self.tasks.WaitTask(request, timeout=40).task

    def logs(self, name: str) -> bytes:
        request = task_service_pb2.StreamTaskLogsRequest(name=name)
        return b"".join(c.data for c in self.tasks.StreamTaskLogs(request, timeout=60))

    def listed(self) -> dict[str, tuple[int, int | None]]:
        reply = self.tasks.ListTasks(task_service_pb2.ListTasksRequest(page_size=1000), timeout=60)
        return {t.name: (t.state, t.exit_code if t.HasField("exit_code") else None) for t in reply.tasks}

    def upload(self, data: bytes) -> None:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        chunk = code_service_pb2.BlobChunk(digest=digest, size=len(data), offset=0, data=data)
        self.code.UploadBlobs(iter([code_service_pb2.UploadBlobsRequest(chunks=[chunk])]), timeout=60)


def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    code, details = error.code(), error.details() or ""
    assert clean_failure(code, details) is None, details
    assert code != grpc.StatusCode.INTERNAL, details
    return code, details


def fill(path: Path) -> None:
    """Writes `path` until not one more byte fits on its file system."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
        with pytest.raises(OSError) as full:
            os.write(fd, b"\0")
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def integrity(daemon: Daemon) -> str:
    store = Store(daemon.home.database)
    try:
        return store.integrity_check()
    finally:
        store.close()


@pytest.fixture
def small_home() -> Iterator[Daemon]:
    root = short_tmpdir("flow-full-")
    assert mount("-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(root)).returncode == 0
    daemon = Daemon(root)
    try:
        daemon.start()
        yield daemon
    finally:
        _cleanup(daemon)
        subprocess.run(["umount", "-l", str(root)], check=False)
        with contextlib.suppress(OSError):
            root.rmdir()


def test_a_full_disk_refuses_writes_clearly_and_keeps_what_was_saved(small_home: Daemon, tmp_path: Path) -> None:
    daemon = small_home
    client = Client(daemon)
    gate = tmp_path / "gate"
    done = [client.run(["sh", "-c", f"seq 1 {n}; exit {n}"]) for n in (3, 0, 200)]
    sleeper = client.run(["sleep", "600"], wait=False)
    # Prints now; ends (exit 5) only once the disk is full: flowd must still learn it.
    gated = client.run(["sh", "-c", f"echo before; while [ ! -e {gate} ]; do sleep 0.05; done; exit 5"], wait=False)
    tools.wait_until(lambda: client.logs(gated.name) == b"before\n", 30)
    client.upload(b"a blob stored before")
    before = client.listed()
    logs_before = {t.name: client.logs(t.name) for t in done}

    filler = daemon.home.root / "filler"
    fill(filler)

    big = task_pb2.TaskSpec(script="print('big')\n# " + "x" * 900_000, upload_code=False)
    code, details = refused(lambda: client.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=big), timeout=60))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "is full" in details and str(daemon.home.root) in details
    code, details = refused(lambda: client.upload(os.urandom(300_000)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "is full" in details
    assert list((daemon.home.root / "blobs" / "incoming").iterdir()) == []  # nothing half-written is kept
    # A small task may still fit (SQLite reuses freed pages) or be refused the same way.
    try:
        small = client.run(["echo", "small"], wait=False)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "is full" in (exc.details() or "")
    else:
        final = client.wait(small.name)
        assert final.state in (task_pb2.TASK_STATE_COMPLETED, task_pb2.TASK_STATE_FAILED)
        before[final.name] = (final.state, final.exit_code if final.HasField("exit_code") else None)
    gate.write_text("")  # the gated task ends while nothing can be saved
    ended = client.wait(gated.name)
    assert (ended.state, ended.exit_code) == (task_pb2.TASK_STATE_FAILED, 5)
    before[gated.name] = (task_pb2.TASK_STATE_FAILED, 5)

    assert healthy(daemon)
    assert client.listed() == before
    assert {t.name: client.logs(t.name) for t in done} == logs_before
    assert logs_before[done[2].name] == "".join(f"{i}\n" for i in range(1, 201)).encode()
    assert integrity(daemon) == "ok"

    filler.unlink()  # room again: the next write saves what could not be saved
    assert client.listed() == before
    daemon.kill9()
    daemon.start()
    assert client.listed() == before, "what flowd learnt while the disk was full was lost in a restart"
    assert client.tasks.CancelTask(task_service_pb2.CancelTaskRequest(name=sleeper.name), timeout=60)
    assert client.wait(sleeper.name).state == task_pb2.TASK_STATE_CANCELLED
    fresh = client.run(["sh", "-c", "echo after; exit 0"])
    assert (fresh.state, client.logs(fresh.name)) == (task_pb2.TASK_STATE_COMPLETED, b"after\n")
    assert integrity(daemon) == "ok"
    client.channel.close()


@pytest.fixture
def bind_mounts() -> Iterator[list[Path]]:
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_database_refuses_writes_clearly_and_still_serves_reads(
    daemon: Daemon, tmp_path: Path, bind_mounts: list[Path]
) -> None:
    client = Client(daemon)
    gate = tmp_path / "gate"
    done = [client.run(["sh", "-c", f"seq 1 {n}; exit {n % 3}"]) for n in (4, 5)]
    sleeper = client.run(["sleep", "600"], wait=False)
    gated = client.run(["sh", "-c", f"echo before; while [ ! -e {gate} ]; do sleep 0.05; done; echo after"], wait=False)
    tools.wait_until(lambda: client.logs(gated.name) == b"before\n", 30)
    before = client.listed()

    daemon.stop()  # tasks keep running without it
    database = daemon.home.database
    assert mount("--bind", str(database), str(database)).returncode == 0
    bind_mounts.append(database)
    result = mount("-o", "remount,bind,ro", str(database))
    assert result.returncode == 0, result.stderr
    gate.write_text("")  # ends while flowd is down: a restarted flowd must learn it, read-only or not
    tools.wait_until(lambda: (daemon.home.tasks / gated.task_id / "exit_status").exists(), 30)

    daemon.start()  # it used to fail here: recovering the gated task could not be saved
    assert healthy(daemon)
    assert client.wait(gated.name).state == task_pb2.TASK_STATE_COMPLETED
    before[gated.name] = (task_pb2.TASK_STATE_COMPLETED, 0)
    assert client.listed() == before
    assert client.logs(gated.name) == b"before\nafter\n"
    assert [client.logs(t.name) for t in done] == [b"1\n2\n3\n4\n", b"1\n2\n3\n4\n5\n"]
    spec = task_pb2.TaskSpec(command=["echo", "new"], upload_code=False)
    code, details = refused(lambda: client.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=60))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "read-only" in details
    cancel = task_service_pb2.CancelTaskRequest(name=sleeper.name)
    code, details = refused(lambda: client.tasks.CancelTask(cancel, timeout=60))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "read-only" in details
    assert client.listed() == before  # refused: nothing changed, the sleeper still runs
    assert tools.task_processes({sleeper.task_id})

    daemon.stop()
    subprocess.run(["umount", str(database)], check=True)
    bind_mounts.clear()
    daemon.start()
    assert client.listed() == before
    client.tasks.CancelTask(cancel, timeout=60)
    assert client.wait(sleeper.name).state == task_pb2.TASK_STATE_CANCELLED
    assert integrity(daemon) == "ok"
    client.channel.close()


def test_the_refusal_names_the_state_directory(small_home: Daemon) -> None:
    """What the SDK shows a user: the exception says the disk is full, where, and what to do."""
    from flow.errors import QuotaExceededError

    flow = small_home.client()
    fill(small_home.home.root / "filler")
    with pytest.raises(QuotaExceededError) as caught:
        flow.run(TaskConfig(script="print('big')\n# " + "x" * 900_000, upload_code=False))
    message = str(caught.value)
    assert "is full" in message and str(small_home.home.root) in message
    assert "free space" in message.lower()
    flow.close()
