"""Times submitit's submit -> result of a trivial function through Flow's frontend against
submitit's own LocalExecutor, in the same run.

Run: .venv/bin/python bench/bench_submitit.py [--quick]   (flow-launcher[submitit] installed)

A private flowd in a fresh FLOW_HOME directly under /tmp (harness.BenchDaemon) is stopped, with its
home removed, at the end; so is the job folder. Both executors run `add(5, 7)` (a function of this
script, so both pickle it by value), interleaved run by run; one table is printed (median, p90,
floor, ratio). Nothing is asserted.

Rows:
  flow submit->result        submitit.AutoExecutor(folder, cluster="flow"): executor.submit(add, 5, 7)
                             then job.result(), client warm; floor: the same with
                             submitit.AutoExecutor(folder, cluster="local") (LocalExecutor)
  flow map_array(10)->results  map_array of 10 additions, then every result; floor: LocalExecutor's

LocalExecutor's job.result() polls for the result file once a second (submitit's Job.wait), so its
single-job figure is quantized to about 1 s, and its submissions are spaced 0.2 s apart
(PicklingExecutor's throttle). Flow's job waits in flowd (WaitTask) and submits without a throttle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import Row, fmt, interleaved, running_daemon
else:
    from harness import Row, fmt, interleaved, running_daemon

SINGLE = "flow submit->result"
ARRAY = "flow map_array(10)->results"


def add(a: int, b: int) -> int:
    return a + b


def measure(quick: bool) -> tuple[list[Row], str, str]:
    runs, array_runs = (3, 1) if quick else (15, 5)
    work = Path(tempfile.mkdtemp(prefix="flow-bsub-", dir="/tmp"))
    try:
        with running_daemon() as daemon:
            os.environ["FLOW_HOME"] = str(daemon.home.root)
            os.environ.pop("FLOW_PROVIDER", None)
            flow = submitit.AutoExecutor(work / "flow", cluster="flow")
            local = submitit.AutoExecutor(work / "local", cluster="local")
            for executor in (flow, local):
                executor.update_parameters(timeout_min=5)
                assert executor.submit(add, 5, 7).result() == 12  # warm: client, daemon, imports

            def one(executor: submitit.AutoExecutor) -> None:
                assert executor.submit(add, 5, 7).result() == 12

            def array(executor: submitit.AutoExecutor) -> None:
                jobs = executor.map_array(add, range(10), range(10))
                assert [job.result() for job in jobs] == [2 * k for k in range(10)]

            single = interleaved({SINGLE: lambda: one(flow), "LocalExecutor": lambda: one(local)}, runs)
            arrays = interleaved(
                {ARRAY: lambda: array(flow), "LocalExecutor map_array": lambda: array(local)}, array_runs
            )
            home = str(daemon.home.root)
        rows = [
            Row(single[SINGLE], single["LocalExecutor"]),
            Row(arrays[ARRAY], arrays["LocalExecutor map_array"]),
        ]
        return rows, home, str(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_report(rows: list[Row], home: str, work: str, quick: bool) -> None:
    print(
        f"flow submitit frontend benchmark ({'quick' if quick else 'full'}; python {sys.version.split()[0]}, "
        f"submitit {submitit.__version__}, {os.cpu_count()} cpus)"
    )
    print(f"{'benchmark':<28} {'n':>4} {'median':>10} {'p90':>10}   {'floor':<24} {'median':>10} {'ratio':>8}")
    for row in rows:
        s, floor = row.sample, row.floor
        assert floor is not None
        ratio = f"{s.median / floor.median:>7.2f}x"
        measured = f"{s.name:<28} {len(s.seconds):>4} {fmt(s.median):>10} {fmt(s.p90):>10}"
        print(f"{measured}   {floor.name:<24} {fmt(floor.median):>10} {ratio}")
    print("(medians of repeated runs, interleaved; floors measured in this run;")
    print(" LocalExecutor's result() polls once a second)")
    print(f"flowd for FLOW_HOME={home}: stopped, home removed")
    print(f"job folders in {work}: removed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    rows, home, work = measure(args.quick)
    print_report(rows, home, work, args.quick)


if __name__ == "__main__":
    main()
