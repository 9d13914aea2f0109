"""Times the GPU-aware local provider: the FIFO GPU scheduler, exec into a task, multi-node start.

Run: .venv/bin/python bench/bench_local_gpus.py [--quick]   (Flow installed, as `make bench` does)

Every row is measured against a floor measured in the same run, on the same machine; one table
is printed (median, p90, floor, ratio). Nothing is asserted. The daemon is private, in a fresh
FLOW_HOME directly under /tmp, and is stopped with its home removed at the end.

Rows:
  schedule 1,000 on 8 GPUs   the pure scheduler (flow.domain.instances.gpu_scheduler.next_starts) drains a
                             queue of 1,000 requests (1, 2, 4 or 8 GPUs; some by model, some by
                             memory) on 8 synthetic GPUs of two kinds: decide, start what fits,
                             release the oldest running task, decide again, until all have run;
                             floor: the same number of dict insert/pop pairs
  one scheduling decision    the median of the single next_starts calls of those drains (the
                             whole remaining queue is passed, as flowd passes it); floor: one
                             dict insert/pop pair
  exec true round trip       task.exec("true") into a running task through flowd (ExecTask
                             stream: start, output, exit code); floor: subprocess.run(["true"])
  2-node run(true)+wait      flow.run(["true"], num_instances=2) submit -> COMPLETED; floor: the
                             same single-node task
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flow.client import Flow
from flow.domain.instances.gpu_inventory import Gpu
from flow.domain.instances.gpu_scheduler import GpuRequest, next_starts
from flow.task import TaskStatus

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import Row, Sample, fmt, interleaved, running_daemon
else:
    from harness import Row, Sample, fmt, interleaved, running_daemon

QUEUED = 1_000
INVENTORY = tuple(
    Gpu(i, f"GPU-{i}", "a100" if i < 4 else "h100", 40 if i < 2 else 80, "sxm", f"GPU {i}") for i in range(8)
)


def requests(count: int) -> list[GpuRequest]:
    """A deterministic mix: mostly 1-GPU tasks, some 2, 4 and whole-machine ones."""
    shapes = [(1, None, 0), (1, "a100", 0), (2, None, 80), (1, None, 0), (4, "h100", 0), (2, "a100", 0), (8, None, 0)]
    return [GpuRequest(f"t{i}", *shapes[i * 7919 % len(shapes)]) for i in range(count)]


def drain(queue: list[GpuRequest], decisions: list[float]) -> int:
    """Runs every request through the scheduler, releasing the oldest running task after each
    decision; returns how many decisions it took (their times go to `decisions`)."""
    queue = list(queue)
    busy: dict[str, tuple[int, ...]] = {}
    running: list[str] = []
    count = 0
    while queue or busy:
        started = time.perf_counter()
        starts = next_starts(INVENTORY, busy, queue)
        decisions.append(time.perf_counter() - started)
        count += 1
        for task_id, gpus in starts:
            busy[task_id] = gpus
            running.append(task_id)
        del queue[: len(starts)]  # FIFO: what starts is always the head of the queue
        if running:
            busy.pop(running.pop(0))
    return count


def measure_scheduler(runs: int) -> list[Row]:
    queue = requests(QUEUED)
    decisions: list[float] = []
    count = drain(queue, [])

    def dict_loop() -> None:
        table: dict[str, int] = {}
        for i in range(count):
            table[f"t{i}"] = i
            table.pop(f"t{i}")

    whole = interleaved({"drain": lambda: drain(queue, decisions), "floor": dict_loop}, runs)
    # One pair is too short for the clock: the floor's loops, divided by their pair count.
    pair = Sample("1 dict insert/pop", [seconds / count for seconds in whole["floor"].seconds])
    return [
        Row(
            Sample(f"schedule {QUEUED:,} on 8 GPUs", whole["drain"].seconds),
            Sample(f"{count:,} dict ins/pop", whole["floor"].seconds),
        ),
        Row(Sample("one scheduling decision", decisions), pair),
    ]


def measure_daemon(runs: int) -> tuple[list[Row], str]:
    with running_daemon() as daemon:
        flow = Flow(flow_home=daemon.home.root)
        try:
            task = flow.run(["sleep", "600"], upload_code=False)
            deadline = time.monotonic() + 30
            while task.status is not TaskStatus.RUNNING and time.monotonic() < deadline:
                time.sleep(0.01)
            task.exec("true")  # warm the connection and the stream path

            def exec_true() -> None:
                assert task.exec("true").exit_code == 0

            def bare_true() -> None:
                subprocess.run(["true"], check=True)

            execs = interleaved({"exec": exec_true, "bare": bare_true}, runs)
            task.cancel()

            def run_nodes(nodes: int) -> Callable[[], None]:
                def work() -> None:
                    done = flow.run(["true"], num_instances=nodes, upload_code=False).wait(timeout=60)
                    assert done.last_status is TaskStatus.COMPLETED

                return work

            starts = interleaved({"two": run_nodes(2), "one": run_nodes(1)}, max(3, runs // 4))
        finally:
            flow.close()
        home = str(daemon.home.root)
    rows = [
        Row(
            Sample('exec "true" round trip', execs["exec"].seconds),
            Sample('subprocess.run(["true"])', execs["bare"].seconds),
        ),
        Row(
            Sample("2-node run(true)+wait", starts["two"].seconds),
            Sample("1-node run(true)+wait", starts["one"].seconds),
        ),
    ]
    return rows, home


def show(seconds: float) -> str:
    return f"{seconds * 1e9:.0f} ns" if seconds < 1e-6 else fmt(seconds)


def print_table(rows: list[Row], quick: bool, home: str) -> None:
    print(
        f"flow local GPUs benchmark ({'quick' if quick else 'full'}; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus)"
    )
    print(f"{'benchmark':<26} {'n':>5} {'median':>10} {'p90':>10}   {'floor':<24} {'median':>10} {'ratio':>8}")
    for row in rows:
        s, f = row.sample, row.floor
        assert f is not None
        ratio = s.median / f.median if f.median else float("inf")
        print(
            f"{s.name:<26} {len(s.seconds):>5} {show(s.median):>10} {show(s.p90):>10}   "
            f"{f.name:<24} {show(f.median):>10} {ratio:>7.1f}x"
        )
    print("(medians of repeated runs; floors measured in this run; nothing is asserted)")
    print(f"flowd for FLOW_HOME={home}: stopped, home removed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    rows = measure_scheduler(3 if args.quick else 15)
    daemon_rows, home = measure_daemon(10 if args.quick else 60)
    print_table(rows + daemon_rows, args.quick, home)


if __name__ == "__main__":
    main()
