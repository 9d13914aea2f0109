"""`flow status` without grpcio (the HTTP/2 transport, flow.transport.http2_unary, behind the
connection seam), against a real flowd.

Whatever path answers, the user sees the same thing: each case runs the fast path and the grpcio
path (FLOW_CLI_FASTPATH=0) and compares what they print and how they exit; `-X importtime`
proves which path answered."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Daemon, pid_alive, short_tmpdir, wait_until
from flow.cli.tasks import FASTPATH_ENV, fast_path_enabled
from flow.connection import DaemonConnection
from flow.errors import TaskNotFoundError
from flow.home import FlowHome
from flow.task import get_task, list_tasks
from flow.transport.grpc_channel import GrpcChannel
from flow.transport.http2_unary import (
    CallFailedError,
    FastPathUnusableError,
    Http2UnaryChannel,
    percent_decode,
    unary_call,
)
from flow.wire.daemon_codec import daemon_info_call
from flowapi.v1 import daemon_service_pb2, task_service_pb2


def fast(home: FlowHome) -> DaemonConnection:
    """A connection over the HTTP/2 transport alone, as `flow status` first makes one."""
    return DaemonConnection(home, auto_start=False, channel=Http2UnaryChannel(str(home.socket)))


def cli(
    daemon: Daemon, *args: str, fast: bool = True, env: dict[str, str] | None = None
) -> tuple[int, str, str, set[str]]:
    """Runs `python -X importtime -m flow ARGS`: exit code, stdout, stderr without the import
    lines, and the top-level names of the packages it imported."""
    full = {**daemon.env, **(env or {})}
    if not fast:
        full[FASTPATH_ENV] = "0"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
        cwd=daemon.home.root,
    )
    imported: set[str] = set()
    other: list[str] = []
    for line in done.stderr.splitlines(keepends=True):
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[1].strip()
            imported.add(name.split(".")[0])
        else:
            other.append(line)
    return done.returncode, done.stdout, "".join(other), imported


def both_paths(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    """Runs ARGS on both paths, asserts they agree and that the fast one never loaded grpc."""
    fast_code, fast_out, fast_err, fast_imports = cli(daemon, *args)
    slow_code, slow_out, slow_err, slow_imports = cli(daemon, *args, fast=False)
    assert "grpc" not in fast_imports, "the fast path imported grpc"
    assert "grpc" in slow_imports  # so the comparison really is between two paths
    assert (fast_code, fast_out, fast_err) == (slow_code, slow_out, slow_err)
    return fast_code, fast_out, fast_err


@pytest.fixture(scope="module")
def seeded(shared_daemon: Daemon) -> Iterator[tuple[Daemon, dict[str, str]]]:
    """Tasks in every common shape: completed, failed with a code, cancelled, running."""
    flow: Any = shared_daemon.client()
    ids = {
        "completed": flow.run(["true"], upload_code=False, name="ok").wait().task_id,
        "failed": flow.run("exit 3", upload_code=False).wait().task_id,
        "running": flow.run(["sleep", "600"], upload_code=False, name="sleeper").task_id,
    }
    cancelled = flow.run(["sleep", "600"], upload_code=False)
    cancelled.cancel()
    ids["cancelled"] = cancelled.wait().task_id
    flow.close()
    yield shared_daemon, ids


def test_status_lists_the_same_table_and_json_without_grpc(seeded: tuple[Daemon, dict[str, str]]) -> None:
    daemon, ids = seeded
    code, out, _ = both_paths(daemon, "status")
    assert code == 0
    for task_id in ids.values():
        assert task_id in out
    assert "FAILED" in out and "CANCELLED" in out and "RUNNING" in out
    code, out, _ = both_paths(daemon, "status", "--json")
    listed = json.loads(out)
    assert {t["task_id"]: t["status"] for t in listed} == {
        ids["completed"]: "COMPLETED",
        ids["failed"]: "FAILED",
        ids["running"]: "RUNNING",
        ids["cancelled"]: "CANCELLED",
    }
    assert next(t for t in listed if t["task_id"] == ids["failed"])["exit_code"] == 3
    code, out, _ = both_paths(daemon, "status", "--limit", "2", "--json")
    assert len(json.loads(out)) == 2


def test_status_of_one_task_matches_the_grpc_path(seeded: tuple[Daemon, dict[str, str]]) -> None:
    daemon, ids = seeded
    for task_id in ids.values():
        code, out, _ = both_paths(daemon, "status", task_id)
        assert code == 0 and task_id in out
        code, out, _ = both_paths(daemon, "status", task_id, "--json")
        assert json.loads(out)["task_id"] == task_id


def test_unknown_task_gives_the_same_error_and_exit_code(seeded: tuple[Daemon, dict[str, str]]) -> None:
    daemon, _ = seeded
    code, out, err = both_paths(daemon, "status", "t-doesnotexist")
    assert code == 1 and out == ""
    assert "error: No task named 't-doesnotexist'" in err
    assert "hint:" in err
    code, out, _ = both_paths(daemon, "status", "t-doesnotexist", "--json")
    error = json.loads(out)["error"]
    assert code == 1
    assert error["type"] == "TaskNotFoundError"
    assert error["suggestions"]
    code, _, err = both_paths(daemon, "status", "../etc/passwd")  # a bad id: flowd's own error
    assert code != 0 and "error:" in err


def test_unknown_task_raises_the_sdk_exception_in_process(seeded: tuple[Daemon, dict[str, str]]) -> None:
    """The exception built from the trailers is the one the grpcio path raises, field by field."""
    daemon, _ = seeded
    with pytest.raises(TaskNotFoundError) as quick:
        get_task(fast(daemon.home), "t-nothere")
    flow: Any = daemon.client()
    with pytest.raises(TaskNotFoundError) as slow:
        flow.get_task("t-nothere")
    flow.close()
    for attribute in ("message", "suggestions", "error_code", "violations"):
        assert getattr(quick.value, attribute) == getattr(slow.value, attribute)


def test_a_killed_daemon_is_restarted_by_the_fallback(daemon: Daemon) -> None:
    """kill -9 leaves the socket file behind: the fast path cannot connect, falls back, and the
    grpcio path starts a new flowd as it always did."""
    flow: Any = daemon.client()
    task_id = flow.run(["true"], upload_code=False).wait().task_id
    flow.close()
    daemon.kill9()
    assert daemon.home.socket.exists()
    code, out, err, imported = cli(daemon, "status")
    assert code == 0, err
    assert task_id in out
    assert "grpc" in imported  # it was the fallback that answered
    new_pid = int(daemon.home.lock.read_text().strip())
    assert new_pid != daemon.pid and pid_alive(new_pid)
    daemon.pid = new_pid  # so the fixture stops it
    # and with the daemon back, the fast path answers again
    code, out2, _, imported = cli(daemon, "status")
    assert (code, out2) == (0, out) and "grpc" not in imported


def test_no_daemon_at_all_starts_one(daemon: Daemon) -> None:
    daemon.stop()
    code, out, err, imported = cli(daemon, "status")
    assert code == 0, err
    assert "no tasks yet" in out
    assert "grpc" in imported
    wait_until(lambda: daemon.home.lock.exists(), 5)
    daemon.pid = int(daemon.home.lock.read_text().strip())
    assert pid_alive(daemon.pid)


def test_a_remote_daemon_address_never_takes_the_fast_path() -> None:
    assert fast_path_enabled({})
    assert not fast_path_enabled({"FLOW_DAEMON_ADDRESS": "tcp://127.0.0.1:1"})
    assert not fast_path_enabled({"FLOW_DAEMON_ADDRESS": "unix:/tmp/x.sock"})
    assert not fast_path_enabled({FASTPATH_ENV: "0"})


def test_a_huge_listing_crosses_frames_windows_and_pages(daemon: Daemon) -> None:
    """Tasks carrying 60 KB of env each: the listing is several MB, far beyond HTTP/2's default
    65,535-byte window and 16 KiB frames, and flowd splits it into 3 MB pages."""
    flow: Any = daemon.client()
    pad = "x" * 60_000
    for i in range(70):
        flow.run(["true"], upload_code=False, env={"PAD": pad, "I": str(i)}).wait()  # no state changes after
    expected = flow.list_tasks(limit=1000)
    flow.close()
    got = list_tasks(fast(daemon.home), 1000)
    assert len(got) == len(expected) == 70
    assert [(t.to_dict(), t.config) for t in got] == [(t.to_dict(), t.config) for t in expected]
    assert sum(len(t.config.env["PAD"]) for t in got) > 4_000_000
    code, out, _ = both_paths(daemon, "status", "--limit", "1000", "--json")
    assert code == 0 and len(json.loads(out)) == 70


def test_the_raw_call_answers_as_grpcio_does(shared_daemon: Daemon) -> None:
    home = shared_daemon.home
    call = daemon_info_call()
    raw = unary_call(str(home.socket), call.method, call.request, 10.0)
    grpcio = GrpcChannel.open(home)
    try:
        expected = grpcio.unary(call.method, call.request, 10.0)
        through_the_seam = DaemonConnection(home, channel=grpcio).unary(call, timeout=10)
    finally:
        grpcio.close()
    info = daemon_service_pb2.GetDaemonInfoResponse.FromString(raw)
    assert info == daemon_service_pb2.GetDaemonInfoResponse.FromString(expected)
    assert info.pid == shared_daemon.pid
    assert fast(home).unary(call, timeout=10) == through_the_seam


def test_a_failed_call_carries_its_status_details(shared_daemon: Daemon) -> None:
    with pytest.raises(CallFailedError) as failed:
        unary_call(
            str(shared_daemon.home.socket),
            "/flowapi.v1.TaskService/GetTask",
            task_service_pb2.GetTaskRequest(name="tasks/t-missing").SerializeToString(),
            10.0,
        )
    from google.rpc import status_pb2

    assert failed.value.code == 5  # NOT_FOUND
    assert failed.value.details is not None
    status = status_pb2.Status.FromString(failed.value.details)
    assert status.message == failed.value.message
    assert "t-missing" in failed.value.message


def test_an_unknown_method_is_a_call_failure_not_a_crash(shared_daemon: Daemon) -> None:
    with pytest.raises(CallFailedError) as failed:
        unary_call(str(shared_daemon.home.socket), "/flowapi.v1.TaskService/NoSuchMethod", b"", 10.0)
    assert failed.value.code == 12  # UNIMPLEMENTED


def test_no_socket_or_not_http2_means_fall_back(tmp_path: Path) -> None:
    with pytest.raises(FastPathUnusableError):
        unary_call(str(tmp_path / "none.sock"), "/x/Y", b"", 2.0)
    # A server that speaks something else on the socket (say, an old daemon's protocol).
    import socket

    root = short_tmpdir("flow-fp-")
    path = str(root / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        with pytest.raises(FastPathUnusableError):
            unary_call(path, "/x/Y", b"", 5.0)
    finally:
        thread.join(10)
        server.close()
        Path(path).unlink()
        root.rmdir()
    # and through the connection: unusable, never a FlowError the user would see
    with pytest.raises(FastPathUnusableError):
        list_tasks(fast(FlowHome(root=tmp_path)), 10)


def _percent_encode(text: str) -> bytes:
    """grpc's encoding of grpc-message: bytes outside 0x20-0x7E, and '%', as %XX."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}".encode() for b in text.encode())


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_grpc_message_percent_decoding_round_trips(text: str) -> None:
    assert percent_decode(_percent_encode(text)) == text
