"""The submitit frontend on the real test Slurm: submitit's documentation examples run unchanged
apart from `cluster="flow"`, through a real flowd whose default provider is a slurm provider on
the `multi` partition (two namespaced nodes sharing this machine's file system, as a cluster
shares its home directories: submitit on Slurm needs the job folder on a shared file system)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

from conftest import Daemon, _cleanup

from .conftest import MultiNode, slurm_daemon_for

pytest.importorskip("submitit")

from submitit_frontend import EXAMPLES, run_example

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
