"""The test stack's multi-node Slurm, driven directly with sbatch/squeue/scontrol/srun from this
machine (the login node): two hosts per job, each its own hostname and address; srun from the
login node into a running job (what `flow ssh`/exec does); a real torch gloo all-reduce across two
nodes; a node killed mid-job (NODE_FAIL) and a job preempted by a higher-priority partition
(PREEMPTED), as a real cluster reports them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

from .conftest import MultiNode, Stack

TORCH_PYTHON = REPO / "build" / "torch-venv" / "bin" / "python"
ALLREDUCE = REPO / "examples" / "allreduce.py"


@pytest.fixture
def jobs(multinode: MultiNode) -> Iterator[list[str]]:
    """Job ids a test submits; whatever is still queued or running at its end is cancelled."""
    submitted: list[str] = []
    yield submitted
    if submitted:
        multinode.stack.slurm("scancel", *submitted)


@pytest.fixture
def out(multinode: MultiNode) -> Iterator[Path]:
    """A directory every node can write (the shared filesystem) for this test's job outputs."""
    path = multinode.stack.shared / f"mn-{uuid.uuid4().hex[:10]}"
    path.mkdir(mode=0o777)
    yield path
    for child in path.iterdir():
        with contextlib.suppress(OSError):
            child.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def _submit(stack: Stack, jobs: list[str], script: str, *options: str) -> str:
    job = stack.sbatch(script, *options)
    jobs.append(job)
    return job


def test_a_two_node_job_runs_one_srun_task_on_each_of_two_hosts(
    multinode: MultiNode, jobs: list[str], out: Path
) -> None:
    stack = multinode.stack
    script = (
        "#!/bin/bash\n"
        f"#SBATCH -p {multinode.multi} --nodes=2 --ntasks-per-node=1\n"
        'echo "batch $(hostname) $SLURM_JOB_NODELIST $SLURM_NNODES"\n'
        "srun bash -c 'echo \"task $SLURM_PROCID $SLURM_NODEID $(hostname) $(hostname -i)\"'\n"
    )
    job = _submit(stack, jobs, script, f"--output={out}/%j.out")
    final = stack.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL"))
    lines = (out / f"{job}.out").read_text().splitlines()
    assert final["JobState"] == "COMPLETED", lines
    _, batch_host, nodelist, nnodes = lines[0].split()
    hosts = stack.hostnames(nodelist)
    assert (len(hosts), len(set(hosts)), nnodes) == (2, 2, "2")
    assert set(hosts) <= set(multinode.nodes) and batch_host == hosts[0]  # the script runs on the first node
    tasks = sorted(line.split()[1:] for line in lines if line.startswith("task "))
    assert [(procid, nodeid) for procid, nodeid, _, _ in tasks] == [("0", "0"), ("1", "1")]
    assert [host for _, _, host, _ in tasks] == hosts  # one task on each host, by its own hostname
    addresses = [address for _, _, _, address in tasks]
    assert len(set(addresses)) == 2 and not any(a.startswith("127.") for a in addresses)


def test_srun_from_the_login_node_reaches_every_node_of_a_running_job(
    multinode: MultiNode, jobs: list[str], out: Path
) -> None:
    stack = multinode.stack
    gate = out / "go"
    job = _submit(
        stack,
        jobs,
        f"#!/bin/bash\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n",
        f"--partition={multinode.multi}",
        "-N2",
    )
    running = stack.wait_job(job, ("RUNNING",))
    done = stack.slurm(
        "srun", f"--jobid={job}", "--overlap", "--quiet", "-N2", "--ntasks-per-node=1", "bash", "-c", "hostname"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == stack.hostnames(running["NodeList"])
    gate.write_text("")
    assert stack.wait_job(job, ("COMPLETED", "FAILED"))["JobState"] == "COMPLETED"


def test_torch_gloo_all_reduce_across_two_nodes_through_srun(multinode: MultiNode, jobs: list[str], out: Path) -> None:
    assert TORCH_PYTHON.exists(), (
        f"{TORCH_PYTHON} is missing: `make test` creates it (or `make torch-venv` alone), "
        "a virtualenv with torch==2.15.0 kept out of .venv"
    )
    stack = multinode.stack
    per_task = (
        'export RANK="$SLURM_PROCID" WORLD_SIZE="$SLURM_NTASKS" NODE_RANK="$SLURM_NODEID"; '
        'echo "host $SLURM_PROCID $(hostname)"; exec "$0" "$1"'
    )
    script = (
        "#!/bin/bash\n"
        f"#SBATCH --partition={multinode.multi} --nodes=2 --ntasks-per-node=1\n"
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"\n'
        'export MASTER_ADDR MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"\n'
        f"srun bash -c '{per_task}' {TORCH_PYTHON} {ALLREDUCE}\n"
    )
    job = _submit(stack, jobs, script, f"--output={out}/%j.out")
    final = stack.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL"), timeout=300)
    log = (out / f"{job}.out").read_text()
    assert final["JobState"] == "COMPLETED", log
    for rank in (0, 1):
        assert f"node {rank} rank {rank}/2 (gloo): all_reduce sum = 3, expected 3" in log
    hosts = {line.split()[1]: line.split()[2] for line in log.splitlines() if line.startswith("host ")}
    assert len(set(hosts.values())) == 2, log  # the two ranks ran on two hosts


def test_a_node_killed_mid_job_ends_the_job_node_fail(multinode: MultiNode, jobs: list[str], out: Path) -> None:
    stack = multinode.stack
    job = _submit(
        stack,
        jobs,
        "#!/bin/bash\nsrun sleep 600\n",
        f"--partition={multinode.spot}",
        "-N2",
        "--no-requeue",
        f"--output={out}/%j.out",
    )
    running = stack.wait_job(job, ("RUNNING",))
    # The batch host: with it the script dies too, so nothing but Slurm's node check can end the
    # job (killing the other node, srun may notice first and the script end FAILED).
    victim = running["BatchHost"]
    assert victim in stack.hostnames(running["NodeList"])
    try:
        stack.kill_node(victim)
        # Slurm notices a silent node after SlurmdTimeout (the stack's: 10 s) and a ping round.
        final = stack.wait_job(job, ("NODE_FAIL", "COMPLETED", "FAILED", "CANCELLED"), timeout=180)
        # Slurm names the cause as NodeDown while it holds the job record, and clears the reason to
        # None once the job is finished long enough (seen under load): the state is the promise.
        assert final["JobState"] == "NODE_FAIL"
        assert final["Reason"] in ("NodeDown", "None")
        assert stack.node_state(victim).startswith("down")
    finally:
        stack.start_node(victim)
    assert stack.node_state(victim) in ("idle", "mix", "alloc")  # back, and usable again


def test_a_higher_priority_partition_preempts_a_running_job(multinode: MultiNode, jobs: list[str], out: Path) -> None:
    stack = multinode.stack
    node = multinode.partition_nodes(multinode.spot)[0]
    low = _submit(
        stack,
        jobs,
        "#!/bin/bash\ntrap 'echo got TERM; exit 0' TERM\nsleep 600 &\nwait\n",
        f"--partition={multinode.spot}",
        f"--nodelist={node}",
        "--exclusive",
        "--no-requeue",
        f"--output={out}/low.out",
    )
    stack.wait_job(low, ("RUNNING",))
    high = _submit(
        stack,
        jobs,
        "#!/bin/bash\nhostname\n",
        f"--partition={multinode.urgent}",
        f"--nodelist={node}",
        "--exclusive",
        f"--output={out}/high.out",
    )
    assert stack.wait_job(low, ("PREEMPTED", "COMPLETED", "FAILED", "CANCELLED"))["JobState"] == "PREEMPTED"
    assert stack.wait_job(high, ("COMPLETED", "FAILED", "CANCELLED"))["JobState"] == "COMPLETED"
    assert (out / "high.out").read_text() == f"{node}\n"
    low_log = (out / "low.out").read_text()
    assert "DUE TO PREEMPTION" in low_log and "got TERM" in low_log  # it got the TERM a cancel sends
