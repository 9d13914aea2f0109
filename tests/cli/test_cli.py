"""The `flow` command as users type it, as a real process against a real flowd."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Daemon, pid_alive, wait_until


def test_run_echo_prints_hello_and_exits_zero(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "echo hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n"
    assert "COMPLETED" in done.stderr


def test_run_exit_3_fails_with_exit_code_3(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "exit 3")
    assert done.returncode == 3
    assert "FAILED (exited with code 3)" in done.stderr


def test_run_then_cancel_leaves_no_process(shared_daemon: Daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = shared_daemon.flow_cli("run", "--detach", f"echo $$ > {pidfile}; exec sleep 600")
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.strip()
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    cancelled = shared_daemon.flow_cli("cancel", task_id, "--wait", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)[0]["status"] == "CANCELLED"
    wait_until(lambda: not pid_alive(pid), 10)
    status = json.loads(shared_daemon.flow_cli("status", task_id, "--json").stdout)
    assert status["status"] == "CANCELLED"


def test_argv_form_after_double_dash(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "--", "python3", "-c", "import sys; print(sys.argv[1:])", "a b", "$(x)")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['a b', '$(x)']\n"


def test_run_json_prints_the_final_task(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "--json", "echo hi")
    task = json.loads(done.stdout)
    assert task["status"] == "COMPLETED" and task["exit_code"] == 0
    assert "hi" in done.stderr  # logs go to stderr when stdout carries JSON


def test_status_logs_and_wait(shared_daemon: Daemon) -> None:
    task_id = shared_daemon.flow_cli("run", "-d", "--name", "cli-job", "echo one; echo two; exit 5").stdout.strip()
    waited = shared_daemon.flow_cli("wait", task_id, "--json")
    assert waited.returncode == 5
    assert json.loads(waited.stdout)["exit_code"] == 5
    assert shared_daemon.flow_cli("logs", task_id).stdout == "one\ntwo\n"
    assert shared_daemon.flow_cli("logs", task_id, "--tail", "1").stdout == "two\n"
    assert shared_daemon.flow_cli("logs", task_id, "-f").stdout == "one\ntwo\n"
    listing = json.loads(shared_daemon.flow_cli("status", "--json").stdout)
    mine = next(t for t in listing if t["task_id"] == task_id)
    assert mine["name"] == "cli-job" and mine["status"] == "FAILED"
    table = shared_daemon.flow_cli("status").stdout
    assert task_id in table and "cli-job" in table and "FAILED" in table


def test_validation_errors_name_every_field_and_exit_2(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "--name", "bad name", "-i", "a1000", "--max-run-time", "-1", "true")
    assert done.returncode == 2
    for expected in ("name", "instance_type", "did you mean 'a100'", "max_run_time_hours"):
        assert expected in done.stderr
    as_json = shared_daemon.flow_cli("run", "--json", "--num-instances", "0", "true")
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "VALIDATION_FAILED" and error["type"] == "ValidationError"
    assert [v["field"] for v in error["violations"]] == ["num_instances"]


def test_unknown_task_is_a_clear_error(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("logs", "t-nope")
    assert done.returncode == 1
    assert "No task named 't-nope'" in done.stderr


def test_yaml_job_file(shared_daemon: Daemon, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: yaml-job\ncommand: echo from-yaml $GREETING\nenv:\n  GREETING: hi\nupload_code: false\n")
    done = shared_daemon.flow_cli("run", str(job))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-yaml hi\n"


def test_dry_run_launches_nothing(shared_daemon: Daemon) -> None:
    before = len(json.loads(shared_daemon.flow_cli("status", "--json", "--limit", "1000").stdout))
    done = shared_daemon.flow_cli("run", "--dry-run", "--json", "echo nope")
    assert json.loads(done.stdout)["valid"] is True
    assert len(json.loads(shared_daemon.flow_cli("status", "--json", "--limit", "1000").stdout)) == before


def test_daemon_start_status_stop(daemon: Daemon) -> None:
    status = json.loads(daemon.flow_cli("daemon", "status", "--json").stdout)
    assert status["running"] is True and status["pid"] == daemon.pid
    stopped = daemon.flow_cli("daemon", "stop", "--json")
    assert json.loads(stopped.stdout)["stopped_pid"] == daemon.pid
    assert not pid_alive(daemon.pid or 0)
    down = daemon.flow_cli("daemon", "status")
    assert down.returncode == 69 and "not running" in down.stdout
    started = json.loads(daemon.flow_cli("daemon", "start", "--json").stdout)
    assert started["running"] is True
    daemon.pid = started["pid"]
    again = json.loads(daemon.flow_cli("daemon", "start", "--json").stdout)
    assert again["pid"] == started["pid"]  # starting a running daemon is a no-op


def test_version_does_not_need_the_daemon(daemon: Daemon) -> None:
    done = daemon.flow_cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("flow ")


def test_flow_options_are_flows_anywhere_before_double_dash(shared_daemon: Daemon) -> None:
    detached = shared_daemon.flow_cli("run", "--no-upload", "echo hi", "-d")  # -d after the program: Flow's
    assert detached.returncode == 0, detached.stderr
    task_id = detached.stdout.strip()
    assert task_id.startswith("t-") and "\n" not in task_id
    assert shared_daemon.flow_cli("wait", task_id).returncode == 0
    assert shared_daemon.flow_cli("logs", task_id).stdout == "hi\n"
    mixed = shared_daemon.flow_cli("run", "python3", "-d", "--no-upload", "--json", "-n", "mixed", "--", "-c", "pass")
    assert mixed.returncode == 2  # words on both sides of --: one program, said once
    after = shared_daemon.flow_cli(
        "run", "--no-upload", "--", "python3", "-c", "import sys; print(sys.argv[1:])", "-d", "--json", "--"
    )
    assert after.returncode == 0, after.stderr
    assert after.stdout == "['-d', '--json', '--']\n"  # after --, everything is the program's


def test_a_programs_options_before_double_dash_are_refused_with_the_fix(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "python3", "train.py", "--epochs", "3")
    assert done.returncode == 2
    assert "unrecognized arguments: --epochs" in done.stderr
    assert "flow run -- python train.py --epochs 3" in done.stderr


def test_cancel_prints_the_state_reached_or_that_it_is_stopping(shared_daemon: Daemon, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = f"trap '' TERM; touch {ready}; sleep 600"
    task_id = shared_daemon.flow_cli("run", "--no-upload", "-d", stubborn).stdout.strip()
    wait_until(ready.exists, 30)
    stopping = shared_daemon.flow_cli("cancel", task_id)  # ignores SIGTERM: SIGKILL comes after the grace period
    assert stopping.returncode == 0
    assert stopping.stdout == f"task {task_id} is stopping (still RUNNING); `flow wait {task_id}` waits until it has\n"
    stopped = json.loads(shared_daemon.flow_cli("cancel", task_id, "--wait", "--json").stdout)
    assert stopped[0]["status"] == "CANCELLED"


def test_hints_name_the_flags_a_cli_user_types(shared_daemon: Daemon) -> None:
    """The core's suggestions say provider='slurm' and memory_mb=...; the CLI says the flags."""
    no_gpus = shared_daemon.flow_cli("run", "-i", "8xh100", "true")
    assert no_gpus.returncode == 1
    assert "--provider slurm or --provider mithril" in no_gpus.stderr
    assert "leave out --instance-type and --min-gpu-memory" in no_gpus.stderr
    assert "provider='" not in no_gpus.stderr and "instance_type and" not in no_gpus.stderr
    too_big = shared_daemon.flow_cli("run", "--memory", "60000000", "--json", "true")
    error = json.loads(too_big.stdout)["error"]
    assert error["code"] == "RESOURCE_NOT_AVAILABLE"
    assert any(tip.startswith("ask for at most --memory ") for tip in error["suggestions"]), error
    missing = shared_daemon.flow_cli("run", "--working-dir", "/no/such/dir", "true")
    assert missing.returncode == 2
    assert "working_dir: does not exist" in missing.stderr and "'/no/such/dir'" in missing.stderr
    assert "hint: create it first, or leave --working-dir out" in missing.stderr


def test_ssh_takes_json_too(shared_daemon: Daemon, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    task_id = shared_daemon.flow_cli("run", "--no-upload", "-d", f"touch {ready}; exec sleep 600").stdout.strip()
    try:
        wait_until(ready.exists, 30)
        done = shared_daemon.flow_cli("ssh", task_id, "--json", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
        assert done.returncode == 7
        assert json.loads(done.stdout) == {
            "task_id": task_id,
            "command": ["sh", "-c", "echo out; echo err >&2; exit 7"],
            "exit_code": 7,
            "stdout": "out\n",
            "stderr": "err\n",
        }
        assert shared_daemon.flow_cli("ssh", task_id, "--json").returncode == 2  # a terminal prints no JSON
    finally:
        shared_daemon.flow_cli("cancel", task_id)
