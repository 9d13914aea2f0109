"""Dependencies on a real Slurm: between jobs of the cluster they are Slurm's own (--dependency,
checked with squeue -o %E and scontrol show job), with --begin and --nice; what Slurm cannot see
(a task of another provider) flowd holds; a dependency that can never be met cancels the job
instead of leaving it pending as DependencyNeverSatisfied. From the SDK and `flow slurm submit`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import Daemon, wait_until
from flow import Flow, TaskStatus

from .conftest import MODES, Stack

DEADLINE = 120


def gated(gate: Path, then: str) -> str:
    return f"while [ ! -e {gate} ]; do sleep 0.05; done; {then}"


def job(stack: Stack, name: str) -> dict[str, str]:
    """The task's job (named as the task: its id unless given a name): id, state, reason,
    dependency, nice."""
    out = stack.slurm("squeue", "-h", "-t", "all", "-n", name, "-o", "%i|%T|%r|%E|%y").stdout.split("\n")
    found = [line for line in out if line.strip()]
    if not found:
        return {}
    job_id, state, reason, dependency, nice = found[-1].split("|")
    return {"id": job_id, "state": state, "reason": reason, "dependency": dependency, "nice": nice}


def client(daemon: Daemon, mode: str) -> Flow:
    return daemon.client(provider=mode)  # type: ignore[return-value]


@pytest.mark.parametrize("mode", MODES)
def test_a_dependency_between_jobs_of_the_cluster_is_slurms_own(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, gate: Path
) -> None:
    flow = client(slurm_daemon, mode)
    first = flow.run(gated(gate, "echo first"), upload_code=False)
    second = flow.run("echo second", depends_on=[first], upload_code=False)
    wait_until(lambda: job(slurm_stack, first.task_id).get("id"), DEADLINE)
    first_job = job(slurm_stack, first.task_id)["id"]
    native = job(slurm_stack, second.task_id)
    assert native["dependency"] == f"afterok:{first_job}(unfulfilled)"  # squeue -o %E
    wait_until(lambda: job(slurm_stack, second.task_id)["reason"] == "Dependency", DEADLINE)  # next scheduler pass
    assert job(slurm_stack, second.task_id)["state"] == "PENDING"
    shown = slurm_stack.job(native["id"])  # scontrol show job
    assert shown["Dependency"] == f"afterok:{first_job}(unfulfilled)"
    assert second.refresh().last_status is TaskStatus.PENDING
    assert second.state_reason == f"waiting for {first.task_id} to complete (afterok), in slurm's queue"
    gate.touch()
    assert second.wait(timeout=DEADLINE).last_status is TaskStatus.COMPLETED
    assert second.logs() == "second\n"


@pytest.mark.parametrize("mode", MODES)
def test_a_native_dependency_that_can_never_be_met_is_cancelled_not_left_pending(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, gate: Path
) -> None:
    flow = client(slurm_daemon, mode)
    first = flow.run(gated(gate, "exit 5"), upload_code=False)
    second = flow.run("echo never", depends_on=[first], upload_code=False)
    third = flow.run("echo never", depends_on=[second], upload_code=False)
    wait_until(lambda: job(slurm_stack, third.task_id).get("dependency", "").startswith("afterok:"), DEADLINE)
    gate.touch()
    assert second.wait(timeout=DEADLINE).last_status is TaskStatus.CANCELLED
    assert second.state_reason == f"dependency {first.task_id} ended FAILED (afterok)"
    assert third.wait(timeout=DEADLINE).last_status is TaskStatus.CANCELLED
    assert third.state_reason == f"dependency {second.task_id} was cancelled: {second.state_reason}"
    # Slurm would have kept them PENDING (DependencyNeverSatisfied): Flow cancelled the jobs.
    for task in (second, third):
        wait_until(lambda t=task: job(slurm_stack, t.task_id).get("state") in (None, "CANCELLED"), DEADLINE)
        assert second.started_at is None


@pytest.mark.parametrize("mode", MODES)
def test_begin_and_priority_are_slurms_begin_and_nice(slurm_daemon: Daemon, slurm_stack: Stack, mode: str) -> None:
    flow = client(slurm_daemon, mode)
    later = flow.run("true", start_after=time.time() + 600, priority=-7, upload_code=False)
    native = job(slurm_stack, later.task_id)
    assert native["reason"] == "BeginTime" and native["nice"] == "7"
    begin = time.mktime(time.strptime(slurm_stack.job(native["id"])["StartTime"], "%Y-%m-%dT%H:%M:%S"))
    assert begin >= time.time() + 500
    raised = flow.run("true", start_after=time.time() + 600, priority=5, upload_code=False)
    # Only a privileged user may raise a job's priority (negative nice): root can (slurm-local
    # runs as root here), the SSH test user cannot, and gets the default instead of a refusal.
    assert job(slurm_stack, raised.task_id)["nice"] == ("-5" if mode == "slurm-local" else "0")
    for task in (later, raised):
        task.cancel()
        assert task.wait(timeout=DEADLINE).last_status is TaskStatus.CANCELLED


def test_flowd_holds_what_slurm_cannot_see_and_passes_the_rest(
    slurm_daemon: Daemon, slurm_stack: Stack, tmp_path: Path, gate: Path
) -> None:
    flow = client(slurm_daemon, "slurm-local")
    local_gate = tmp_path / "local-gate"
    prepared = client(slurm_daemon, "local").run(["sh", "-c", gated(local_gate, "true")], upload_code=False)
    running = flow.run(gated(gate, "true"), upload_code=False)
    train = flow.run("echo trained", depends_on=[prepared, running], upload_code=False)
    wait_until(lambda: job(slurm_stack, running.task_id).get("id"), DEADLINE)
    assert train.refresh().state_reason == f"waiting for {prepared.task_id} to complete (afterok)"
    assert job(slurm_stack, train.task_id) == {}  # not submitted yet: flowd holds it
    local_gate.touch()
    wait_until(lambda: job(slurm_stack, train.task_id).get("dependency"), DEADLINE)
    running_job = job(slurm_stack, running.task_id)["id"]
    assert job(slurm_stack, train.task_id)["dependency"] == f"afterok:{running_job}(unfulfilled)"
    gate.touch()
    assert train.wait(timeout=DEADLINE).logs() == "trained\n"


def test_a_slurm_task_after_a_job_that_already_ended(slurm_daemon: Daemon, slurm_stack: Stack) -> None:
    """Slurm forgets ended jobs (MinJobAge, 2 s here) and then takes a dependency on them as
    met: flowd decides on ended tasks itself, so a failed one still cancels its dependent."""
    flow = client(slurm_daemon, "slurm-local")
    failed = flow.run("exit 3", upload_code=False)
    wait_until(lambda: job(slurm_stack, failed.task_id).get("id"), DEADLINE)
    failed_job = job(slurm_stack, failed.task_id)["id"]
    assert failed.wait(timeout=DEADLINE).last_status is TaskStatus.FAILED
    wait_until(lambda: not slurm_stack.job(failed_job), DEADLINE)  # gone from the controller
    after = flow.run("echo never", depends_on=[failed], upload_code=False)
    assert after.last_status is TaskStatus.CANCELLED and job(slurm_stack, after.task_id) == {}
    anyway = flow.run("echo anyway", depends_on=[f"{failed.task_id}:afterany"], upload_code=False)
    assert anyway.wait(timeout=DEADLINE).logs() == "anyway\n"


@pytest.mark.parametrize("provider", ["slurm-local", "local"])
def test_flow_slurm_submit_maps_dependency_begin_and_nice(
    slurm_daemon: Daemon, slurm_stack: Stack, tmp_path: Path, gate: Path, provider: str
) -> None:
    flow = client(slurm_daemon, "slurm-local")
    first = client(slurm_daemon, provider).run(gated(gate, "true"), upload_code=False)
    script = tmp_path / "train.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --dependency=afterok:{first.task_id} --nice=3\necho trained\n")
    submitted = slurm_daemon.flow_cli("slurm", "submit", "--provider", provider, "-d", "--json", str(script))
    assert submitted.returncode == 0, submitted.stderr
    assert "warning" not in submitted.stderr  # mapped, not ignored
    task = flow.get_task(json.loads(submitted.stdout)[0]["task_id"])
    assert task.config.depends_on[0].task_id == first.task_id and task.config.priority == -3
    if provider == "slurm-local":
        wait_until(lambda: job(slurm_stack, first.task_id).get("id"), DEADLINE)
        native = job(slurm_stack, task.name)  # the job is named as the script says (here: by its file)
        assert native["dependency"] == f"afterok:{job(slurm_stack, first.task_id)['id']}(unfulfilled)"
        assert native["nice"] == "3"
    else:
        assert task.state_reason == f"waiting for {first.task_id} to complete (afterok)"
    # The command line wins over the script, as with sbatch.
    later = slurm_daemon.flow_cli(
        "slurm", "submit", "--provider", provider, "-d", "--json", "--begin", "now+600", "--priority", "2", str(script)
    )
    assert later.returncode == 0, later.stderr
    held = flow.get_task(json.loads(later.stdout)[0]["task_id"])
    assert held.config.priority == 2 and held.config.start_after is not None
    gate.touch()
    assert task.wait(timeout=DEADLINE).logs() == "trained\n"
    held.cancel()
