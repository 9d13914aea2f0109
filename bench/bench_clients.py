"""Times the TypeScript and Go clients against the Python floor, on one real flowd.

Run: python bench/bench_clients.py [--quick]     (with the project's .venv python, after `make clients`)

One run starts a private flowd in a fresh FLOW_HOME under /tmp, runs one task that prints 200,000
lines of 100 bytes (20 MB) and waits until it is finished, then measures from each language over
the daemon's Unix socket:

  GetTask               one unary round trip, median and p90 over 500 calls (after 20 warm-ups)
  logs 20 MB            StreamTaskLogs of the finished task, read in full (follow off), median
                        over 5 reads (after one warm-up); bytes and lines checked afterwards

The floor is Python's bare grpc stub in this same run (the generated stub, no SDK); each TS
(Connect, @connectrpc/connect-node, run by tsx) and Go (grpc-go) figure is printed with its ratio
against it. The TS and Go sides are clients/ts/bench.ts and clients/go/cmd/bench, which print
their raw timings as JSON. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2

from flowapi.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import Sample, running_daemon
else:
    from harness import Sample, running_daemon

REPO = Path(__file__).resolve().parents[1]
LINES = 200_000
LINE_BYTES = 100  # 8 digits, a space, 90 x and the newline
PRODUCER = f"import sys\nw = sys.stdout.write\nfor i in range({LINES}):\n    w(f'{{i:08d}} ' + 'x' * 90 + '\\n')\n"
TERMINAL = {
    task_pb2.TASK_STATE_COMPLETED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
    task_pb2.TASK_STATE_PREEMPTED,
}


@dataclass(frozen=True)
class ClientRun:
    """What one language measured: GetTask round trips and full log reads."""

    unary: Sample
    stream: Sample


# --- the daemon --------------------------------------------------------------------------------


def finished_producer(stub: task_service_pb2_grpc.TaskServiceStub) -> str:
    """Runs the 20 MB producer to completion; returns the task's name."""
    spec = task_pb2.TaskSpec(name="bench-logs", script=PRODUCER)
    task = stub.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=30).task
    deadline = time.monotonic() + 300
    while task.state not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError("the log producer did not finish within 300 s")
        wait = task_service_pb2.WaitTaskRequest(name=task.name, timeout=duration_pb2.Duration(seconds=30))
        task = stub.WaitTask(wait, timeout=60).task
    if task.state != task_pb2.TASK_STATE_COMPLETED:
        raise RuntimeError(f"the log producer ended {task_pb2.TaskState.Name(task.state)}: {task.state_reason}")
    return task.name


# --- the measurements ----------------------------------------------------------------------------


def check_log(size: int, lines: int, source: str) -> None:
    if (size, lines) != (LINES * LINE_BYTES, LINES):
        raise RuntimeError(f"{source}: read {size} bytes in {lines} lines, expected {LINES * LINE_BYTES} in {LINES}")


def repeat(work: Callable[[], object], runs: int, name: str) -> Sample:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return Sample(name, timings)


def measure_python(socket: Path, name: str, calls: int, reads: int) -> ClientRun:
    """The floor: the generated Python stub on a bare grpc channel."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        get = task_service_pb2.GetTaskRequest(name=name)
        for _ in range(20):
            stub.GetTask(get, timeout=10)
        unary = repeat(lambda: stub.GetTask(get, timeout=10), calls, "python GetTask (raw grpc stub)")
        chunks: list[bytes] = []

        def read_all() -> None:
            chunks.clear()
            for reply in stub.StreamTaskLogs(task_service_pb2.StreamTaskLogsRequest(name=name), timeout=120):
                chunks.append(reply.data)

        read_all()  # warm-up
        stream = repeat(read_all, reads, "python logs 20 MB (raw grpc stub)")
    check_log(sum(map(len, chunks)), sum(c.count(b"\n") for c in chunks), "python")
    return ClientRun(unary, stream)


def measure_program(label: str, argv: list[str], cwd: Path) -> ClientRun:
    """Runs a TS or Go bench program and reads its JSON timings."""
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    check_log(int(result["stream_bytes"]), int(result["stream_lines"]), label)
    return ClientRun(
        Sample(f"{label} GetTask", [float(s) for s in result["unary_s"]]),
        Sample(f"{label} logs 20 MB", [float(s) for s in result["stream_s"]]),
    )


def go_binary(out_dir: Path) -> Path:
    binary = out_dir / "flow-bench-go"
    done = subprocess.run(
        ["go", "build", "-o", str(binary), "./cmd/bench"],
        cwd=REPO / "clients" / "go",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"go build ./cmd/bench failed: {done.stderr.strip()}")
    return binary


def measure(quick: bool) -> list[tuple[Sample, Sample]]:
    calls, reads = (100, 2) if quick else (500, 5)
    tsx = REPO / "node_modules" / ".bin" / "tsx"
    if not tsx.exists() or shutil.which("go") is None:
        raise SystemExit("needs node_modules (npm ci) and go on PATH: run `make clients` first")
    with tempfile.TemporaryDirectory(prefix="flow-bc-bin-") as scratch:
        go = go_binary(Path(scratch))
        with running_daemon() as daemon:
            home = daemon.home.root
            socket = home / "flowd.sock"
            with grpc.insecure_channel(f"unix:{socket}") as channel:
                name = finished_producer(task_service_pb2_grpc.TaskServiceStub(channel))
            args = [str(socket), name, str(calls), str(reads)]
            python = measure_python(socket, name, calls, reads)
            ts = measure_program("ts (connect-node)", [str(tsx), "clients/ts/bench.ts", *args], REPO)
            golang = measure_program("go (grpc-go)", [str(go), *args], REPO)
    rows = [(python.unary, python.unary), (ts.unary, python.unary), (golang.unary, python.unary)]
    rows += [(python.stream, python.stream), (ts.stream, python.stream), (golang.stream, python.stream)]
    return rows


# --- the table ----------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def print_table(rows: list[tuple[Sample, Sample]], quick: bool) -> None:
    print(f"flow clients benchmark ({'quick' if quick else 'full'}; {os.cpu_count()} cpus; one flowd, Unix socket)")
    print(f"{'benchmark':<40} {'n':>4} {'median':>10} {'p90':>10} {'MB/s':>8} {'vs python':>10}")
    for sample, floor in rows:
        rate = f"{LINES * LINE_BYTES / 1e6 / sample.median:>8.0f}" if "logs" in sample.name else f"{'-':>8}"
        ratio = f"{sample.median / floor.median:>9.2f}x"
        times = f"{fmt(sample.median):>10} {fmt(sample.p90):>10}"
        print(f"{sample.name:<40} {len(sample.seconds):>4} {times} {rate} {ratio}")
    print("(ratio = median / the python raw-stub median in this run; reported, not asserted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    print_table(measure(args.quick), args.quick)


if __name__ == "__main__":
    main()
