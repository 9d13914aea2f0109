"""Times Flow's spine end to end against a real flowd: submit -> done, log streaming, CLI start-up.

Run: .venv/bin/python bench/bench_spine.py [--quick] [--only status|logs|cli]   (Flow installed, as `make bench` does)

One run starts a private flowd in a fresh FLOW_HOME under /tmp, measures every row against a
floor measured in the same run on the same machine, prints one table (median, p90, floor, ratio)
and one line per budget, then stops the daemon and removes its home. The budgets are what Flow
aims for; they are reported, never asserted. Read the ratios: they say what Flow costs over the
cheapest way to do the same thing here, whatever the machine.

Rows:
  sdk run(true)+wait       Flow.run(["true"]) then task.wait(), client warm; floor: subprocess.run(["true"])
  cli flow ...              every CLI command as a whole process against a running daemon; floor:
                           `python -c pass`, with a budget of 3x that floor each: --version, status,
                           run --no-upload true, run true (uploading a small project, unchanged since the
                           last run), logs and wait (a finished task), cancel (a fresh running task each
                           time), ssh TASK -- true (a running task), invoke FILE FUNCTION
  cold flow status          `flow status` with no daemon running (it starts one): the first command a
                           person types; budget 250 ms. The next row is flowd alone, from
                           `flowd --detach` to serving (the process exits once it serves)
  logs 200k lines          submit of a task printing 200,000 lines of 100 bytes (20 MB) to the last
                           line out of `task.logs(follow=True)` (count and order checked); floor: the
                           same program under subprocess.Popen, its pipe read line by line to EOF
  cli flow status, grpcio   `flow status` forced onto the grpcio path (FLOW_CLI_FASTPATH=0), for
                           comparison; floor: `python -c "import grpc"`
  python: import ...       context for the row above: the imports any gRPC client of flowd
                           needs (grpc, protobuf, the flowapi stubs), and the SDK's (flow.client)
  raw GetDaemonInfo        one unary call on a bare gRPC stub (the transport's own floor)
  sdk get_task             Flow.get_task(id); floor: the raw GetDaemonInfo call
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import grpc

from flow.client import Flow
from flow.config import TaskConfig
from flow.home import FlowHome
from flow.task import Task, TaskStatus
from flowapi.v1 import daemon_service_pb2, daemon_service_pb2_grpc

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Row, Sample, fmt, interleaved, pid_alive, repeat, running_daemon
else:
    from harness import BenchDaemon, Row, Sample, fmt, interleaved, pid_alive, repeat, running_daemon

BIN = Path(sys.executable).parent  # the environment Flow is installed in (its `flow` script)
LINES = 200_000
LINE_TEXT = 90  # 8 digits, a space, 90 x and the newline: 100 bytes
PRODUCER = (
    f"import sys\nw = sys.stdout.write\nfor i in range({LINES}):\n    w(f'{{i:08d}} ' + 'x' * {LINE_TEXT} + '\\n')\n"
)
SEED_TASKS = 5  # what `flow status` lists
SDK_RUN = "sdk run(true)+wait"
TRUE_FLOOR = 'subprocess.run(["true"])'
PASS_FLOOR = "python -c pass"
GRPC_FLOOR = 'python -c "import grpc"'
STATUS = f"cli flow status ({SEED_TASKS} tasks)"
STATUS_GRPC = "cli flow status, grpcio path"
CLI_RUN = "cli flow run --no-upload true"
COLD_STATUS = "cold flow status (no daemon)"
COLD_FLOWD = "cold flowd --detach to serving"
CLI_BUDGET_RATIO = 3.0  # each CLI command within 3x `python -c pass` when the daemon runs
COLD_BUDGET = 0.250  # the first command with no daemon running
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
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the machine is shared: say how busy


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


def stop_daemon_of(home: FlowHome) -> None:
    """Stops the flowd serving `home` (if any) and waits until it is gone, socket and all."""
    try:
        pid = int(home.lock.read_text().strip())
    except (OSError, ValueError):
        return
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    while home.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # a SIGKILLed daemon leaves it: the next start replaces it


class Launch(NamedTuple):
    argv: list[str]
    cwd: Path
    env: dict[str, str]


def prepared_samples(launches: dict[str, Callable[[], Launch]], runs: int) -> dict[str, Sample]:
    """Whole processes, timed from spawn to exit, round-robin; each launch first does its untimed
    preparation (a fresh task to cancel, no daemon for a cold start) and says what to run."""
    for prepare in launches.values():  # once untimed: .pyc caches written, files in the page cache
        launch = prepare()
        run_process(launch.argv, launch.env, launch.cwd)
    timings: dict[str, list[float]] = {name: [] for name in launches}
    for _ in range(runs):
        for name, prepare in launches.items():
            launch = prepare()
            started = time.perf_counter()
            run_process(launch.argv, launch.env, launch.cwd)
            timings[name].append(time.perf_counter() - started)
    return {name: Sample(name, seconds) for name, seconds in timings.items()}


def make_project() -> Path:
    """A small project to submit from: twenty source files and the function `flow invoke` calls."""
    project = Path(tempfile.mkdtemp(prefix="flow-b-proj-", dir="/tmp"))
    for i in range(20):
        (project / f"module_{i:02d}.py").write_text(f"VALUE = {i}\n" + "# filler\n" * 50)
    (project / "fn.py").write_text("def add(a, b):\n    return a + b\n")
    return project


def cli_launches(flow: Flow, daemon: BenchDaemon, project: Path, cold: FlowHome) -> dict[str, Callable[[], Launch]]:
    """Every CLI command against the running daemon (and the two cold-start rows, on `cold`)."""
    flow_cli = str(BIN / "flow")
    env = daemon.env()
    home = daemon.home.root
    finished = flow.run("for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done", upload_code=False).wait()
    running = flow.run(["sleep", "600"], upload_code=False)
    wait_running(running)
    cold_env = {**env, "FLOW_HOME": str(cold.root)}

    def fixed(*args: str, cwd: Path = home) -> Callable[[], Launch]:
        return lambda: Launch([flow_cli, *args], cwd, env)

    def cancel() -> Launch:
        task = flow.run(["sleep", "600"], upload_code=False)
        wait_running(task)
        return Launch([flow_cli, "cancel", task.task_id], home, env)

    def cold_status() -> Launch:
        stop_daemon_of(cold)
        return Launch([flow_cli, "status"], home, cold_env)

    def cold_flowd() -> Launch:
        stop_daemon_of(cold)
        return Launch([sys.executable, "-m", "flowd", "--detach", "--home", str(cold.root)], home, cold_env)

    return {
        PASS_FLOOR: lambda: Launch([sys.executable, "-c", "pass"], home, env),
        "cli flow --version": fixed("--version"),
        STATUS: fixed("status"),
        CLI_RUN: fixed("run", "--no-upload", "true"),
        "cli flow run true (upload)": fixed("run", "true", cwd=project),
        "cli flow logs TASK": fixed("logs", finished.task_id),
        "cli flow wait TASK": fixed("wait", finished.task_id),
        "cli flow cancel TASK": cancel,
        "cli flow ssh TASK -- true": fixed("ssh", running.task_id, "--", "true"),
        "cli flow invoke FILE FUNCTION": fixed("invoke", "fn.py", "add", "--args", "[1, 2]", cwd=project),
        COLD_STATUS: cold_status,
        COLD_FLOWD: cold_flowd,
    }


def wait_running(task: Task) -> None:
    deadline = time.monotonic() + 60
    while task.status is not TaskStatus.RUNNING:
        if task.last_status.is_terminal or time.monotonic() > deadline:
            raise RuntimeError(f"task {task.task_id} is {task.last_status}, not RUNNING: {task.state_reason}")
        time.sleep(0.01)


def measure_cli(flow: Flow, daemon: BenchDaemon, runs: int) -> tuple[list[Row], list[tuple[str, float, Sample]]]:
    """Every CLI command as a whole process, and the cold start, against `python -c pass`."""
    project = make_project()
    cold = FlowHome(root=Path(tempfile.mkdtemp(prefix="flow-c-", dir="/tmp")))
    try:
        samples = prepared_samples(cli_launches(flow, daemon, project, cold), runs)
    finally:
        stop_daemon_of(cold)
        shutil.rmtree(cold.root, ignore_errors=True)
        shutil.rmtree(project, ignore_errors=True)
    floor = samples.pop(PASS_FLOOR)
    rows = [Row(sample, floor) for sample in samples.values()]
    limit = CLI_BUDGET_RATIO * floor.median
    budgets = [
        (f"{name} = {CLI_BUDGET_RATIO:g}x {PASS_FLOOR}", limit, sample)
        for name, sample in samples.items()
        if name.startswith("cli ")
    ]
    budgets.append((COLD_STATUS, COLD_BUDGET, samples[COLD_STATUS]))
    return rows, budgets


def measure(quick: bool, only: str | None = None) -> Report:
    """Every row; with `only`, just the `flow status` rows ("status"), the log rows ("logs") or
    the CLI rows ("cli")."""
    reps = Reps.of(quick)
    report = Report(load_before=os.getloadavg())
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
            if only == "cli":
                report.rows, report.budgets = measure_cli(flow, daemon, reps.cli_run)
                return report

            # (b) every CLI command as a whole process, and the cold start.
            cli_rows, cli_budgets = measure_cli(flow, daemon, reps.cli_run)

            # (d) the grpcio path of `flow status`, and what any gRPC client of flowd must import
            # and what the SDK imports, against importing grpc.
            start_up = process_samples(
                {
                    GRPC_FLOOR: [sys.executable, "-c", "import grpc"],
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

            # (c) 20 MB of logs.
            logs = measure_logs(flow, daemon, reps.logs)

            raw, get_task = measure_unary(flow, daemon, seeded[0].task_id, reps.unary)
        finally:
            flow.close()

    grpc_floor = start_up.pop(GRPC_FLOOR)
    sdk = submit[SDK_RUN]
    report.rows = [
        Row(sdk, submit[TRUE_FLOOR]),
        *cli_rows,
        logs,
        *(Row(sample, grpc_floor) for sample in start_up.values()),
        raw,
        get_task,
    ]
    report.budgets = [
        (SDK_RUN, 0.015, sdk),
        ("logs 200k lines", 1.0, logs.sample),
        *cli_budgets,
    ]
    return report


# --- the table ----------------------------------------------------------------------------------


def print_report(report: Report, quick: bool) -> None:
    print(
        f"flow spine benchmark ({'quick' if quick else 'full'}; python {sys.version.split()[0]}, {os.cpu_count()} cpus)"
    )
    before, after = report.load_before, os.getloadavg()
    print(
        f"load average (1, 5, 15 min): {before[0]:.2f} {before[1]:.2f} {before[2]:.2f} before, "
        f"{after[0]:.2f} {after[1]:.2f} {after[2]:.2f} after"
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
        limit = fmt(budget)
        print(f"budget {limit} ({label}, median): {fmt(sample.median)} ({verdict})")
    print("(medians of repeated runs; floors measured in this run; budgets are reported, not asserted)")
    print(f"flowd for FLOW_HOME={report.home}: stopped, home removed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument(
        "--only", choices=["status", "logs", "cli"], help="only the `flow status` rows, the log rows or the CLI rows"
    )
    args = parser.parse_args()
    report = measure(args.quick, args.only)
    print_report(report, args.quick)


if __name__ == "__main__":
    main()
