"""Time limits, a daemon killed mid-job, and jobs that leave Slurm's queue while no flowd watches:
one test, both modes at once, because Slurm's time limit sweep makes it last about 90 s."""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from pathlib import Path

import pytest

from conftest import _cleanup, wait_until
from flow import Flow, TaskStatus

from .conftest import MODES, Stack, slurm_daemon_for


def _gone_from_controller(stack: Stack, task_id: str) -> bool:
    done = stack.slurm("squeue", "-h", "-t", "all", "-n", task_id, "-o", "%i")
    return done.returncode == 0 and not done.stdout.strip()


def _gate(path: Path, before: str, after: str) -> str:
    return f"echo {before}; while [ ! -e {path} ]; do sleep 0.05; done; {after}"


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_time_limit_restart_and_jobs_that_left_the_queue(slurm_stack: Stack) -> None:
    daemon, work = slurm_daemon_for(slurm_stack)
    finish = slurm_stack.shared / f"finish-{uuid.uuid4().hex[:8]}"
    release = slurm_stack.shared / f"release-{uuid.uuid4().hex[:8]}"
    daemon.start()
    try:
        clients: dict[str, Flow] = {m: daemon.client(provider=m) for m in MODES}
        timed = {
            m: c.run("echo start; sleep 600", max_run_time_hours=1 / 60, upload_code=False) for m, c in clients.items()
        }
        ends = {m: c.run(_gate(finish, "before", "echo after; exit 5"), upload_code=False) for m, c in clients.items()}
        lasts = {m: c.run(_gate(release, "waiting", "echo done"), upload_code=False) for m, c in clients.items()}
        # Both GPUs held across the restart, and a task queued behind them.
        ssh = clients["slurm-ssh"]
        blocker = ssh.run(_gate(release, "holding", "true"), instance_type="2xa100", upload_code=False)
        queued = ssh.run("echo got $CUDA_VISIBLE_DEVICES", instance_type="a100", upload_code=False)
        everyone = [*timed.values(), *ends.values(), *lasts.values(), blocker]
        wait_until(lambda: all(t.status is TaskStatus.RUNNING and t.logs() for t in everyone), 60)
        assert queued.status is TaskStatus.PENDING

        daemon.kill9()
        finish.touch()  # these end while no daemon watches...
        for task in ends.values():  # ...and leave the controller (MinJobAge) before it is back
            wait_until(lambda task=task: _gone_from_controller(slurm_stack, task.task_id), 120, interval=0.5)
        daemon.start()

        for mode, task in ends.items():
            task = clients[mode].get_task(task.task_id).wait(timeout=60)
            assert (task.last_status, task.exit_code) == (TaskStatus.FAILED, 5), (mode, task.state_reason)
            assert task.logs() == "before\nafter\n", mode
        for task in [*lasts.values(), blocker, *timed.values()]:
            assert task.status is TaskStatus.RUNNING
        assert queued.status is TaskStatus.PENDING
        release.touch()
        for mode, task in lasts.items():
            assert task.wait(timeout=60).last_status is TaskStatus.COMPLETED, mode
            assert task.logs() == "waiting\ndone\n", mode
        assert queued.wait(timeout=60).last_status is TaskStatus.COMPLETED
        assert queued.logs() in ("got 0\n", "got 1\n")

        deadline = time.monotonic() + 180
        for mode, task in timed.items():
            task.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert task.last_status is TaskStatus.FAILED, (mode, task.last_status, task.state_reason)
            assert task.state_reason.startswith("TIMEOUT"), (mode, task.state_reason)
            assert task.logs().startswith("start\n"), mode
    finally:
        slurm_stack.cancel_under(daemon.home.root, work)
        _cleanup(daemon)
        for path in (finish, release):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
