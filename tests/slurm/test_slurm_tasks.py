"""Tasks on a real Slurm through a real flowd, from the login node (slurm-local) and over SSH
(slurm-ssh): what a user of `flow.run(..., provider=...)` relies on."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import Daemon, wait_until
from flow import Flow, TaskConfig, TaskStatus
from flow.errors import ResourceNotAvailableError, ValidationError

from .conftest import MODES, Stack

pytestmark = pytest.mark.parametrize("mode", MODES)


def client(daemon: Daemon, mode: str) -> Flow:
    return daemon.client(provider=mode)


def job_of(stack: Stack, task_id: str) -> tuple[str, str]:
    """(job id, state) of the task's Slurm job (its name is the task id)."""
    out = stack.slurm("squeue", "-h", "-t", "all", "-n", task_id, "-o", "%i|%T").stdout.split()
    assert out, f"no Slurm job named {task_id}"
    job_id, state = out[-1].split("|")
    return job_id, state


def gated(gate: Path, before: str, after: str) -> str:
    return f"echo {before}; while [ ! -e {gate} ]; do sleep 0.05; done; {after}"


def test_a_task_runs_streams_its_log_live_and_completes(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, gate: Path
) -> None:
    flow = client(slurm_daemon, mode)
    task = flow.run(gated(gate, "first", "echo second"), upload_code=False)
    assert task.provider == mode
    wait_until(lambda: task.status is TaskStatus.RUNNING, 30)
    assert job_of(slurm_stack, task.task_id)[1] == "RUNNING"
    wait_until(lambda: task.logs() == "first\n", 30)  # while the job still runs
    assert task.status is TaskStatus.RUNNING
    gate.touch()
    streamed = b"".join(chunk.data for chunk in task.log_chunks(follow=True))
    assert streamed == b"first\nsecond\n"
    assert task.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert (task.exit_code, task.state_reason) == (0, "exited with code 0")
    assert task.started_at and task.completed_at and task.started_at <= task.completed_at


def test_a_non_zero_exit_fails_with_the_exit_code(slurm_daemon: Daemon, mode: str) -> None:
    task = client(slurm_daemon, mode).run("echo oops >&2; exit 3", upload_code=False).wait(timeout=60)
    assert (task.last_status, task.exit_code, task.state_reason) == (TaskStatus.FAILED, 3, "exited with code 3")
    assert task.logs() == "oops\n"


def test_cancel_stops_the_slurm_job(slurm_daemon: Daemon, slurm_stack: Stack, mode: str) -> None:
    task = client(slurm_daemon, mode).run("echo started; sleep 300", upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs() == "started\n", 30)
    task.cancel()
    assert task.wait(timeout=60).last_status is TaskStatus.CANCELLED
    assert task.state_reason == "cancelled by user"
    wait_until(lambda: job_of(slurm_stack, task.task_id)[1] == "CANCELLED", 30)


def test_gpus_are_scheduled_by_gres_and_a_queued_task_is_pending_until_slurm_runs_it(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, gate: Path
) -> None:
    flow = client(slurm_daemon, mode)
    # Both (fake) GPUs of the node: CUDA_VISIBLE_DEVICES is Slurm's, through --gres=gpu:2.
    both = flow.run(gated(gate, "cvd=$CUDA_VISIBLE_DEVICES", "true"), instance_type="2xa100", upload_code=False)
    assert both.instance_type == "a100-80gb.sxm.2x"
    wait_until(lambda: both.logs() == "cvd=0,1\n", 30)
    # One more GPU: the job waits in Slurm's queue (Reason=Resources), and so does the task.
    waiting = flow.run("echo cvd=$CUDA_VISIBLE_DEVICES", instance_type="a100", upload_code=False)
    wait_until(lambda: job_of(slurm_stack, waiting.task_id)[1] == "PENDING", 30)
    time.sleep(1.0)  # several polls
    assert waiting.status is TaskStatus.PENDING and waiting.started_at is None
    gate.touch()
    assert both.wait(timeout=60).last_status is TaskStatus.COMPLETED
    assert waiting.wait(timeout=60).last_status is TaskStatus.COMPLETED
    assert waiting.logs() in ("cvd=0\n", "cvd=1\n")
    assert waiting.started_at is not None and both.completed_at is not None
    assert waiting.started_at >= both.completed_at - timedelta(seconds=1)


def test_a_queued_task_can_be_cancelled_and_its_job_leaves_the_queue(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, gate: Path
) -> None:
    flow = client(slurm_daemon, mode)
    blocker = flow.run(gated(gate, "blocking", "true"), instance_type="2xa100", upload_code=False)
    wait_until(lambda: blocker.logs() == "blocking\n", 30)
    waiting = flow.run("echo never", instance_type="a100", upload_code=False)
    wait_until(lambda: job_of(slurm_stack, waiting.task_id)[1] == "PENDING", 30)
    waiting.cancel()
    assert waiting.wait(timeout=30).last_status is TaskStatus.CANCELLED
    wait_until(lambda: job_of(slurm_stack, waiting.task_id)[1] == "CANCELLED", 30)
    gate.touch()
    assert blocker.wait(timeout=60).last_status is TaskStatus.COMPLETED
    assert waiting.logs() == ""


def test_env_values_and_arguments_reach_the_job_verbatim(slurm_daemon: Daemon, mode: str, tmp_path: Path) -> None:
    hostile = ["a b", "$(touch /tmp/pwned-flow)", "`id`", "'q'", '"dq"', "new\nline", "*", "", "ü", "\\"]
    program = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['WEIRD']]))"
    value = 'it\'s $HOME `x` "q"\nsecond line %j #SBATCH'
    task = client(slurm_daemon, mode).run(
        ["python3", "-c", program, *hostile], env={"WEIRD": value}, upload_code=False, name="verbatim"
    )
    assert task.wait(timeout=60).last_status is TaskStatus.COMPLETED, task.logs()
    assert json.loads(task.logs()) == [hostile, value]
    assert not Path("/tmp/pwned-flow").exists()


def test_code_snapshot_and_function_results(slurm_daemon: Daemon, mode: str, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("from the snapshot\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
    (tmp_path / "pkg" / "tool.sh").chmod(0o755)
    (tmp_path / "fns.py").write_text("def double(x):\n    return {'value': 2 * x}\n")
    flow = client(slurm_daemon, mode)
    task = flow.run("cat data.txt && pkg/tool.sh && pwd", code_root=str(tmp_path)).wait(timeout=60)
    assert task.last_status is TaskStatus.COMPLETED, task.logs()
    lines = task.logs().splitlines()
    assert lines[:2] == ["from the snapshot", "tool ran"]
    assert lines[2].endswith(f"/tasks/{task.task_id}/code")
    inside = flow.run("pwd", code_root=str(tmp_path), working_dir="pkg").wait(timeout=60)
    assert inside.logs().strip().endswith(f"/tasks/{inside.task_id}/code/pkg")
    from flow import invoke

    assert invoke(str(tmp_path / "fns.py"), "double", args=[21], flow=flow, code_root=str(tmp_path)) == {"value": 42}


def test_offers_come_from_sinfo_and_impossible_requests_fail_before_launch(slurm_daemon: Daemon, mode: str) -> None:
    flow = client(slurm_daemon, mode)
    # The other partitions are the namespaced nodes' (tools/test-stack): this test is about debug.
    found = [o for o in flow.find_instances() if o["region"] == "debug"]
    assert {(o["instance_type"], o["region"], o["gpu_count"]) for o in found} == {
        ("cpu", "debug", 0),
        ("a100", "debug", 1),
        ("2xa100", "debug", 2),
    }
    with pytest.raises(ResourceNotAvailableError) as too_many:
        flow.run("true", instance_type="4xa100", upload_code=False)
    assert "Partition debug offers: cpu, a100, 2xa100" in too_many.value.message
    with pytest.raises(ResourceNotAvailableError) as nodes:
        flow.run("true", num_instances=2, upload_code=False)
    assert "1 usable node" in nodes.value.message
    with pytest.raises(ValidationError) as volumes:
        flow.run(TaskConfig(command="true", upload_code=False, volumes=[{"name": "data", "size_gb": 10}]))
    assert [v.field for v in volumes.value.violations] == ["volumes[0]"]
    with pytest.raises(ResourceNotAvailableError) as partition:
        flow.run("true", region="nope", upload_code=False)
    assert "no partition 'nope'" in partition.value.message


def test_commands_run_inside_the_job(slurm_daemon: Daemon, mode: str) -> None:
    task = client(slurm_daemon, mode).run("echo up; sleep 300", upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs() == "up\n", 30)
    result = task.exec(["bash", "-c", "echo job=$SLURM_JOB_ID"])
    assert result.exit_code == 0
    assert result.stdout.decode().startswith("job=") and result.stdout.decode().strip() != "job="
    task.cancel()
    task.wait(timeout=60)


def test_sbatch_scripts_run_natively_with_their_directives(
    slurm_daemon: Daemon, slurm_stack: Stack, mode: str, tmp_path: Path
) -> None:
    (tmp_path / "input.txt").write_text("hello\n")
    script = tmp_path / "job.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=native   # Slurm sees this name\n"
        "#SBATCH --gres=gpu:1\n"
        "#SBATCH --time=5 --mail-type=NONE\n"
        "#SBATCH --array=0-2\n"
        "\n"
        'echo "$SLURM_JOB_NAME $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"'
        ' "gpus=$CUDA_VISIBLE_DEVICES $(cat input.txt)"\n'
    )
    done = slurm_daemon.flow_cli("slurm", "submit", str(script), "--provider", mode, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tasks = json.loads(done.stdout)
    assert [t["name"] for t in tasks] == ["native-0", "native-1", "native-2"]
    assert all(t["status"] == "COMPLETED" for t in tasks)
    flow = client(slurm_daemon, mode)
    logs = sorted(flow.get_task(t["task_id"]).logs() for t in tasks)
    assert [line.split(" gpus=")[0] for line in logs] == ["native 0/3", "native 1/3", "native 2/3"]
    assert all(line.split(" gpus=")[1] in ("0 hello\n", "1 hello\n") for line in logs)
    assert all(t["instance_type"] == "a100-80gb.sxm.1x" for t in tasks)


def test_a_broken_sbatch_script_is_refused_naming_the_line(slurm_daemon: Daemon, mode: str, tmp_path: Path) -> None:
    script = tmp_path / "bad.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --time=soon\n#SBATCH --partitoin=debug\necho hi\n")
    done = slurm_daemon.flow_cli("slurm", "submit", str(script), "--provider", mode, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "#SBATCH --time (line 2): is not a time limit (got 'soon')" in done.stderr
    assert "#SBATCH --partitoin (line 3): is not an sbatch option" in done.stderr
    assert "did you mean --partition?" in done.stderr
