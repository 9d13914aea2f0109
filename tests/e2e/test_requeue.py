"""A task that asks to run again, through a real flowd on the local provider: the way a
checkpointing program (submitit's Checkpointable) requeues itself. It exits with status 75
(EX_TEMPFAIL), on its own or in answer to the SIGTERM of max_run_time_hours, and flowd runs it
again under the same task id while TaskConfig.max_retries allows, keeping each run in its history."""

from __future__ import annotations

import json

from conftest import Daemon
from flow import Flow, TaskStatus

# The first run leaves a mark in the task's working directory (kept between runs) and asks to
# run again; the second finds the mark and completes.
TWICE = "if [ -e ran-once ]; then echo second run; else touch ran-once; echo first run; exit 75; fi"


def test_a_task_that_exits_75_runs_again_under_its_id_and_completes(flow: Flow, shared_daemon: Daemon) -> None:
    task = flow.run(TWICE, upload_code=False, max_retries=2).wait(timeout=60)
    assert task.last_status is TaskStatus.COMPLETED, (task.state_reason, task.logs())
    assert task.logs() == "first run\nsecond run\n"  # one log, both runs
    (attempt,) = task.attempts
    assert (attempt.state, attempt.exit_code) == (TaskStatus.FAILED, 75)
    shown = shared_daemon.flow_cli("status", task.task_id)
    assert shown.returncode == 0 and "attempt 1: FAILED, exit 75" in shown.stdout, shown.stdout
    as_json = json.loads(shared_daemon.flow_cli("status", task.task_id, "--json").stdout)
    assert [a["exit_code"] for a in as_json["attempts"]] == [75]


def test_retries_are_bounded_and_opt_in(flow: Flow) -> None:
    always = flow.run("echo again; exit 75", upload_code=False, max_retries=2).wait(timeout=60)
    assert always.last_status is TaskStatus.FAILED and always.exit_code == 75
    assert len(always.attempts) == 2 and always.logs() == "again\n" * 3
    never = flow.run("exit 75", upload_code=False).wait(timeout=60)
    assert never.last_status is TaskStatus.FAILED and never.attempts == ()


def test_a_task_stopped_at_its_time_limit_requeues_itself_from_its_sigterm_handler(flow: Flow) -> None:
    """max_run_time_hours sends SIGTERM; a checkpointing program saves and exits 75, and runs again
    with the whole time limit."""
    script = (
        "if [ -e checkpoint ]; then echo resumed from $(cat checkpoint); exit 0; fi\n"
        "trap 'echo 41 > checkpoint; echo checkpointed; exit 75' TERM\n"
        "echo started\n"
        "while true; do sleep 0.05; done\n"
    )
    task = flow.run(script, upload_code=False, max_retries=1, max_run_time_hours=1 / 3600).wait(timeout=120)
    assert task.last_status is TaskStatus.COMPLETED, (task.state_reason, task.logs())
    lines = task.logs().splitlines()  # (bash may say "Terminated" for its sleep, which got SIGTERM too)
    assert lines[0] == "started" and "checkpointed" in lines and lines[-1] == "resumed from 41"
    (attempt,) = task.attempts
    assert attempt.exit_code == 75 and "TIMEOUT" in attempt.state_reason


def test_a_two_node_task_runs_again_when_one_node_asks(flow: Flow) -> None:
    # Node 1 asks on the first run (node 0 is then stopped, as when a node fails); both finish the second.
    script = (
        'if [ "$NODE_RANK" = 1 ] && [ ! -e asked ]; then touch asked; echo asking; exit 75; fi\n'
        "[ -e asked ] || sleep 600\n"
        'echo "node $NODE_RANK done"\n'
    )
    task = flow.run(script, upload_code=False, num_instances=2, max_retries=1).wait(timeout=120)
    assert task.last_status is TaskStatus.COMPLETED, (task.state_reason, task.logs())
    assert task.logs(node=1).splitlines() == ["asking", "node 1 done"]
    assert task.logs(node=0).splitlines()[-1] == "node 0 done"
    (attempt,) = task.attempts
    assert attempt.exit_code == 75


def test_flow_run_takes_max_retries(shared_daemon: Daemon) -> None:
    done = shared_daemon.flow_cli("run", "--max-retries", "1", "--json", TWICE)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["status"] == "COMPLETED" and [a["exit_code"] for a in shown["attempts"]] == [75]
