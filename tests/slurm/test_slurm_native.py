"""sbatch scripts on a slurm provider, as a Slurm user expects them to run: an --array is ONE array
job (its throttle, SLURM_ARRAY_JOB_ID, scancel of the array), each element a Flow task with its own
state, log and exit code; the script's own --output files are written where it says and are the
task's log; -i replaces the script's GPU request; a dry run asks sbatch --test-only; what the
cluster refuses names the script's directive; `flow cancel` says the state it reached."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, wait_until
from flow import Flow, TaskStatus

from .conftest import MODES, Stack

pytestmark = pytest.mark.parametrize("mode", MODES)


@pytest.fixture
def out(slurm_stack: Stack) -> Iterator[Path]:
    """A directory jobs of either mode write and this test reads."""
    path = slurm_stack.shared / f"native-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    path.chmod(0o777)  # the SSH mode's jobs run as the test user
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_an_array_is_one_slurm_array_job_whose_elements_are_tasks(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, tmp_path: Path, out: Path, gate: Path
) -> None:
    script = tmp_path / "sweep.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH -J gpt-1.3b-sweep --array=0-5%2\n"
        f"#SBATCH --out={out}/%x_%A_%a.out\n"
        'echo "element $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID ($SLURM_JOB_NAME)"\n'
        f"while [ ! -e {gate} ]; do sleep 0.05; done\n"
        '[ "$SLURM_ARRAY_TASK_ID" = 3 ] && exit 3\n'
        "exit 0\n"
    )
    done = slurm_daemon.flow_cli("slurm", "submit", str(script), "--provider", mode, "-d", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    flow: Flow = slurm_daemon.client(provider=mode)
    tasks = [flow.get_task(t["task_id"]) for t in json.loads(done.stdout)]
    assert [t.name for t in tasks] == [f"gpt-1-3b-sweep-{k}" for k in range(6)]
    # One array job: its throttle holds all but two elements back, in Slurm's queue.
    wait_until(lambda: sum(t.status is TaskStatus.RUNNING for t in tasks) == 2, 60)
    listed = slurm_stack.slurm("squeue", "-h", "-n", "gpt-1.3b-sweep", "-o", "%i|%T|%r").stdout.split()
    array_ids = {line.split("_")[0] for line in listed}
    assert len(array_ids) == 1, listed
    assert any(line.endswith("|PENDING|JobArrayTaskLimit") for line in listed), listed
    assert [t.status for t in tasks[2:]] == [TaskStatus.PENDING] * 4
    gate.touch()
    ended = [t.wait(timeout=120) for t in tasks]
    assert [t.last_status for t in ended] == [TaskStatus.COMPLETED] * 3 + [TaskStatus.FAILED] + [
        TaskStatus.COMPLETED
    ] * 2
    assert ended[3].exit_code == 3
    (array_id,) = array_ids
    for k, task in enumerate(ended):
        written = out / f"gpt-1.3b-sweep_{array_id}_{k}.out"  # where the script's pattern says
        assert written.read_text() == f"element {k} of {array_id} (gpt-1.3b-sweep)\n"
        assert task.logs() == written.read_text()  # the task's log is that file


def test_cancelling_the_array_cancels_every_element_left(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, tmp_path: Path
) -> None:
    script = tmp_path / "long.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --array=1-4%1 -J long-sweep\necho started; sleep 600\n")
    done = slurm_daemon.flow_cli("slurm", "submit", str(script), "--provider", mode, "-d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    flow: Flow = slurm_daemon.client(provider=mode)
    tasks = [flow.get_task(task_id) for task_id in done.stdout.split()]
    wait_until(lambda: tasks[0].status is TaskStatus.RUNNING and tasks[0].logs() == "started\n", 60)
    cancelled = slurm_daemon.flow_cli("slurm", "cancel", tasks[2].task_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert {t["task_id"] for t in json.loads(cancelled.stdout)} == {t.task_id for t in tasks}
    assert [t.wait(timeout=60).last_status for t in tasks] == [TaskStatus.CANCELLED] * 4
    wait_until(lambda: not slurm_stack.slurm("squeue", "-h", "-n", "long-sweep").stdout.strip(), 60)


def test_scancel_of_the_array_job_ends_every_element_task(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, tmp_path: Path
) -> None:
    """What a Slurm user does by hand (`scancel ARRAYJOB`) ends every element's Flow task: the
    running one and those the throttle held in the queue, each with its own state."""
    name = f"scancelled-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "sweep.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --array=0-2%1 -J {name}\necho started; sleep 600\n")
    done = slurm_daemon.flow_cli("slurm", "submit", str(script), "--provider", mode, "-d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    flow: Flow = slurm_daemon.client(provider=mode)
    tasks = [flow.get_task(task_id) for task_id in done.stdout.split()]
    wait_until(lambda: tasks[0].status is TaskStatus.RUNNING and tasks[0].logs() == "started\n", 60)
    (array_id,) = {
        line.split("_")[0] for line in slurm_stack.slurm("squeue", "-h", "-n", name, "-o", "%i").stdout.split()
    }
    assert slurm_stack.slurm("scancel", array_id).returncode == 0
    ended = [t.wait(timeout=120) for t in tasks]
    assert all(t.is_terminal for t in ended)
    # Cancelled outside Flow: FAILED, the reason saying Slurm cancelled it (README, Status).
    assert [t.last_status for t in ended] == [TaskStatus.FAILED] * 3, [(t.last_status, t.state_reason) for t in ended]
    assert all(t.state_reason.startswith("CANCELLED") for t in ended), [t.state_reason for t in ended]
    wait_until(lambda: not slurm_stack.slurm("squeue", "-h", "-n", name).stdout.strip(), 60)


def test_an_instance_type_given_at_submission_is_what_the_job_gets(
    slurm_daemon: Daemon, mode: str, tmp_path: Path
) -> None:
    script = tmp_path / "one.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --gres=gpu:1 -t 5\necho gpus=$CUDA_VISIBLE_DEVICES\n")
    done = slurm_daemon.flow_cli("slurm", "submit", str(script), "--provider", mode, "-i", "2xa100", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the script asks for 1 GPU per node; the task gets 2x a100 per node" in done.stderr
    assert done.stdout == "gpus=0,1\n"  # what the warning says: -i wins, as sbatch --gres would


def test_a_dry_run_asks_slurm_and_says_what_it_would_refuse(slurm_daemon: Daemon, mode: str, tmp_path: Path) -> None:
    bad = tmp_path / "tesla.sbatch"
    bad.write_text("#!/bin/bash\n#SBATCH -t 5\n#SBATCH --gres=gpu:tesla:1\ntrue\n")
    refused = slurm_daemon.flow_cli("slurm", "submit", str(bad), "--provider", mode, "--dry-run", cwd=tmp_path)
    assert refused.returncode != 0 and "valid:" not in refused.stdout
    assert "Requested node configuration is not available" in refused.stderr
    assert "#SBATCH --gres gpu:tesla:1 (line 3)" in refused.stderr  # the hint names the line to fix
    zero = tmp_path / "zero.sbatch"  # a count spelled as a word: a GRES no cluster can run
    zero.write_text("#!/bin/bash\n#SBATCH --gres=gpu:zero\ntrue\n")
    refused = slurm_daemon.flow_cli("slurm", "submit", str(zero), "--provider", mode, "--dry-run", cwd=tmp_path)
    assert refused.returncode != 0 and "valid:" not in refused.stdout
    assert "#SBATCH --gres (line 2): is not a valid GRES" in refused.stderr
    good = tmp_path / "good.sbatch"
    good.write_text("#!/bin/bash\n#SBATCH -J ok --gres=gpu:1 --mail-type=END -a 0-1\ntrue\n")
    plan = slurm_daemon.flow_cli("slurm", "submit", str(good), "--provider", mode, "--dry-run", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    shown = json.loads(plan.stdout)
    assert shown["valid"] and shown["provider_kind"] == "slurm"
    assert [d["option"] for d in shown["slurm_directives"]["passed_through"]] == ["--mail-type"]
    assert [t["validation"]["instance_type"] for t in shown["tasks"]] == ["a100-80gb.sxm.1x"] * 2
    listed = slurm_daemon.client(provider=mode).list_tasks(limit=1000)
    assert not [t for t in listed if t.name.startswith("ok-")]  # nothing was submitted


def test_what_the_cluster_refuses_names_the_scripts_directive(slurm_daemon: Daemon, mode: str, tmp_path: Path) -> None:
    partition = tmp_path / "part.sbatch"
    partition.write_text("#!/bin/bash\n#SBATCH --part=nope\ntrue\n")
    done = slurm_daemon.flow_cli("slurm", "submit", str(partition), "--provider", mode, cwd=tmp_path)
    assert done.returncode != 0
    assert "no partition 'nope'" in done.stderr
    assert "change #SBATCH --part nope (line 2) in the script to one of:" in done.stderr
    assert "config.yaml" not in done.stderr  # a provider setting cannot override the script's own
    feature = tmp_path / "feature.sbatch"
    feature.write_text("#!/bin/bash\n#SBATCH -t 5 --constraint=nosuchfeature\ntrue\n")
    done = slurm_daemon.flow_cli("slurm", "submit", str(feature), "--provider", mode, cwd=tmp_path)
    assert done.returncode != 0
    assert "Slurm (provider" in done.stderr and "refused the job" in done.stderr
    assert "fix or remove #SBATCH --constraint nosuchfeature (line 2) in the script" in done.stderr


def test_flow_cancel_says_the_state_it_reached(slurm_daemon: Daemon, mode: str) -> None:
    task = slurm_daemon.client(provider=mode).run("echo up; sleep 600", upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs() == "up\n", 60)
    done = slurm_daemon.flow_cli("cancel", task.task_id)
    assert done.returncode == 0, done.stderr
    assert "CANCELLED" in done.stdout and "RUNNING" not in done.stdout
    assert task.refresh().last_status is TaskStatus.CANCELLED
