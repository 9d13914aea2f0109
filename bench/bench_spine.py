"""Times Flow's spine end to end against a real flowd: submit -> done, log streaming, CLI start-up.

Run: .venv/bin/python bench/bench_spine.py [--quick] [--only status|logs]   (Flow installed, as `make bench` does)

One run starts a private flowd in a fresh FLOW_HOME under /tmp, measures every row against a
floor measured in the same run on the same machine, prints one table (median, p90, floor, ratio)
and one line per budget, then stops the daemon and removes its home. The budgets are what Flow
aims for; they are reported, never asserted. Read the ratios: they say what Flow costs over the
cheapest way to do the same thing here, whatever the machine.

Rows:
  sdk run(true)+wait       Flow.run(["true"]) then task.wait(), client warm; floor: subprocess.run(["true"])
  cli flow run ... true    `flow run --no-upload true` as a whole process; floor: `python -c pass`
  logs 200k lines          submit of a task printing 200,000 lines of 100 bytes (20 MB) to the last
                           line out of `task.logs(follow=True)` (count and order checked); floor: the
                           same program under subprocess.Popen, its pipe read line by line to EOF
  cli flow --version       whole process; floor: `python -c "import grpc"`
  cli flow status          whole process, a handful of tasks in the daemon; same floor. It answers
                           without grpcio (flow.transport.http2_unary); the next row is the same command
                           forced onto the grpcio path (FLOW_CLI_FASTPATH=0), for comparison
  python: import ...       context for the two rows above: the imports any gRPC client of flowd
                           needs (grpc, protobuf, the flowapi stubs), and the SDK's (flow.client)
  raw GetDaemonInfo        one unary call on a bare gRPC stub (the transport's own floor)
  sdk get_task             Flow.get_task(id); floor: the raw GetDaemonInfo call
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from flow.client import Flow
from flow.config import TaskConfig
from flow.task import TaskStatus
from flowapi.v1 import daemon_service_pb2, daemon_service_pb2_grpc

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Row, Sample, fmt, interleaved, repeat, running_daemon
else:
    from harness import BenchDaemon, Row, Sample, fmt, interleaved, repeat, running_daemon

BIN = Path(sys.executable).parent  # the environment Flow is installed in (its `flow` script)
LINES = 200_000
LINE_TEXT = 90  # 8 digits, a space, 90 x and the newline: 100 bytes
PRODUCER = (
    f"import sys\nw = sys.stdout.write\nfor i in range({LINES}):\n    w(f'{{i:08d}} ' + 'x' * {LINE_TEXT} + '\\n')\n"
)
SEED_TASKS = 5  # what `flow status` lists
MARKER_PREFIX = "flow-task:"  # the local provider's argv marker on every task process
SDK_RUN = "sdk run(true)+wait"
TRUE_FLOOR = 'subprocess.run(["true"])'
PASS_FLOOR = "python -c pass"
GRPC_FLOOR = 'python -c "import grpc"'
STATUS = f"cli flow status ({SEED_TASKS} tasks)"
STATUS_GRPC = "cli flow status, grpcio path"
IMPORT_STUBS = (
    "import grpc, grpc_status.rpc_status, flowapi.v1.task_service_pb2_grpc, flowapi.v1.daemon_service_pb2_grpc"
)


@dataclass(frozen=True)
class Reps:
    sdk_run: int
    cli_run: int
    logs: int
    cli_start: int
    unary: int

    @staticmethod
    def of(quick: bool) -> Reps:
        if quick:
            return Reps(sdk_run=20, cli_run=5, logs=3, cli_start=5, unary=100)
        return Reps(sdk_run=100, cli_run=20, logs=7, cli_start=20, unary=500)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    budgets: list[tuple[str, float, Sample]] = field(default_factory=list)
    home: str = ""  # the daemon's FLOW_HOME, gone by the time the report prints


# --- the measurements ----------------------------------------------------------------------------


def run_process(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(argv, capture_output=True, env=env, cwd=cwd, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}")


def process_samples(
    commands: dict[str, list[str]],
    runs: int,
    env: dict[str, str],
    cwd: Path,
    extra_env: dict[str, dict[str, str]] | None = None,
) -> dict[str, Sample]:
    """Whole processes, timed from spawn to exit, interleaved; `extra_env` adds variables for
    the commands it names."""
    envs = {name: {**env, **(extra_env or {}).get(name, {})} for name in commands}
    for name, argv in commands.items():
        run_process(argv, envs[name], cwd)  # once untimed: .pyc caches written, files in the page cache

    def runner(name: str, argv: list[str]) -> Callable[[], None]:
        return lambda: run_process(argv, envs[name], cwd)

    return interleaved({name: runner(name, argv) for name, argv in commands.items()}, runs)


def sdk_run_true(flow: Flow) -> None:
    task = flow.run(["true"], upload_code=False)
    task.wait()
    if task.last_status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"`true` ended {task.last_status}: {task.state_reason}")


def check_lines(lines: list[str] | list[bytes], source: str) -> None:
    """All 200,000 lines, each exactly once and in order (the counters are 0..N-1)."""
    if len(lines) != LINES:
        raise RuntimeError(f"{source}: {len(lines)} lines, expected {LINES}")
    counters = [int(line[:8]) for line in lines]
    if counters != list(range(LINES)):
        first = next(i for i, c in enumerate(counters) if c != i)
        raise RuntimeError(f"{source}: line {first} holds counter {counters[first]}")
    sizes = {len(line.rstrip(b"\n") if isinstance(line, bytes) else line) for line in lines}
    if sizes != {9 + LINE_TEXT}:
        raise RuntimeError(f"{source}: line lengths {sorted(sizes)}, expected {9 + LINE_TEXT}")


def stream_logs_once(flow: Flow, config: TaskConfig) -> float:
    """Seconds from submit to the last line out of logs(follow=True); checks them afterwards."""
    last = LINES - 1
    lines: list[str] = []
    append = lines.append
    received = 0.0
    started = time.perf_counter()
    task = flow.run(config)
    for i, line in enumerate(task.logs(follow=True)):
        append(line)
        if i == last:
            received = time.perf_counter()
    ended = time.perf_counter()
    task.wait()
    check_lines(lines, "logs(follow=True)")
    if task.last_status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"the producer ended {task.last_status}: {task.state_reason}")
    return (received or ended) - started


def pipe_once(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning the producer to EOF on its stdout pipe, read line by line."""
    last = LINES - 1
    lines: list[bytes] = []
    append = lines.append
    received = 0.0
    started = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env) as child:
        assert child.stdout is not None
        for i, line in enumerate(child.stdout):
            append(line)
            if i == last:
                received = time.perf_counter()
        ended = time.perf_counter()
    check_lines(lines, "pipe floor")
    if child.returncode != 0:
        raise RuntimeError(f"the producer exited {child.returncode} under Popen")
    return (received or ended) - started


def measure_logs(flow: Flow, daemon: BenchDaemon, runs: int) -> Row:
    config = TaskConfig(script=PRODUCER, upload_code=False)
    # The task runs `python3 <script>` from flowd's PATH with PYTHONUNBUFFERED=1: the floor too.
    script = daemon.home.root / "producer.py"
    script.write_text(PRODUCER)
    env = daemon.env()
    env["PYTHONUNBUFFERED"] = "1"
    python3 = shutil.which("python3", path=env.get("PATH")) or "python3"
    argv = [python3, str(script)]
    stream_logs_once(flow, config)  # warm both paths once
    pipe_once(argv, env)
    flow_times: list[float] = []
    floor_times: list[float] = []
    for _ in range(runs):  # interleaved, so drift on a noisy machine hits both alike
        flow_times.append(stream_logs_once(flow, config))
        floor_times.append(pipe_once(argv, env))
    return Row(
        Sample(f"logs {LINES // 1000}k lines (20 MB)", flow_times),
        Sample("Popen pipe, line by line", floor_times),
    )


def measure_unary(flow: Flow, daemon: BenchDaemon, task_id: str, runs: int) -> tuple[Row, Row]:
    channel = grpc.insecure_channel(daemon.home.address)
    try:
        stub = daemon_service_pb2_grpc.DaemonServiceStub(channel)
        request = daemon_service_pb2.GetDaemonInfoRequest()

        def info() -> None:
            stub.GetDaemonInfo(request, timeout=10)

        for _ in range(20):
            info()
        raw = repeat(info, runs, "raw GetDaemonInfo (unary)")
    finally:
        channel.close()
    for _ in range(20):
        flow.get_task(task_id)
    sdk = repeat(lambda: flow.get_task(task_id), runs, "sdk get_task(id)")
    return Row(raw, None), Row(sdk, raw)


def measure(quick: bool, only: str | None = None) -> Report:
    """Every row; with `only`, just the `flow status` rows ("status") or the log rows ("logs")."""
    reps = Reps.of(quick)
    report = Report()
    flow_cli = BIN / "flow"
    if not flow_cli.exists():
        raise SystemExit(f"no `flow` next to {sys.executable}; run this with the project's .venv python")
    with running_daemon() as daemon:
        report.home = str(daemon.home.root)
        env = daemon.env()
        cwd = daemon.home.root
        flow = Flow(flow_home=daemon.home.root)
        try:
            seeded = [flow.run(["true"], upload_code=False).wait() for _ in range(SEED_TASKS)]
            if only == "logs":
                report.rows = [measure_logs(flow, daemon, reps.logs)]
                report.budgets = [("logs 200k lines", 1.0, report.rows[0].sample)]
                return report
            if only == "status":
                picked = process_samples(
                    {
                        GRPC_FLOOR: [sys.executable, "-c", "import grpc"],
                        STATUS: [str(flow_cli), "status"],
                        STATUS_GRPC: [str(flow_cli), "status"],
                    },
                    reps.cli_start,
                    env,
                    cwd,
                    {STATUS_GRPC: {"FLOW_CLI_FASTPATH": "0"}},
                )
                floor = picked.pop(GRPC_FLOOR)
                report.rows = [Row(sample, floor) for sample in picked.values()]
                report.budgets = [("cli flow status", 0.150, picked[STATUS])]
                return report

            # (d) cold CLI start-up, while the daemon holds only the seeded tasks. The two
            # `python: import` rows are context: what any gRPC client of flowd must import, and
            # what the SDK imports (`flow status` is the latter, two unary calls and a table).
            start_up = process_samples(
                {
                    GRPC_FLOOR: [sys.executable, "-c", "import grpc"],
                    "cli flow --version": [str(flow_cli), "--version"],
                    STATUS: [str(flow_cli), "status"],
                    STATUS_GRPC: [str(flow_cli), "status"],
                    "python: import grpc+flowapi stubs": [sys.executable, "-c", IMPORT_STUBS],
                    "python: import flow.client": [sys.executable, "-c", "import flow.client"],
                },
                reps.cli_start,
                env,
                cwd,
                {STATUS_GRPC: {"FLOW_CLI_FASTPATH": "0"}},
            )

            # (a) SDK submit -> COMPLETED, client warm.
            for _ in range(5):
                sdk_run_true(flow)
            submit = interleaved(
                {
                    TRUE_FLOOR: lambda: subprocess.run(["true"], check=True),
                    SDK_RUN: lambda: sdk_run_true(flow),
                },
                reps.sdk_run,
            )

            # (b) the same through the CLI, as a whole process.
            cli_run = process_samples(
                {
                    PASS_FLOOR: [sys.executable, "-c", "pass"],
                    "cli flow run --no-upload true": [str(flow_cli), "run", "--no-upload", "true"],
                },
                reps.cli_run,
                env,
                cwd,
            )

            # (c) 20 MB of logs.
            logs = measure_logs(flow, daemon, reps.logs)

            raw, get_task = measure_unary(flow, daemon, seeded[0].task_id, reps.unary)
        finally:
            flow.close()

    grpc_floor = start_up.pop(GRPC_FLOOR)
    status = start_up[STATUS]
    sdk = submit[SDK_RUN]
    pass_floor = cli_run.pop(PASS_FLOOR)
    report.rows = [
        Row(sdk, submit[TRUE_FLOOR]),
        *(Row(sample, pass_floor) for sample in cli_run.values()),
        logs,
        *(Row(sample, grpc_floor) for sample in start_up.values()),
        raw,
        get_task,
    ]
    report.budgets = [
        (SDK_RUN, 0.015, sdk),
        ("logs 200k lines", 1.0, logs.sample),
        ("cli flow status", 0.150, status),
    ]
    return report


# --- the table ----------------------------------------------------------------------------------


def print_report(report: Report, quick: bool) -> None:
    print(
        f"flow spine benchmark ({'quick' if quick else 'full'}; python {sys.version.split()[0]}, {os.cpu_count()} cpus)"
    )
    print(f"{'benchmark':<34} {'n':>4} {'median':>10} {'p90':>10}   {'floor':<28} {'median':>10} {'ratio':>8}")
    for row in report.rows:
        s = row.sample
        if row.floor is None:
            floor = f"{'-':<28} {'-':>10} {'-':>8}"
        else:
            floor = f"{row.floor.name:<28} {fmt(row.floor.median):>10} {s.median / row.floor.median:>7.1f}x"
        print(f"{s.name:<34} {len(s.seconds):>4} {fmt(s.median):>10} {fmt(s.p90):>10}   {floor}")
    for label, budget, sample in report.budgets:
        verdict = "ok" if sample.median <= budget else "over"
        limit = f"{budget:g} s" if budget >= 1.0 else f"{budget * 1e3:g} ms"
        print(f"budget {limit} ({label}, median): {fmt(sample.median)} ({verdict})")
    print("(medians of repeated runs; floors measured in this run; budgets are reported, not asserted)")
    print(f"flowd for FLOW_HOME={report.home}: stopped, home removed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--only", choices=["status", "logs"], help="only the `flow status` rows, or only the log rows")
    args = parser.parse_args()
    report = measure(args.quick, args.only)
    print_report(report, args.quick)


if __name__ == "__main__":
    main()
