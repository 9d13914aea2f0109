"""docs/checkpointing.md's pattern: a Checkpointable whose state survives a preemption."""

import sys
import time
from pathlib import Path

import submitit

import flow  # only to show the task's history at the end


class Counter(submitit.helpers.Checkpointable):
    """Counts to `total`; at `pause` it waits until `gate` exists (so it can be preempted there)."""

    def __init__(self):
        self.count = 0  # the "state" which the checkpoint keeps

    def __call__(self, gate: str, pause: int, total: int) -> int:
        print(f"starting at {self.count}", flush=True)
        while self.count < total:
            if self.count == pause and not Path(gate).exists():
                print(f"paused at {self.count}", flush=True)
                while not Path(gate).exists():
                    time.sleep(0.05)
            self.count += 1
        return self.count


def wait_for(predicate, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


executor = submitit.AutoExecutor(folder="logs_training", cluster="flow")
executor.update_parameters(timeout_min=30, slurm_partition="your_partition")
gate = Path("gate").absolute()
job = executor.submit(Counter(), str(gate), 3, 10)
wait_for(lambda: "paused at 3" in (job.stdout() or ""), "the job to pause")
job._interrupt()  # a preemption, as docs/checkpointing.md tests it
wait_for(lambda: "starting at 3" in (job.stdout() or ""), "the job to resume from its checkpoint")
gate.touch()
assert job.result() == 10
print(job.stdout())
assert "Requeued job" in job.stdout()
print("attempts of the task:", [(a.state, a.exit_code) for a in flow.Flow().get_task(job.job_id).attempts])
assert len(flow.Flow().get_task(job.job_id).attempts) == 1  # the requeue is in the task's history
