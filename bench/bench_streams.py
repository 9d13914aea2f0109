"""Long-lived calls and big logs against a real flowd: short calls beside 1,000 followers and 1,000
waiters, flowd's memory for tail_lines on a big log, and a big log with a huge line streamed.

Run: .venv/bin/python bench/bench_streams.py [--quick]   (Flow installed, as `make bench` does)

One run starts a private flowd in a fresh FLOW_HOME under /tmp, measures each row against a floor
measured in the same run on the same machine, prints one table, then stops the daemon and removes
its home (and the big log with it). Nothing is asserted; read the ratios.

Rows:
  health p99, 1000 followers+1000 waiters
      the 99th percentile of grpc.health.v1 Check round trips while 1,000 StreamTaskLogs followers
      and 1,000 WaitTask calls are open on a running task; floor: the same with nothing open
  flowd peak RSS, tail_lines=10 on 1 GB log
      flowd's peak resident memory (VmHWM) after StreamTaskLogs(tail_lines=10) on a finished
      task's 1 GB log (lines of 100 bytes, one 10 MB line, and its last 10 MB without a newline);
      floor: flowd's resident memory just before the request. The ratio is the growth
  stream 1 GB log with a 10 MB line
      the whole log through StreamTaskLogs (bytes counted and compared); floor: reading the file
      itself in 256 KiB pieces
--quick uses a 64 MB log (a 4 MB line) and 200 + 200 open calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flow.client import Flow
from flow.task import TaskStatus
from flowapi.v1 import task_service_pb2, task_service_pb2_grpc

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, fmt, running_daemon
else:
    from harness import BenchDaemon, fmt, running_daemon

BATCH = 100  # calls opened at once (gRPC's transport resets some of thousands opened in one instant)
CHUNK = 256 * 1024


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def health_p99(channel: grpc.Channel, runs: int) -> float:
    stub = health_pb2_grpc.HealthStub(channel)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
        seconds.append(time.perf_counter() - started)
    return statistics.quantiles(seconds, n=100, method="inclusive")[98]


def calls_row(daemon: BenchDaemon, flow: Flow, open_calls: int, runs: int) -> tuple[float, float]:
    task = flow.run("sleep 3600", upload_code=False)
    while task.status is not TaskStatus.RUNNING:
        time.sleep(0.05)
    name = f"tasks/{task.task_id}"
    with grpc.insecure_channel(f"unix:{daemon.home.socket}") as channel:
        floor = health_p99(channel, runs)
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        follow = task_service_pb2.StreamTaskLogsRequest(name=name, follow=True)
        wait = task_service_pb2.WaitTaskRequest(name=name, timeout=Duration(seconds=60))
        calls: list[Any] = []
        try:
            assert daemon.pid is not None
            for _ in range(open_calls // BATCH):
                calls += [tasks.StreamTaskLogs(follow, timeout=3600) for _ in range(BATCH)]
                calls += [tasks.WaitTask.future(wait, timeout=3600) for _ in range(BATCH)]
                deadline = time.monotonic() + 120
                while status_kb(daemon.pid, "Threads") < len(calls) and time.monotonic() < deadline:
                    time.sleep(0.01)  # each open call holds a worker thread in flowd
            loaded = health_p99(channel, runs)
        finally:
            for call in calls:
                call.cancel()
    task.cancel()
    return loaded, floor


def big_log_task(flow: Flow, total_mb: int, line_mb: int) -> str:
    """A finished task whose log holds `total_mb` MB: lines of 100 bytes, one line of `line_mb`
    MB in the middle, and `line_mb` MB without a newline at the end."""
    half = (total_mb - 2 * line_mb) // 2
    program = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "lines = (b'%08d ' % 0 + b'x' * 90 + b'\\n') * 10486\n"  # ~1 MB of 100-byte lines
        f"for _ in range({half}):\n    out.write(lines)\n"
        f"out.write(b'y' * ({line_mb} << 20) + b'\\n')\n"
        f"for _ in range({half}):\n    out.write(lines)\n"
        f"out.write(b'z' * ({line_mb} << 20))\n"
    )
    task = flow.run(["python3", "-c", program], upload_code=False).wait(timeout=1800)
    if task.last_status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"the log writer ended {task.last_status}: {task.state_reason}")
    return task.task_id


def tail_row(daemon: BenchDaemon, task_id: str) -> tuple[int, int]:
    assert daemon.pid is not None
    before = status_kb(daemon.pid, "VmRSS")
    with grpc.insecure_channel(f"unix:{daemon.home.socket}") as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.StreamTaskLogsRequest(name=f"tasks/{task_id}", tail_lines=10)
        received = sum(len(r.data) for r in tasks.StreamTaskLogs(request, timeout=600))
    if received < 10:
        raise RuntimeError(f"tail_lines=10 gave {received} bytes")
    return status_kb(daemon.pid, "VmHWM"), before


def stream_row(daemon: BenchDaemon, task_id: str) -> tuple[float, float, int]:
    path = daemon.home.tasks / task_id / "output.log"
    size = path.stat().st_size
    with grpc.insecure_channel(
        f"unix:{daemon.home.socket}", options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        request = task_service_pb2.StreamTaskLogsRequest(name=f"tasks/{task_id}")
        started = time.perf_counter()
        received = sum(len(r.data) for r in tasks.StreamTaskLogs(request, timeout=1800))
        streamed = time.perf_counter() - started
    if received != size:
        raise RuntimeError(f"streamed {received} of {size} bytes")
    started = time.perf_counter()
    with open(path, "rb") as handle:
        while handle.read(CHUNK):
            pass
    return streamed, time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller log, fewer calls (a smoke run)")
    args = parser.parse_args()
    open_calls, total_mb, line_mb, runs = (200, 64, 4, 200) if args.quick else (1000, 1024, 10, 1000)
    with running_daemon() as daemon:
        os.environ["FLOW_HOME"] = str(daemon.home.root)
        flow = Flow(flow_home=daemon.home.root)
        loaded, floor = calls_row(daemon, flow, open_calls, runs)
        task_id = big_log_task(flow, total_mb, line_mb)
        peak, rest = tail_row(daemon, task_id)
        streamed, read, size = stream_row(daemon, task_id)
        flow.close()
        home = daemon.home.root
    size_text = f"{total_mb // 1024} GB" if total_mb >= 1024 else f"{total_mb} MB"
    print(f"flow streams benchmark ({'quick' if args.quick else 'full'}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus)")  # fmt: skip
    print(f"{'benchmark':<46} {'value':>10}   {'floor':<30} {'value':>10} {'ratio':>8}")
    rows = [
        (f"health p99, {open_calls} followers+{open_calls} waiters", fmt(loaded), "health p99, nothing open",
         fmt(floor), loaded / floor),
        (f"flowd peak RSS, tail_lines=10 on {size_text} log", f"{peak / 1024:.0f} MB", "flowd RSS before the request",
         f"{rest / 1024:.0f} MB", peak / rest),
        (f"stream {size_text} log with a {line_mb} MB line", fmt(streamed), "read the file (256 KiB)", fmt(read),
         streamed / read),
    ]  # fmt: skip
    for name, value, floor_name, floor_value, ratio in rows:
        print(f"{name:<46} {value:>10}   {floor_name:<30} {floor_value:>10} {ratio:>7.1f}x")
    print(f"({size / 2**20:.0f} MB streamed whole; floors measured in this run; nothing is asserted)")
    print(f"flowd for FLOW_HOME={home}: stopped, home removed")


if __name__ == "__main__":
    main()
