"""Every CLI command without grpcio (the HTTP/2 transport, flow.transport.http2, behind the
connection seam), against a real flowd.

Whatever path answers, the user sees the same thing: each case runs the command on the fast path
and on the grpcio path (FLOW_CLI_FASTPATH=0) and compares what they print and how they exit
(task ids and times, which differ between two runs, normalized); `-X importtime` proves which path
answered, and that the fast one loaded neither grpc nor the core's heavy modules where the command
needs none of them. A proxy in front of flowd that breaks connections proves the fallback."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Daemon, pid_alive, short_tmpdir, wait_until
from flow.cli import exit_status
from flow.cli.arguments import FASTPATH_ENV, fast_path_enabled
from flow.cli.tasks import JOB_FILE_SUFFIXES
from flow.connection import DaemonConnection
from flow.errors import TaskNotFoundError
from flow.home import FlowHome
from flow.task import get_task, list_tasks
from flow.transport.grpc_channel import GrpcChannel
from flow.transport.http2 import CallFailedError, FastPathUnusableError, Http2Channel, percent_decode, unary_call
from flow.wire.daemon_codec import daemon_info_call
from flowapi.v1 import daemon_service_pb2, task_service_pb2

# What no command that needs them not may import on the fast path: grpcio, and the core's heavy
# libraries (attrs with cattrs and returns: building a TaskConfig; pathspec: selecting code).
HEAVY = frozenset({"grpc", "attr", "attrs", "cattrs", "returns", "pathspec"})
TASK_ID = re.compile(r"t-[a-z0-9]{10}")
PROGRESS = ("uploading code", "\ruploading code")  # flow.cli.progress's lines
WHEN = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d)?")


def fast(home: FlowHome) -> DaemonConnection:
    """A connection over the HTTP/2 transport alone, without the fallback."""
    return DaemonConnection(home, auto_start=False, channel=Http2Channel(str(home.socket)))


class Ran:
    def __init__(self, done: subprocess.CompletedProcess[str], imported: set[str], err: str) -> None:
        self.code = done.returncode
        self.out = done.stdout
        self.err = err
        self.imported = imported

    def normal(self) -> tuple[int, str, str]:
        """What the user saw, with what differs from run to run (task ids, times) normalized."""

        def norm(text: str) -> str:
            # The upload's progress shows once an upload has taken 0.5 s: on a busy machine, on
            # one path and not the other.
            text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(PROGRESS))
            return WHEN.sub("TIME", TASK_ID.sub("t-ID", text))

        return self.code, norm(self.out), norm(self.err)


def cli(
    daemon: Daemon,
    *args: str,
    fast: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> Ran:
    """Runs `python -X importtime -m flow ARGS`: what it printed, how it exited, and the
    top-level names of the packages it imported."""
    full = {**daemon.env, **(env or {})}
    if not fast:
        full[FASTPATH_ENV] = "0"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
        cwd=cwd or daemon.home.root,
        input=stdin if stdin is not None else "",
    )
    imported: set[str] = set()
    other: list[str] = []
    for line in done.stderr.splitlines(keepends=True):
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[1].strip()
            imported.add(name.split(".")[0])
        else:
            other.append(line)
    return Ran(done, imported, "".join(other))


def both_paths(daemon: Daemon, *args: str, light: bool = True, calls: bool | None = True, **kwargs: Any) -> Ran:
    """Runs ARGS on both paths, asserts they agree and that the fast one never loaded grpc (nor,
    when `light`, the core's heavy modules). `calls`: the slow path reaches the daemon (a
    mistake the CLI finds by itself makes no call); None: either."""
    quick = cli(daemon, *args, **kwargs)
    slow = cli(daemon, *args, fast=False, **kwargs)
    assert quick.normal() == slow.normal()
    if calls is not None:
        assert ("grpc" in slow.imported) == calls  # so the comparison really is between two paths
    loaded = quick.imported & (HEAVY if light else {"grpc"})
    assert not loaded, f"the fast path of `flow {' '.join(args)}` imported {sorted(loaded)}"
    return quick


@pytest.fixture(scope="module")
def seeded(shared_daemon: Daemon) -> Iterator[tuple[Daemon, dict[str, str]]]:
    """Tasks in every common shape: completed, failed with a code, cancelled, running."""
    flow: Any = shared_daemon.client()
    ids = {
        "completed": flow.run("for i in 1 2 3 4 5; do echo line $i; done", upload_code=False, name="ok").wait().task_id,
        "failed": flow.run("echo oops >&2; exit 3", upload_code=False).wait().task_id,
        "running": flow.run(["sleep", "600"], upload_code=False, name="sleeper").task_id,
    }
    cancelled = flow.run(["sleep", "600"], upload_code=False)
    cancelled.cancel()
    ids["cancelled"] = cancelled.wait().task_id
    wait_until(lambda: flow.get_task(ids["running"]).status.name == "RUNNING", 30)
    flow.close()
    yield shared_daemon, ids


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "data.txt").write_text("from the snapshot\n")
    (root / "fn.py").write_text("def add(a, b):\n    return a + b\n")
    return root


# --- status ------------------------------------------------------------------------------------


def test_status_lists_the_same_table_and_json(seeded: tuple[Daemon, dict[str, str]]) -> None:
    daemon, ids = seeded
    ran = both_paths(daemon, "status")
    assert ran.code == 0
    for task_id in ids.values():
        assert task_id in ran.out
    assert "FAILED" in ran.out and "CANCELLED" in ran.out and "RUNNING" in ran.out
    listed = json.loads(both_paths(daemon, "status", "--json").out)
    statuses = {t["task_id"]: t["status"] for t in listed}
    assert {statuses[ids[k]] for k in ("completed", "failed", "running", "cancelled")} == {
        "COMPLETED",
        "FAILED",
        "RUNNING",
        "CANCELLED",
    }
    assert next(t for t in listed if t["task_id"] == ids["failed"])["exit_code"] == 3
    assert len(json.loads(both_paths(daemon, "status", "--limit", "2", "--json").out)) == 2
    for task_id in ids.values():
        assert task_id in both_paths(daemon, "status", task_id).out
        assert json.loads(both_paths(daemon, "status", task_id, "--json").out)["task_id"] == task_id


# --- run ---------------------------------------------------------------------------------------


def test_run_without_upload_streams_and_exits_as_the_task(shared_daemon: Daemon) -> None:
    ran = both_paths(shared_daemon, "run", "--no-upload", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert ran.code == 3
    assert ran.out == "out\nerr\n"  # the task's log holds both of its streams
    assert "FAILED (exited with code 3)" in ran.err
    ran = both_paths(shared_daemon, "run", "--no-upload", "-n", "named", "-e", "GREETING=hi", "echo $GREETING")
    assert (ran.code, ran.out) == (0, "hi\n")
    ran = both_paths(shared_daemon, "run", "--no-upload", "--json", "--max-run-time", "1", "true")
    assert json.loads(ran.out)["status"] == "COMPLETED"
    ran = both_paths(shared_daemon, "run", "--no-upload", "-d", "true")
    assert ran.code == 0 and TASK_ID.fullmatch(ran.out.strip())


def test_run_options_mean_the_same_on_the_plain_path(shared_daemon: Daemon) -> None:
    """The plain path encodes options without a TaskConfig: the task flowd records is the one the
    TaskConfig path makes of the same command line."""
    args = ["run", "--no-upload", "-d", "-n", "opts", "-e", "A=1", "-e", "B=x=y", "--max-run-time", "0.5"]
    args += ["--max-price", "12.25", "--memory", "512", "--num-instances", "1", "--", "echo", "a b", "$HOME"]
    ran = cli(shared_daemon, *args)
    assert not ran.imported & HEAVY
    plain_id = ran.out.strip()
    typed_id = cli(shared_daemon, *args, env={FASTPATH_ENV: "0"}).out.strip()
    flow: Any = shared_daemon.client()
    try:
        plain, typed = flow.get_task(plain_id).wait(), flow.get_task(typed_id).wait()
        assert plain.config == typed.config
        assert plain.config.env == {"A": "1", "B": "x=y"}
        assert plain.config.command == ("echo", "a b", "$HOME")
        assert plain.logs() == typed.logs() == "a b $HOME\n"
    finally:
        flow.close()


@pytest.mark.parametrize(
    ("options", "calls"),
    [
        (["--name", "bad name!"], None),  # flowd's validation on the plain path, TaskConfig's on the other
        (["--max-run-time", "-1"], None),
        (["-i", "zz99"], None),
        (["--num-instances", "0"], False),  # the wire reads 0 as unset: the TaskConfig path, on both
        (["--name", ""], False),
        (["--max-price", "nan"], False),
        (["--env", "NOEQUALS"], False),
    ],
)
def test_a_bad_option_is_the_same_error(shared_daemon: Daemon, options: list[str], calls: bool | None) -> None:
    ran = both_paths(shared_daemon, "run", "--no-upload", *options, "true", light=False, calls=calls)
    assert ran.code == 2 and "error:" in ran.err
    assert not ran.imported & {"grpc"}


def test_run_uploads_the_snapshot_without_grpc(shared_daemon: Daemon, project: Path) -> None:
    """The default: the current directory goes up as a snapshot (FindMissingBlobs, then
    UploadBlobs, a client stream), and the task reads it."""
    ran = both_paths(shared_daemon, "run", "cat data.txt", cwd=project, light=False)
    assert (ran.code, ran.out) == (0, "from the snapshot\n")
    (project / "big.bin").write_bytes(bytes(range(256)) * 20_000)  # 5 MB: many upload messages
    ran = both_paths(shared_daemon, "run", "wc -c < big.bin", cwd=project, light=False)
    assert (ran.code, ran.out.strip()) == (0, "5120000")
    # Unchanged since: the tree index answers, and nothing heavy is loaded (no walk, no rules).
    ran = both_paths(shared_daemon, "run", "wc -c < big.bin", cwd=project)
    assert (ran.code, ran.out.strip()) == (0, "5120000")


def test_run_a_job_file_and_a_dry_run(shared_daemon: Daemon, project: Path) -> None:
    (project / "job.yaml").write_text("command: echo from yaml\nupload_code: false\n")
    ran = both_paths(shared_daemon, "run", "job.yaml", cwd=project, light=False)
    assert (ran.code, ran.out) == (0, "from yaml\n")
    ran = both_paths(shared_daemon, "run", "--dry-run", "--no-upload", "true", cwd=project, light=False)
    assert ran.code == 0 and "valid" in ran.out


def test_the_cli_knows_the_job_file_suffixes_of_the_sdk() -> None:
    from flow.config import JOB_FILE_SUFFIXES as SDK_SUFFIXES

    assert JOB_FILE_SUFFIXES == SDK_SUFFIXES


# --- logs, wait, cancel ------------------------------------------------------------------------


def test_logs_and_wait_of_finished_tasks(seeded: tuple[Daemon, dict[str, str]]) -> None:
    daemon, ids = seeded
    ran = both_paths(daemon, "logs", ids["completed"])
    assert (ran.code, ran.out) == (0, "".join(f"line {i}\n" for i in range(1, 6)))
    assert both_paths(daemon, "logs", ids["completed"], "--tail", "2").out == "line 4\nline 5\n"
    text = both_paths(daemon, "logs", ids["completed"], "--json").out
    chunks, at = [], 0
    while at < len(text.rstrip()):
        chunk, at = json.JSONDecoder().raw_decode(text, at)
        chunks.append(chunk)
        at += 1
    assert [line for chunk in chunks for line in chunk["lines"]] == [f"line {i}" for i in range(1, 6)]
    assert both_paths(daemon, "logs", ids["failed"], "-f").out == "oops\n"
    ran = both_paths(daemon, "wait", ids["completed"])
    assert ran.code == 0 and "COMPLETED" in ran.out
    assert both_paths(daemon, "wait", ids["failed"]).code == 3
    assert both_paths(daemon, "wait", ids["cancelled"], "--json").code == 125
    ran = both_paths(daemon, "wait", ids["running"], "--timeout", "0.3")
    assert ran.code == 124 and "still RUNNING" in ran.err


def test_logs_follow_a_task_to_its_end(shared_daemon: Daemon) -> None:
    flow: Any = shared_daemon.client()
    try:
        tasks = [flow.run("for i in $(seq 1 5); do echo $i; sleep 0.1; done", upload_code=False) for _ in range(2)]
    finally:
        flow.close()
    quick = cli(shared_daemon, "logs", "-f", tasks[0].task_id)
    slow = cli(shared_daemon, "logs", "-f", tasks[1].task_id, fast=False)
    assert quick.normal() == slow.normal() == (0, "1\n2\n3\n4\n5\n", "")
    assert not quick.imported & HEAVY


def test_cancel_says_where_each_task_got(shared_daemon: Daemon) -> None:
    flow: Any = shared_daemon.client()
    try:
        first, second = (flow.run(["sleep", "600"], upload_code=False) for _ in range(2))
        for task in (first, second):
            wait_until(lambda task=task: task.status.name == "RUNNING", 30)
    finally:
        flow.close()
    quick = cli(shared_daemon, "cancel", first.task_id)
    slow = cli(shared_daemon, "cancel", second.task_id, fast=False)
    assert quick.normal() == slow.normal()
    assert quick.code == 0 and "CANCELLED" in quick.out
    assert not quick.imported & HEAVY
    ran = both_paths(shared_daemon, "cancel", first.task_id)  # over already: says so
    assert "already ended" in ran.out


@pytest.mark.parametrize("command", ["logs", "wait", "cancel", "status"])
def test_an_unknown_task_is_the_same_error(seeded: tuple[Daemon, dict[str, str]], command: str) -> None:
    daemon, _ = seeded
    ran = both_paths(daemon, command, "t-doesnotexist")
    assert ran.code == 1 and ran.out == ""
    assert "error: No task named 't-doesnotexist'" in ran.err and "hint:" in ran.err
    ran = both_paths(daemon, command, "t-doesnotexist", "--json")
    error = json.loads(ran.out)["error"]
    assert ran.code == 1 and error["type"] == "TaskNotFoundError" and error["suggestions"]
    ran = both_paths(daemon, command, "../etc/passwd")  # a malformed id: flowd's own error
    assert ran.code != 0 and "error:" in ran.err


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
    ran = both_paths(daemon, "status", "--limit", "1000", "--json")
    assert ran.code == 0 and len(json.loads(ran.out)) == 70


# --- ssh (a bidirectional stream) and invoke -----------------------------------------------------


def test_ssh_runs_a_command_with_its_input_and_exit_code(seeded: tuple[Daemon, dict[str, str]]) -> None:
    daemon, ids = seeded
    running = ids["running"]
    ran = both_paths(daemon, "ssh", running, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (ran.code, ran.out, ran.err) == (7, "out\n", "err\n")
    ran = both_paths(daemon, "ssh", running, "--", "wc", "-c", stdin="x" * 300_000)
    assert (ran.code, ran.out.strip()) == (0, "300000")
    ran = both_paths(daemon, "ssh", running, "--json", "--", "echo", "hi", light=False)
    assert json.loads(ran.out)["stdout"] == "hi\n"
    ran = both_paths(daemon, "ssh", ids["completed"], "--", "true")  # not running: refused
    assert ran.code != 0 and "error:" in ran.err
    assert "grpc" not in ran.imported


def test_invoke_calls_the_function_in_a_task(shared_daemon: Daemon, project: Path) -> None:
    """With plain options, invoke builds neither a TaskConfig nor the core's FunctionCall: the
    fast path loads nothing heavy once the project is unchanged since its last upload (the first
    walks it), and prints what the typed path prints."""
    ran = both_paths(shared_daemon, "invoke", "fn.py", "add", "--args", "[2, 3]", cwd=project, light=False)
    assert (ran.code, ran.out.strip()) == (0, "5")
    ran = both_paths(shared_daemon, "invoke", "fn.py", "add", "--kwargs", '{"a": [1], "b": [2.5, null]}', cwd=project)
    assert json.loads(ran.out) == [1, 2.5, None]
    ran = both_paths(shared_daemon, "invoke", "fn.py", "nothere", cwd=project, calls=None)
    assert ran.code == 2 and "nothere" in ran.err
    (project / "fn.py").write_text("def add(a, b):\n    raise ValueError(f'no {a}')\n")
    ran = both_paths(shared_daemon, "invoke", "fn.py", "add", "--args", '["x", 1]', cwd=project, light=False)
    assert ran.code != 0 and "ValueError: no x" in ran.err


def test_invoke_options_mean_the_same_on_the_plain_path(shared_daemon: Daemon, project: Path) -> None:
    """The task flowd records from the plain path is the one the typed path makes, and the
    arguments arrive as they left."""
    (project / "shapes.py").write_text("def pair(a, b=None):\n    return [a, b]\n")
    args = ["invoke", "shapes.py", "pair", "--args", '[1, {"k": [true, "s", 2.5]}]', "--json", "-n", "named"]
    args += ["--max-run-time", "0.5"]
    typed = json.loads(cli(shared_daemon, *args, cwd=project, env={FASTPATH_ENV: "0"}).out)
    ran = cli(shared_daemon, *args, cwd=project)
    assert not ran.imported & HEAVY, ran.err
    plain = json.loads(ran.out)
    assert plain["result"] == typed["result"] == [1, {"k": [True, "s", 2.5]}]
    flow: Any = shared_daemon.client()
    try:
        plain_task, typed_task = flow.get_task(plain["task_id"]).wait(), flow.get_task(typed["task_id"]).wait()
        assert plain_task.config == typed_task.config
        assert (plain_task.config.name, plain_task.config.max_run_time_hours) == ("named", 0.5)
    finally:
        flow.close()


@pytest.mark.parametrize(
    ("arguments", "light"),
    [
        (["--args", "[1, NaN]"], False),  # JSON cannot carry them: the typed path names the mistake
        (["--args", "[1, 100000000000000000000000]"], False),
        (["--args", "[1, 1e400]"], False),
        (["--kwargs", '{"a": 1, "c": 2}'], True),  # the signature, read from the file (no import)
        (["--args", "[1, 2]", "--name", "bad name!"], False),  # flowd's validation (after the upload), or TaskConfig's
        (["--args", "[1, 2]", "--name", ""], False),  # the wire reads "" as unset: the typed path
        (["--args", "[1, 2]", "--max-run-time", "-1"], False),
    ],
)
def test_invoke_with_a_mistake_is_the_same_error(
    shared_daemon: Daemon, project: Path, arguments: list[str], light: bool
) -> None:
    ran = both_paths(shared_daemon, "invoke", "fn.py", "add", *arguments, cwd=project, light=light, calls=None)
    assert ran.code == 2 and "error:" in ran.err


# --- no daemon, a daemon gone, and the fallback -------------------------------------------------


def test_a_killed_daemon_is_restarted_without_grpc(daemon: Daemon) -> None:
    """kill -9 leaves the socket file behind: nothing accepts on it, so the fast path starts a new
    flowd itself, and answers."""
    flow: Any = daemon.client()
    task_id = flow.run(["true"], upload_code=False).wait().task_id
    flow.close()
    daemon.kill9()
    assert daemon.home.socket.exists()
    ran = cli(daemon, "status")
    assert ran.code == 0, ran.err
    assert task_id in ran.out
    assert not ran.imported & HEAVY
    new_pid = int(daemon.home.lock.read_text().strip())
    assert new_pid != daemon.pid and pid_alive(new_pid)
    daemon.pid = new_pid  # so the fixture stops it


@pytest.mark.parametrize("command", [["status"], ["run", "--no-upload", "echo started"]])
def test_no_daemon_at_all_starts_one_without_grpc(daemon: Daemon, command: list[str]) -> None:
    daemon.stop()
    ran = cli(daemon, *command)
    assert ran.code == 0, ran.err
    assert ("no tasks yet" in ran.out) if command == ["status"] else ran.out == "started\n"
    assert not ran.imported & HEAVY
    wait_until(lambda: daemon.home.lock.exists(), 5)
    daemon.pid = int(daemon.home.lock.read_text().strip())
    assert pid_alive(daemon.pid)


def test_only_a_command_line_that_will_call_flowd_starts_it(daemon: Daemon) -> None:
    """The CLI starts flowd as soon as a command line parses (so flowd starts while the command
    imports): never for help, a usage error or `flow daemon status`; once for `flow status`."""
    daemon.stop()

    def flowds() -> list[int]:  # a started flowd lives on (its start alone outlasts a usage error)
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                words = (entry / "cmdline").read_bytes().split(b"\0")
                if b"flowd" in words and str(daemon.home.root).encode() in words:
                    found.append(int(entry.name))
        return found

    for args in (["status", "--help"], ["status", "--bogus"], ["daemon", "status"], ["--version"], []):
        ran = cli(daemon, *args)
        assert ran.code in (0, 2, exit_status.DAEMON_UNAVAILABLE), ran.err  # `daemon status`: none runs
        assert not flowds() and not daemon.home.socket.exists(), args
    ran = cli(daemon, "status")
    assert (ran.code, ran.out.strip()) == (0, 'no tasks yet; start one with `flow run "python train.py"`')
    daemon.pid = int(daemon.home.lock.read_text().strip())
    assert pid_alive(daemon.pid)


def test_a_remote_daemon_address_never_takes_the_fast_path() -> None:
    assert fast_path_enabled({})
    assert not fast_path_enabled({"FLOW_DAEMON_ADDRESS": "tcp://127.0.0.1:1"})
    assert not fast_path_enabled({"FLOW_DAEMON_ADDRESS": "tls://host:1"})
    assert fast_path_enabled({"FLOW_DAEMON_ADDRESS": "unix:/tmp/x.sock"})  # the local socket anyway
    assert not fast_path_enabled({FASTPATH_ENV: "0"})


Mischief = Callable[[int, int], "str | int | None"]


class BreakingProxy:
    """A Unix socket in front of flowd's that breaks some connections: `mischief(n, cuts)` says
    what happens to the n-th (0-based), `cuts` connections having been cut so far: None forwards
    it faithfully, "not-http2" answers it in HTTP/1.1, an integer K forwards K bytes of the
    daemon's answer and then hangs up."""

    def __init__(self, path: Path, target: Path, mischief: Mischief) -> None:
        self.path = path
        self.target = target
        self.mischief = mischief
        self.accepted = 0
        self.cuts = 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            what = self.mischief(self.accepted, self.cuts)
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client, what), daemon=True).start()

    def _serve(self, client: socket.socket, what: str | int | None) -> None:
        if what == "not-http2":
            client.recv(65536)
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(str(self.target))
        budget = [what if isinstance(what, int) else None]

        def pipe(src: socket.socket, dst: socket.socket, limited: bool) -> None:
            try:
                while data := src.recv(65536):
                    if limited and budget[0] is not None:
                        data = data[: budget[0]]
                        budget[0] -= len(data)
                        dst.sendall(data)
                        if budget[0] <= 0:
                            self.cuts += 1
                            break
                    else:
                        dst.sendall(data)
            except OSError:
                pass
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
        pipe(upstream, client, True)

    def close(self) -> None:
        self._listener.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def behind_proxy(shared_daemon: Daemon) -> Iterator[Callable[[Mischief], Daemon]]:
    """A Daemon whose FLOW_HOME's socket is a BreakingProxy to the shared daemon."""
    root = short_tmpdir("flow-px-")
    made: list[BreakingProxy] = []

    def start(mischief: Mischief) -> Daemon:
        front = Daemon(root)
        front.home.root.chmod(0o700)
        made.append(BreakingProxy(front.home.socket, shared_daemon.home.socket, mischief))
        return front

    yield start
    for proxy in made:
        proxy.close()
    root.rmdir()


def test_a_surprise_sends_the_call_to_grpcio(
    seeded: tuple[Daemon, dict[str, str]], behind_proxy: Callable[[Mischief], Daemon]
) -> None:
    """The first connection is answered in HTTP/1.1: that call, and every later one, goes over
    grpcio, and the user sees what the fast path would have shown."""
    daemon, ids = seeded
    front = behind_proxy(lambda n, cuts: "not-http2" if n == 0 else None)
    ran = cli(front, "logs", ids["completed"])
    assert ran.normal() == both_paths(daemon, "logs", ids["completed"]).normal()
    assert "grpc" in ran.imported  # it was the fallback that answered


def test_a_stream_broken_midway_resumes_from_its_cursor(
    shared_daemon: Daemon, behind_proxy: Callable[[Mischief], Daemon]
) -> None:
    """The daemon's answer to `flow logs` is cut after 600 KB (two and a bit of its 256 KiB
    chunks): the stream resumes where it broke, over grpcio, with no line lost or repeated."""
    flow: Any = shared_daemon.client()
    try:
        task = flow.run("seq 1 300000", upload_code=False).wait()  # about 2 MB of output
    finally:
        flow.close()
    front = behind_proxy(lambda n, cuts: 600_000 if cuts == 0 else None)  # only the log stream is that long
    ran = cli(front, "logs", task.task_id)
    assert ran.code == 0, ran.err
    assert ran.out == "".join(f"{i}\n" for i in range(1, 300_001))
    assert "grpc" in ran.imported


# --- the transport on its own, against flowd --------------------------------------------------


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


def test_not_http2_is_a_surprise_never_an_error_the_user_sees(tmp_path: Path) -> None:
    root = short_tmpdir("flow-fp-")
    path = root / "flowd.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
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
            list_tasks(fast(FlowHome(root=root)), 10)
    finally:
        thread.join(10)
        server.close()
        path.unlink()
        root.rmdir()


def _percent_encode(text: str) -> bytes:
    """grpc's encoding of grpc-message: bytes outside 0x20-0x7E, and '%', as %XX."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}".encode() for b in text.encode())


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_grpc_message_percent_decoding_round_trips(text: str) -> None:
    assert percent_decode(_percent_encode(text)) == text
