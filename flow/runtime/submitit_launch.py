"""The command of a task submitted through `flow.submitit`: it runs on every node of the task and
starts that node's submitit ranks, as srun (Slurm) or the controller (LocalExecutor) does.

    python -u -m flow.runtime.submitit_launch FOLDER

Each rank is `python -u -m submitit.core._submit FOLDER`, with the variables FlowJobEnvironment
reads (job id = the Flow task id, global/local rank, node, counts, hostnames). A rank's output is
appended to its submitit log files (`<id>_<rank>_log.out/.err` in the job's folder) and copied to
the task's own output, so `flow logs` shows it too.

Time limit: at `timeout - signal_delay` every rank gets SIGUSR2 (submitit then checkpoints a
Checkpointable and asks for a requeue); at the time limit the ranks are stopped. A SIGUSR2 the
launcher receives (a preemption notice, `job._interrupt()`) is passed on to the ranks. SIGTERM
(`flow cancel`) stops the ranks with SIGINT, then SIGKILL: submitit ranks ignore SIGTERM.

Requeue: rank 0 exits with SUBMITIT_REQUEUE_EXIT_CODE after writing the checkpointed submission;
the launcher stops the node's other ranks and exits with flowd's REQUEUE_EXIT_STATUS (75), so flowd
runs the task again (TaskConfig.max_retries) under the same id, with a fresh time limit, keeping
the earlier run in the task's attempts; the new run's ranks load the checkpoint. A run that ends
PREEMPTED (the machine gone) runs again the same way, from the last checkpoint written, if any.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Final

SUBMITIT_REQUEUE_EXIT_CODE: Final = 144  # what FlowJobEnvironment._requeue exits with (as LocalExecutor's)
# flowd's "run this task again" (flow.domain.task.lifecycle.REQUEUE_EXIT_STATUS; a test checks they
# agree): this module starts every job, so it imports the standard library only.
REQUEUE_EXIT_STATUS: Final = 75
STOP_GRACE_S: Final = 1.0  # between SIGINT and SIGKILL when the ranks are stopped
# The variables a task gets from Flow's multi-node set-up that would be wrong for a rank (one
# rank per node) and that torch's env:// helpers refuse to overwrite.
TORCH_VARIABLES: Final = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def _int_env(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return default


def _float_env(name: str) -> float | None:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return None


def _hostnames(num_nodes: int) -> list[str]:
    """The job's node hosts, node 0 first (the master)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if nodelist:
        try:
            listed = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            listed = []
        if listed:
            return listed
    # One machine (the local provider): every node process is on this host.
    return [os.environ.get("MASTER_ADDR") or socket.gethostname()] * num_nodes


class JobFiles:
    """Where submitit's files of one rank are (submitit.core.utils.JobPaths' layout: `%j` in the
    folder is the job id, `%t` the rank; a Flow job id has no `_`, so no array `%A`/`%a`)."""

    def __init__(self, folder: str, job_id: str, rank: int) -> None:
        self.folder = Path(folder.replace("%j", job_id).replace("%t", str(rank))).expanduser().absolute()
        self.stdout = self.folder / f"{job_id}_{rank}_log.out"
        self.stderr = self.folder / f"{job_id}_{rank}_log.err"


class Ranks:
    """The ranks of this node: started together, signalled together, their output copied."""

    def __init__(self, folder: str, job_id: str, node: int, num_nodes: int, per_node: int) -> None:
        self.folder = folder
        self.job_id = job_id
        self.node = node
        self.num_nodes = num_nodes
        self.per_node = per_node
        self.paths = [JobFiles(folder, job_id, node * per_node + k) for k in range(per_node)]
        self.merged = os.environ.get("SUBMITIT_STDERR_TO_STDOUT", "") == "1"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.copiers: list[threading.Thread] = []
        self.ended = threading.Event()

    def environment(self, local_rank: int, hostnames: list[str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in TORCH_VARIABLES}
        env.update(
            SUBMITIT_EXECUTOR="flow",
            SUBMITIT_FLOW_JOB_ID=self.job_id,
            SUBMITIT_FLOW_GLOBALID=str(self.node * self.per_node + local_rank),
            SUBMITIT_FLOW_LOCALID=str(local_rank),
            SUBMITIT_FLOW_NODEID=str(self.node),
            SUBMITIT_FLOW_NTASKS=str(self.num_nodes * self.per_node),
            SUBMITIT_FLOW_NNODES=str(self.num_nodes),
            SUBMITIT_FLOW_HOSTNAMES=",".join(hostnames),
        )
        return env

    def start(self, hostnames: list[str]) -> None:
        self.procs, self.copiers = [], []
        self.ended.clear()
        for k, paths in enumerate(self.paths):
            paths.folder.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(
                [sys.executable, "-u", "-m", "submitit.core._submit", self.folder],
                env=self.environment(k, hostnames),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if self.merged else subprocess.PIPE,
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            self._copy(proc.stdout, paths.stdout, sys.stdout.buffer)
            if proc.stderr is not None:
                self._copy(proc.stderr, paths.stderr, sys.stderr.buffer)
            threading.Thread(target=self._reap, args=(proc,), daemon=True).start()

    def _copy(self, source: IO[bytes], log: Path, echo: IO[bytes]) -> None:
        def run() -> None:
            with log.open("ab") as out:
                while chunk := os.read(source.fileno(), 65536):
                    out.write(chunk)
                    out.flush()
                    echo.write(chunk)
                    echo.flush()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.copiers.append(thread)

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.ended.set()

    def codes(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def signal(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def stop(self) -> None:
        """SIGINT (submitit ranks ignore SIGTERM), then SIGKILL."""
        self.signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.procs:
            proc.wait()

    def finish_copies(self) -> None:
        for thread in self.copiers:
            thread.join(timeout=10)


def run(folder: str) -> int:
    job_id = os.environ["FLOW_TASK_ID"]
    node = _int_env("FLOW_NODE_RANK", "NODE_RANK", "SLURM_NODEID", default=0)
    num_nodes = _int_env("FLOW_NUM_NODES", "NNODES", "SLURM_NNODES", default=1)
    ranks = Ranks(folder, job_id, node, num_nodes, max(_int_env("SUBMITIT_FLOW_TASKS_PER_NODE", default=1), 1))
    timeout_s = _float_env("SUBMITIT_FLOW_TIMEOUT_S")
    signal_delay_s = _float_env("SUBMITIT_FLOW_SIGNAL_DELAY_S") or 0.0
    cancelled = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        cancelled.set()
        ranks.ended.set()

    def on_usr2(signum: int, _frame: object) -> None:
        notify()  # a preemption notice: the ranks checkpoint

    notified = threading.Event()

    def notify() -> None:
        """SIGUSR2 to the ranks, once per run: a second one reaching rank 0 while it exits after
        its checkpoint would kill it (Python has dropped submitit's handler by then)."""
        if not notified.is_set():
            notified.set()
            ranks.signal(signal.SIGUSR2)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR2, on_usr2)
    pid_file = ranks.paths[0].folder / f".{job_id}_{node}_launcher.pid"
    # Node 0's "requeue me" for the other nodes: srun stops them when node 0 exits, and the job's
    # exit status (the one flowd reads) must then say "run again" on every node.
    requeue_mark = JobFiles(folder, job_id, 0).folder / f".{job_id}_requeue"
    ranks.paths[0].folder.mkdir(parents=True, exist_ok=True)
    if node == 0:
        requeue_mark.unlink(missing_ok=True)
    pid_file.write_text(f"{os.getpid()} {socket.gethostname()}\n")  # FlowJob._interrupt signals it
    try:
        ranks.start(_hostnames(num_nodes))
        started = time.monotonic()
        warned = False
        while not cancelled.is_set():
            ranks.ended.clear()  # before reading the codes: an end after the read wakes the wait
            codes = ranks.codes()
            if all(c is not None for c in codes) or (node == 0 and codes[0] == SUBMITIT_REQUEUE_EXIT_CODE):
                break
            elapsed = time.monotonic() - started
            if timeout_s is not None and not warned and elapsed >= timeout_s - signal_delay_s:
                warned = True
                notify()  # the time limit is near: checkpoint now
            if timeout_s is not None and elapsed >= timeout_s:
                print(f"flow: job {job_id} reached its time limit ({timeout_s:g} s)", file=sys.stderr, flush=True)
                break
            wake = [timeout_s - signal_delay_s - elapsed] if timeout_s is not None and not warned else []
            wake += [timeout_s - elapsed] if timeout_s is not None else []
            ranks.ended.wait(timeout=max(min([*wake, 1.0]), 0.01))
        ranks.stop()
        ranks.finish_copies()
        codes = ranks.codes()
        if cancelled.is_set():
            return REQUEUE_EXIT_STATUS if node != 0 and requeue_mark.exists() else 128 + signal.SIGTERM
        if node == 0 and codes[0] == SUBMITIT_REQUEUE_EXIT_CODE:
            # submitit checkpointed the job and asks for a requeue: flowd runs the task again
            # (TaskConfig.max_retries), under the same id, and the ranks load the checkpoint.
            requeue_mark.touch()
            print(f"flow: job {job_id} asks to be requeued (its checkpoint is saved)", flush=True)
            return REQUEUE_EXIT_STATUS
        failed = [c for c in codes if c]
        return failed[0] if failed and failed[0] is not None else (1 if failed else 0)
    finally:
        pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m flow.runtime.submitit_launch FOLDER", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(args[0]))


if __name__ == "__main__":
    main()
