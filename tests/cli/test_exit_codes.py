"""Each outcome of a `flow` command exits with its own documented code (flow.cli.exit_status,
the README's table): the real `flow` executable against a real flowd, or none at all."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, Daemon, short_tmpdir
from flow.cli import exit_status


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Attached:
    """`flow run` attached to its task, as in a terminal: its task id is read from stderr."""

    def __init__(self, daemon: Daemon, program: str) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "flow"), "run", "--no-upload", program],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**daemon.env, "PYTHONFAULTHANDLER": "1"},  # SIGABRT prints every thread's stack
            # As in a terminal: a test run started in the background of a script (nohup cmd &)
            # ignores SIGINT, its children inherit that, and Python then installs no Ctrl-C handler.
            preexec_fn=_interruptible,
        )
        assert self.process.stderr is not None
        first = self.process.stderr.readline()  # "task t-... submitted; streaming its logs (Ctrl-C detaches)"
        assert first.startswith("task t-"), first
        self.task_id = first.split()[1]

    def finish(self) -> tuple[int, str, str]:
        try:
            out, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # (seen once under load): say where it is stuck
            self.process.send_signal(signal.SIGABRT)
            _, err = self.process.communicate(timeout=60)
            pytest.fail(f"flow run did not end; its threads:\n{err[-8000:]}")
        return self.process.returncode, out, err


@pytest.fixture
def attached(shared_daemon: Daemon) -> Iterator[list[Attached]]:
    started: list[Attached] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
        shared_daemon.flow_cli("cancel", run.task_id)


def status_of(daemon: Daemon, task_id: str) -> str:
    return str(json.loads(daemon.flow_cli("status", task_id, "--json").stdout)["status"])


def test_completed_is_0_and_failed_is_the_tasks_own_code(shared_daemon: Daemon) -> None:
    assert shared_daemon.flow_cli("run", "--no-upload", "true").returncode == exit_status.COMPLETED == 0
    assert shared_daemon.flow_cli("run", "--no-upload", "exit 3").returncode == 3
    assert shared_daemon.flow_cli("run", "--no-upload", "exit 125").returncode == 125  # its own, passed through
    assert shared_daemon.flow_cli("run", "--no-upload", "--", "no-such-program-here").returncode == 127


def test_other_errors_are_1(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("wait", "t-nope")
    assert done.returncode == exit_status.FAILED == 1
    assert "No task named 't-nope'" in done.stderr


def test_usage_mistakes_are_2_and_launch_nothing(shared_daemon: Daemon) -> None:
    before = len(json.loads(shared_daemon.flow_cli("status", "--json", "--limit", "1000").stdout))
    for words in (
        ["run"],  # no program
        ["run", "--no-upload"],
        ["run", "--"],
        ["run", "python3", "train.py", "--epochs", "3"],  # the program's options belong after --
        ["run", "--num-instances", "0", "true"],  # an invalid configuration
        ["run", "echo", "--", "hi"],  # a program on both sides of --
        ["status", "--", "x"],  # a command that takes no program
        ["wait"],
        ["nonsense"],
    ):
        done = shared_daemon.flow_cli(*words, timeout=60)
        assert done.returncode == exit_status.USAGE == 2, (words, done.stderr)
        assert "usage: flow" in done.stderr or "error:" in done.stderr, (words, done.stderr)
    assert len(json.loads(shared_daemon.flow_cli("status", "--json", "--limit", "1000").stdout)) == before


def test_no_program_prints_the_usage_of_flow_run(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", timeout=30)  # it used to run `sleep infinity`, attached: a hung shell
    assert done.returncode == 2
    assert done.stderr.startswith("usage: flow run")
    assert "no program to run" in done.stderr and "flow run -- python train.py" in done.stderr


def test_a_cancelled_task_is_125_attached_and_waited_for(shared_daemon: Daemon, attached: list[Attached]) -> None:
    run = Attached(shared_daemon, "echo started; exec sleep 600")
    attached.append(run)
    assert run.process.stdout is not None
    assert run.process.stdout.readline() == "started\n"
    cancelled = shared_daemon.flow_cli("cancel", run.task_id)
    assert cancelled.returncode == 0
    assert cancelled.stdout == f"task {run.task_id} CANCELLED (cancelled by user)\n"
    code, _, err = run.finish()
    assert code == exit_status.CANCELLED == 125, err
    assert f"task {run.task_id} CANCELLED" in err
    assert shared_daemon.flow_cli("wait", run.task_id).returncode == 125
    again = shared_daemon.flow_cli("cancel", run.task_id)
    assert (again.returncode, "already ended" in again.stdout) == (0, True)


def test_a_wait_that_times_out_is_124_and_the_task_keeps_running(shared_daemon: Daemon) -> None:
    task_id = shared_daemon.flow_cli("run", "--no-upload", "-d", "sleep 600").stdout.strip()
    try:
        done = shared_daemon.flow_cli("wait", task_id, "--timeout", "0.2")
        assert done.returncode == exit_status.TIMED_OUT == 124, done.stderr
        assert f"task {task_id} is still RUNNING" in done.stderr
        assert status_of(shared_daemon, task_id) == "RUNNING"
    finally:
        shared_daemon.flow_cli("cancel", task_id)


def test_ctrl_c_detaches_with_130_and_the_task_keeps_running(shared_daemon: Daemon, attached: list[Attached]) -> None:
    run = Attached(shared_daemon, "echo started; exec sleep 600")
    attached.append(run)
    assert run.process.stdout is not None
    assert run.process.stdout.readline() == "started\n"
    run.process.send_signal(signal.SIGINT)
    code, _, err = run.finish()
    assert code == exit_status.DETACHED == 130
    assert "detached" in err and f"flow cancel {run.task_id}" in err
    assert status_of(shared_daemon, run.task_id) == "RUNNING"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_daemon_is_69_naming_the_address_and_settings(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "FLOW_HOME": str(tmp_path / "home"),
        "FLOW_DAEMON_ADDRESS": f"tcp://127.0.0.1:{port}",
        "FLOW_DAEMON_TOKEN": "s3cret-token-value",
    }
    for words in (["status"], ["run", "true"], ["logs", "t-x"]):
        done = subprocess.run([str(BIN / "flow"), *words], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == exit_status.DAEMON_UNAVAILABLE == 69, done.stderr
        assert f"127.0.0.1:{port}" in done.stderr
        assert f"FLOW_DAEMON_ADDRESS=tcp://127.0.0.1:{port}" in done.stderr and "no TLS" in done.stderr
        assert "FLOW_DAEMON_TOKEN set (18 characters)" in done.stderr
        assert "s3cret" not in done.stderr and "flow daemon start" not in done.stderr
        assert "Traceback" not in done.stderr
    tls = subprocess.run(
        [str(BIN / "flow"), "status", "--json"],
        capture_output=True,
        text=True,
        env={**env, "FLOW_DAEMON_ADDRESS": f"tls://127.0.0.1:{port}"},
        timeout=60,
    )
    assert tls.returncode == 69
    error = json.loads(tls.stdout)["error"]
    assert "system's CA certificates" in error["message"]
    assert any("FLOW_DAEMON_CA" in tip for tip in error["suggestions"])


def test_a_daemon_that_cannot_start_is_69() -> None:
    home = short_tmpdir("flow-x-")
    (home / "config.yaml").write_text("providers:\n  oops: [\n")
    home.chmod(0o700)
    env = {**os.environ, "FLOW_HOME": str(home)}
    env.pop("FLOW_DAEMON_ADDRESS", None)
    done = subprocess.run([str(BIN / "flow"), "status"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == exit_status.DAEMON_UNAVAILABLE, done.stderr
    assert "flowd could not be started" in done.stderr


def test_daemon_status_is_69_when_none_runs(daemon: Daemon) -> None:
    assert daemon.flow_cli("daemon", "status").returncode == 0
    daemon.flow_cli("daemon", "stop")
    down = daemon.flow_cli("daemon", "status")
    assert down.returncode == 69 and "not running" in down.stdout
