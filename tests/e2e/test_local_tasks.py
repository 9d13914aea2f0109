"""Tasks on the local provider through a real flowd: what a user of `flow.run` relies on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import pid_alive, wait_until
from flow import Flow, TaskConfig, TaskStatus, errors
from flow.errors import ResourceNotAvailableError, TaskNotFoundError, ValidationError, VolumeError


def test_echo_completes_with_its_output(flow: Flow) -> None:
    task = flow.run("echo hello", upload_code=False)
    assert task.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert task.exit_code == 0
    assert task.logs() == "hello\n"
    assert task.started_at and task.completed_at and task.created_at
    assert task.created_at <= task.started_at <= task.completed_at


def test_non_zero_exit_fails_with_the_exit_code(flow: Flow) -> None:
    task = flow.run("echo oops >&2; exit 3", upload_code=False).wait(timeout=30)
    assert task.last_status is TaskStatus.FAILED
    assert task.exit_code == 3
    assert task.state_reason == "exited with code 3"
    assert task.logs() == "oops\n"


def test_missing_program_fails_with_127(flow: Flow) -> None:
    task = flow.run(["definitely-not-a-program-flow"], upload_code=False).wait(timeout=30)
    assert task.last_status is TaskStatus.FAILED
    assert task.exit_code == 127


def test_argv_reaches_the_program_byte_for_byte(flow: Flow, tmp_path: Path) -> None:
    hostile = ["a b", "$(touch pwned)", "`id`", "'quoted'", '"dq"', "new\nline", "; rm -rf /", "*", "", "ü"]
    out = tmp_path / "argv.json"
    program = "import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], 'w'))"
    task = flow.run(["python3", "-c", program, str(out), *hostile], upload_code=False).wait(timeout=30)
    assert task.last_status is TaskStatus.COMPLETED, task.logs()
    assert json.loads(out.read_text()) == hostile
    assert not (Path(task.config.code_root or "/nonexistent") / "pwned").exists()


def test_env_values_are_passed_verbatim(flow: Flow) -> None:
    value = 'it\'s $HOME `x` "q"\nsecond line'
    task = flow.run(
        ["python3", "-c", "import os; print(repr(os.environ['WEIRD']))"], env={"WEIRD": value}, upload_code=False
    )
    assert task.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert task.logs().strip() == repr(value)


def test_task_sees_its_identity_and_runs_in_a_snapshot_of_the_submit_directory(
    flow: Flow, shared_daemon: object, tmp_path: Path
) -> None:
    (tmp_path / "train.py").write_text("import os; print(os.environ['FLOW_TASK_ID'], os.getcwd())\n")
    task = flow.run("python3 train.py", code_root=str(tmp_path)).wait(timeout=30)
    home = shared_daemon.home
    assert task.logs().split() == [task.task_id, str(home.task_dir(task.task_id) / "code")]


def test_script_without_shebang_runs_as_python(flow: Flow) -> None:
    task = flow.run(TaskConfig(script="import sys\nprint('py', sys.version_info[0])\n", upload_code=False))
    assert task.wait(timeout=30).logs() == "py 3\n"


def test_script_with_shebang_uses_its_interpreter(flow: Flow) -> None:
    task = flow.run(TaskConfig(script='#!/bin/sh\necho from-sh "$0" | cut -c1-7\n', upload_code=False))
    assert task.wait(timeout=30).logs() == "from-sh\n"


def test_default_command_is_sleep_infinity_until_cancelled(flow: Flow) -> None:
    task = flow.run(TaskConfig(upload_code=False))
    wait_until(lambda: task.status is TaskStatus.RUNNING, 10)
    with pytest.raises(errors.TimeoutError):
        task.wait(timeout=0.3)
    task.cancel()
    assert task.wait(timeout=30).last_status is TaskStatus.CANCELLED


def test_cancel_stops_the_whole_process_group(flow: Flow, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A shell that leaves a background child and then waits: both must be gone after cancel.
    task = flow.run(f"sleep 600 & echo $$ $! > {pids}; wait", upload_code=False)
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 10)
    shell_pid, child_pid = map(int, pids.read_text().split())
    assert pid_alive(shell_pid) and pid_alive(child_pid)
    task.cancel()
    final = task.wait(timeout=30)
    assert final.last_status is TaskStatus.CANCELLED
    assert final.state_reason == "cancelled by user"
    wait_until(lambda: not pid_alive(shell_pid) and not pid_alive(child_pid), 10)


def test_cancel_escalates_to_sigkill_after_the_grace_period(daemon: object, tmp_path: Path) -> None:
    client: Flow = daemon.client()
    ready = tmp_path / "ready"
    program = (
        "import signal, time, pathlib, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).write_text('x')\n"
        "time.sleep(600)\n"
    )
    task = client.run(TaskConfig(script=program, upload_code=False))
    wait_until(ready.exists, 10)
    started = time.monotonic()
    task.cancel()
    final = task.wait(timeout=60)
    assert final.last_status is TaskStatus.CANCELLED
    assert final.exit_code == 137  # SIGKILL: it ignored SIGTERM
    assert time.monotonic() - started >= 5  # the grace period was honoured


def test_cancelling_a_finished_task_changes_nothing(flow: Flow) -> None:
    task = flow.run("true", upload_code=False).wait(timeout=30)
    task.cancel()
    assert task.refresh().last_status is TaskStatus.COMPLETED
    assert task.exit_code == 0


def test_max_run_time_ends_the_task_as_failed_timeout(flow: Flow) -> None:
    task = flow.run("sleep 600", max_run_time_hours=1.0 / 3600, upload_code=False)  # one second
    final = task.wait(timeout=60)
    assert final.last_status is TaskStatus.FAILED
    assert final.state_reason.startswith("TIMEOUT")
    assert final.exit_code == 143


def test_missing_working_dir_fails_before_running(flow: Flow) -> None:
    task = flow.run("true", working_dir="/no/such/dir/for/flow", upload_code=False)
    assert task.last_status is TaskStatus.FAILED
    assert "working directory" in task.state_reason and "/no/such/dir/for/flow" in task.state_reason


def test_gpu_request_fails_fast_on_a_machine_without_gpus(flow: Flow) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has NVIDIA GPUs")
    with pytest.raises(ResourceNotAvailableError) as caught:
        flow.run("true", instance_type="8xh100", upload_code=False)
    assert caught.value.error_code == "RESOURCE_NOT_AVAILABLE"
    assert any("instance_type" in s for s in caught.value.suggestions)


def test_unknown_task_is_task_not_found(flow: Flow) -> None:
    with pytest.raises(TaskNotFoundError) as caught:
        flow.get_task("t-doesnotexist")
    assert "t-doesnotexist" in caught.value.message


def test_invalid_config_is_refused_before_submit(flow: Flow) -> None:
    with pytest.raises(ValidationError) as caught:
        flow.run("true", num_instances=0, region="Not A Region")
    fields = {v.field for v in caught.value.violations}
    assert fields == {"num_instances", "region"}


def test_list_tasks_pages_newest_first_and_filters_by_state(daemon: object) -> None:
    client: Flow = daemon.client()
    done = [client.run(["true"], upload_code=False).wait(timeout=30) for _ in range(5)]
    running = client.run(["sleep", "600"], upload_code=False)
    listed = client.list_tasks(limit=100)
    assert [t.task_id for t in listed] == [running.task_id] + [t.task_id for t in reversed(done)]
    assert [t.task_id for t in client.list_tasks(limit=3)] == [running.task_id, done[4].task_id, done[3].task_id]
    only_running = client.list_tasks(status=TaskStatus.RUNNING)
    assert [t.task_id for t in only_running] == [running.task_id]
    running.cancel()


def test_logs_tail_gives_the_last_lines(flow: Flow) -> None:
    task = flow.run("for i in 1 2 3 4 5; do echo line$i; done", upload_code=False).wait(timeout=30)
    assert task.logs(tail=2) == "line4\nline5\n"


def test_validate_only_launches_nothing(flow: Flow) -> None:
    before = len(flow.list_tasks(limit=1000))
    planned = flow.validate("echo would-run", upload_code=False)
    assert planned.instance_type == "cpu"
    assert planned.task_id == ""
    assert len(flow.list_tasks(limit=1000)) == before


def test_status_moves_through_running_to_completed(flow: Flow, tmp_path: Path) -> None:
    go = tmp_path / "go"
    task = flow.run(f"while [ ! -e {go} ]; do sleep 0.01; done; echo done", upload_code=False)
    assert task.last_status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    wait_until(lambda: task.status is TaskStatus.RUNNING, 10)
    assert task.is_running and not task.is_terminal
    go.write_text("")
    assert task.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert task.is_terminal


def test_many_short_tasks_all_complete_with_their_own_output(flow: Flow) -> None:
    tasks = [flow.run(["sh", "-c", f"echo {i}; exit {i % 3}"], upload_code=False) for i in range(40)]
    for i, task in enumerate(tasks):
        task.wait(timeout=60)
        assert task.exit_code == i % 3
        assert task.logs() == f"{i}\n"
    assert len({t.task_id for t in tasks}) == 40


def test_task_environment_does_not_leak_daemon_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import Daemon, _cleanup, short_tmpdir

    canary = "fkey_" + "canary0secret0" * 2  # a well-formed key: flowd configures Mithril from it
    monkeypatch.setenv("MITHRIL_API_KEY", canary)
    d = Daemon(short_tmpdir("flow-s-"))
    d.start()
    try:
        client: Flow = d.client(provider="local")
        task = client.run(["sh", "-c", "echo ${MITHRIL_API_KEY:-unset}; env"], upload_code=False).wait(timeout=30)
        assert task.logs().splitlines()[0] == "unset"
        assert canary not in task.logs()
        assert canary not in d.home.daemon_log.read_text()
    finally:
        _cleanup(d)


def test_settings_the_local_provider_cannot_honour_are_refused_not_ignored(flow: Flow) -> None:
    from flow import MountSpec, VolumeSpec

    # Volumes and data mounts are supported (tests/volumes) and images run where a container
    # engine works (tests/e2e/test_images.py). Together they are not given yet: refused before
    # anything is created. Where no engine works at all, the image alone is refused first,
    # saying how to run on the host instead.
    with pytest.raises((ResourceNotAvailableError, VolumeError)) as caught:
        flow.run(
            "true",
            image="pytorch/pytorch:2.1.0",
            volumes=[VolumeSpec(name="data", size_gb=10)],
            data_mounts=[MountSpec(source="s3://bucket/x", target="/data")],
            upload_code=False,
        )
    assert "image" in str(caught.value)
