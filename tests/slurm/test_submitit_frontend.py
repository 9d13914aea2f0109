"""The submitit frontend on the real test Slurm: submitit's documentation examples run unchanged
apart from `cluster="flow"`, through a real flowd whose default provider is a slurm provider on
the `multi` partition (two namespaced nodes sharing this machine's file system, as a cluster
shares its home directories: submitit on Slurm needs the job folder on a shared file system), and
a two-node Checkpointable that flowd requeues (every node's exit then says "run again")."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator

import pytest

from conftest import Daemon, _cleanup
from flow import TaskStatus

from .conftest import MultiNode, slurm_daemon_for

submitit = pytest.importorskip("submitit")

from submitit_frontend import EXAMPLES, run_example  # noqa: E402

PROVIDER = "slurm-multi"


@pytest.fixture(scope="module")
def submitit_slurm(multinode: MultiNode) -> Iterator[Daemon]:
    daemon, work = slurm_daemon_for(multinode.stack, extra=multinode.provider_yaml(PROVIDER, multinode.multi))
    daemon.start()
    yield daemon
    multinode.stack.cancel_under(daemon.home.root, work)
    _cleanup(daemon)
    with contextlib.suppress(OSError):
        shutil.rmtree(work)


def _tasks(daemon: Daemon) -> str:
    """What flowd says about the tasks (for a failure's message)."""
    from flow import Flow

    with Flow(flow_home=daemon.home.root) as flow:
        return "\n".join(
            f"{t.task_id} {t.last_status} {t.state_reason!r} attempts={t.attempts}\n{t.logs(tail=30)}"
            for t in flow.list_tasks(limit=3)
        )


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_the_documentation_examples_run_unchanged_on_slurm(
    submitit_slurm: Daemon, multinode: MultiNode, example: str
) -> None:
    workdir = multinode.stack.shared / f"submitit-{example}-{submitit_slurm.home.root.name}"
    try:
        done = run_example(example, workdir, {**submitit_slurm.env, "FLOW_PROVIDER": PROVIDER})
        assert done.returncode == 0, (
            f"{example}.py failed on Slurm:\n{done.stdout}\n{done.stderr}\n{_tasks(submitit_slurm)}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class _TwoNodeCounter(submitit.helpers.Checkpointable):
    """Each rank counts to `total`, pausing at `pause` until `gate` exists; every rank says where
    it (re)started."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, gate: str, pause: int, total: int) -> tuple[int, int]:
        import time
        from pathlib import Path

        env = submitit.JobEnvironment()
        print(f"rank {env.global_rank} on node {env.node} starting at {self.count}", flush=True)
        while self.count < total:
            if self.count == pause and not Path(gate).exists():
                time.sleep(0.05)
                continue
            self.count += 1
        return env.global_rank, self.count


@pytest.mark.slow
def test_a_two_node_checkpointable_interrupted_resumes_every_rank_from_the_checkpoint(
    submitit_slurm: Daemon, multinode: MultiNode
) -> None:
    import cloudpickle

    from conftest import wait_until
    from flow import Flow
    from flow.submitit import FlowExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    folder = multinode.stack.shared / f"submitit-2n-{submitit_slurm.home.root.name}"
    gate = folder / "gate"
    try:
        executor = FlowExecutor(folder / "%j", provider=PROVIDER, flow_home=str(submitit_slurm.home.root))
        executor.update_parameters(nodes=2, tasks_per_node=2, timeout_min=30)
        job = executor.submit(_TwoNodeCounter(), str(gate), 3, 5)
        wait_until(lambda: all("starting at 0" in (job.task(k).stdout() or "") for k in range(4)), 120)
        job._interrupt()  # rank 0 checkpoints (the callable as it stands on rank 0) and asks for a requeue
        try:
            wait_until(lambda: "rank 3 on node 1 starting at 3" in (job.task(3).stdout() or ""), 180)
        except AssertionError:
            raise AssertionError(f"{_tasks(submitit_slurm)}\n{job.task(3).stdout()}") from None
        gate.touch()
        assert job.results() == [(0, 5), (1, 5), (2, 5), (3, 5)]
        task = Flow(flow_home=submitit_slurm.home.root).get_task(job.job_id)
        assert [(a.state, a.exit_code) for a in task.attempts] == [(TaskStatus.FAILED, 75)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
