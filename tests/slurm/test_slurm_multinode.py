"""Flow tasks on the test stack's multi-node Slurm (tools/test-stack: node1..node4, each its own
host): a 2-node `flow run` whose nodes do a real torch gloo all-reduce, the same through `flow
slurm submit` of a script that runs `srun torchrun`, a node killed mid-task (NODE_FAIL) and a task
preempted by a higher-priority partition (PREEMPTED), as a Slurm user sees them in Flow."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, Daemon, _cleanup, wait_until
from flow import Flow, TaskConfig, TaskStatus

from .conftest import MultiNode, Stack, slurm_daemon_for

TORCH_PYTHON = REPO / "build" / "torch-venv" / "bin" / "python"
TORCHRUN = REPO / "build" / "torch-venv" / "bin" / "torchrun"
ALLREDUCE = REPO / "examples" / "allreduce.py"
PROVIDERS = {"cluster": "multi", "spot-cluster": "spot", "urgent-cluster": "urgent"}


@pytest.fixture(scope="module")
def cluster_daemon(multinode: MultiNode) -> Iterator[Daemon]:
    """A flowd with a slurm provider per partition of the namespaced nodes."""
    extra = "".join(multinode.provider_yaml(name, partition) for name, partition in PROVIDERS.items())
    daemon, work = slurm_daemon_for(multinode.stack, extra=extra)
    daemon.start()
    yield daemon
    multinode.stack.cancel_under(daemon.home.root, work)
    _cleanup(daemon)
    with contextlib.suppress(OSError):
        shutil.rmtree(work)


def torch_ready() -> None:
    assert TORCH_PYTHON.exists(), f"{TORCH_PYTHON} is missing: `make torch-venv` creates it (make test does)"


def test_a_two_node_flow_run_does_a_torch_all_reduce_across_two_hosts(cluster_daemon: Daemon) -> None:
    torch_ready()
    done = cluster_daemon.flow_cli(
        "run",
        "--provider",
        "cluster",
        "--num-instances",
        "2",
        "--no-upload",
        "--",
        "bash",
        "-c",
        f'echo "host $NODE_RANK $(hostname)"; exec {TORCH_PYTHON} {ALLREDUCE}',
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for rank in (0, 1):
        assert f"node {rank} rank {rank}/2 (gloo): all_reduce sum = 3, expected 3" in done.stdout
    hosts = {line.split()[1]: line.split()[2] for line in done.stdout.splitlines() if line.startswith("host ")}
    assert set(hosts) == {"0", "1"} and len(set(hosts.values())) == 2  # two hosts, one rank each


def test_an_sbatch_script_with_srun_torchrun_runs_across_two_hosts(
    cluster_daemon: Daemon, multinode: MultiNode, tmp_path: Path
) -> None:
    torch_ready()
    script = tmp_path / "ddp.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=ddp-1.3b --nodes=2 --ntasks-per-node=1\n"
        'head="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"\n'
        'echo "nodes $SLURM_JOB_NUM_NODES $SLURM_JOB_NAME"\n'
        f"srun {TORCHRUN} --nnodes=2 --nproc_per_node=1 --rdzv_backend=c10d "
        f'--rdzv_endpoint="$head:$((20000 + SLURM_JOB_ID % 20000))" --rdzv_id="$SLURM_JOB_ID" {ALLREDUCE}\n'
    )
    done = cluster_daemon.flow_cli("slurm", "submit", str(script), "--provider", "cluster", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nodes 2 ddp-1.3b" in done.stdout  # the script's name and nodes, as Slurm gave them
    for rank in (0, 1):
        assert f"rank {rank}/2 (gloo): all_reduce sum = 3, expected 3" in done.stdout


def _running_job(stack: Stack, task_id: str) -> dict[str, str]:
    found: dict[str, str] = {}

    def running() -> bool:
        listed = stack.slurm("squeue", "-h", "-n", task_id, "-o", "%i").stdout.split()
        if not listed:
            return False
        found.update(stack.job(listed[0]))
        return found.get("JobState") == "RUNNING"

    wait_until(running, 120, interval=0.2)
    return found


def test_a_node_killed_mid_task_ends_it_node_fail(cluster_daemon: Daemon, multinode: MultiNode) -> None:
    stack = multinode.stack
    flow: Flow = cluster_daemon.client(provider="spot-cluster")
    task = flow.run("echo up; sleep 600", num_instances=2, upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING, 120)
    job = _running_job(stack, task.task_id)
    victim = job["BatchHost"]  # with it the job script dies: only Slurm's node check ends the job
    try:
        stack.kill_node(victim)
        task.wait(timeout=240)
        assert task.last_status is TaskStatus.FAILED
        assert task.state_reason.startswith("NODE_FAIL: a node of the Slurm job failed")
    finally:
        stack.start_node(victim)


def exclusive_on(node: str, body: str) -> TaskConfig:
    """A script that takes all of `node` (a job of another partition must preempt it)."""
    return TaskConfig(script=f"#!/bin/bash\n#SBATCH --nodelist={node} --exclusive\n{body}\n", upload_code=False)


def test_a_task_preempted_by_a_higher_priority_partition_is_preempted(
    cluster_daemon: Daemon, multinode: MultiNode
) -> None:
    node = multinode.partition_nodes(multinode.spot)[0]
    low = cluster_daemon.client(provider="spot-cluster").run(exclusive_on(node, "echo low; sleep 600"))
    wait_until(lambda: low.status is TaskStatus.RUNNING and low.logs() == "low\n", 120)
    high = cluster_daemon.client(provider="urgent-cluster").run(exclusive_on(node, "hostname"))
    assert low.wait(timeout=120).last_status is TaskStatus.PREEMPTED
    assert low.state_reason.startswith("PREEMPTED: Slurm preempted the job")
    assert high.wait(timeout=120).last_status is TaskStatus.COMPLETED
    assert high.logs() == f"{node}\n"
