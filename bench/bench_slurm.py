"""The slurm provider against the local test Slurm: queries per poll, and submit->RUNNING latency.

Run: .venv/bin/python bench/bench_slurm.py [--quick]   (as root: it takes a lease on
tools/test-stack, starting it if needed; the last lease stops it again)

For the count, the Slurm commands of a second provider of the same flowd are wrapped by counting
shims (its bin_dir: each appends its name, the time and its arguments to a log, then execs the
real command), so the counts are Slurm's real workload, not a mock's; the timed rows use a
provider without them (a shim is a bash start per command, which the floor does not pay). Floors
are bare Slurm, measured in the same run:

  submit->RUNNING (1 task)       Flow.run(sleep) then task.status polled every 20 ms until RUNNING;
                                 floor: `sbatch --wrap sleep`, then `squeue -j` every 20 ms
  N tasks submit->all RUNNING    N concurrent Flow.run from 16 threads, until every task is RUNNING;
                                 floor: N concurrent bare sbatch, then one squeue for all every 20 ms;
                                 the median of 3 rounds
  squeue calls per poll          with N live tasks (of the counted provider, all RUNNING), squeue
                                 calls in a steady window divided by the polls the window holds
                                 (window / poll_interval): O(1) means 1.00 whatever N (the ids
                                 per call show that each call asks for all)

Flow and its floor are measured in turns (one bare run, one Flow run, ...), so a busy moment of a
shared machine falls on both. Ratios are Flow's time over the floor's; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from flow.client import Flow
from flow.config import TaskConfig
from flow.task import Task, TaskStatus

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Sample, fmt
else:
    from harness import BenchDaemon, Sample, fmt

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "tools" / "test-stack"
SLURM_TOOLS = ("squeue", "sbatch", "scancel", "sinfo", "scontrol", "sacct")
POLL_INTERVAL = 0.25
PROVIDER = "bench-slurm"
COUNTED = "bench-slurm-counted"  # the same cluster, every Slurm command through a counting shim
SPIN = 0.02
BARE_JOBS: list[str] = []  # every bare job this run submitted, cancelled at the end whatever happens


def stack_env() -> dict[str, str]:
    done = subprocess.run([str(STACK), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


def write_shims(shim_dir: Path, log: Path) -> None:
    """One counting wrapper per Slurm command, exec'ing the real one."""
    for tool in SLURM_TOOLS:
        real = shutil.which(tool)
        if real is None:
            raise SystemExit(f"{tool} is not installed: run tools/test-stack start (as root)")
        shim = shim_dir / tool
        shim.write_text(
            f'#!/bin/bash\nprintf \'%s %s %s\\n\' {tool} "$EPOCHREALTIME" "$*" >> {log}\nexec {real} "$@"\n'
        )
        shim.chmod(0o755)


def calls(log: Path, tool: str, start: float = 0.0, end: float = float("inf")) -> list[str]:
    """The argument strings of `tool`'s calls between start and end (epoch seconds)."""
    found = []
    for line in log.read_text().splitlines():
        name, stamp, *rest = line.split(" ", 2)
        if name == tool and start <= float(stamp) <= end:
            found.append(rest[0] if rest else "")
    return found


def bare_once(env: dict[str, str]) -> float:
    """sbatch, then squeue every 20 ms until RUNNING: what a hand-written poller gets."""
    started = time.perf_counter()
    job = subprocess.run(
        ["sbatch", "--parsable", "--wrap", "sleep 60", "-o", "/dev/null"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    BARE_JOBS.append(job)
    while True:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, env=env)
        if state.stdout.strip() == "RUNNING":
            break
        time.sleep(SPIN)
    took = time.perf_counter() - started
    subprocess.run(["scancel", job], env=env, check=False)
    return took


def flow_once(flow: Flow) -> float:
    started = time.perf_counter()
    task = flow.run(TaskConfig(command=["sleep", "60"], upload_code=False))
    while task.status is not TaskStatus.RUNNING:
        time.sleep(SPIN)
    took = time.perf_counter() - started
    task.cancel()
    return took


def latencies(env: dict[str, str], flow: Flow, runs: int) -> tuple[Sample, Sample]:
    """Flow and the floor in turns (bare, Flow, bare, ...): a busy moment of the machine or the
    controller falls on both, not on one row."""
    bare: list[float] = []
    flowed: list[float] = []
    for _ in range(runs):
        bare.append(bare_once(env))
        wait_idle(env)
        flowed.append(flow_once(flow))
        wait_idle(env)
    return Sample("bare sbatch + squeue", bare), Sample("flow run -> RUNNING", flowed)


def bare_many(env: dict[str, str], count: int) -> float:
    started = time.perf_counter()

    def submit(_: int) -> str:
        return subprocess.run(
            ["sbatch", "--parsable", "--wrap", "sleep 120", "-o", "/dev/null"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()

    with ThreadPoolExecutor(16) as pool:
        jobs = list(pool.map(submit, range(count)))
    BARE_JOBS.extend(jobs)
    while True:
        states = subprocess.run(
            ["squeue", "-h", "-j", ",".join(jobs), "-o", "%T"], capture_output=True, text=True, env=env
        ).stdout.split()
        if len(states) == count and all(s == "RUNNING" for s in states):
            break
        time.sleep(SPIN)
    took = time.perf_counter() - started
    subprocess.run(["scancel", *jobs], env=env, check=False)
    return took


def flow_many(flow: Flow, count: int) -> tuple[float, list[Task]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        tasks = list(
            pool.map(lambda _: flow.run(TaskConfig(command=["sleep", "120"], upload_code=False)), range(count))
        )
    ids = {t.task_id for t in tasks}
    while True:
        running = [t for t in flow.list_tasks(status=TaskStatus.RUNNING, limit=count * 2) if t.task_id in ids]
        if len(running) == count:
            break
        time.sleep(SPIN)
    return time.perf_counter() - started, tasks


def wait_idle(env: dict[str, str], timeout: float = 60) -> None:
    """Until the test cluster runs nothing (the previous row's jobs are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = subprocess.run(["squeue", "-h", "-t", "PD,R,CG", "-o", "%i"], capture_output=True, text=True, env=env)
        if not live.stdout.strip():
            return
        time.sleep(0.1)


def row(name: str, value: str, p90: str, floor: str, ratio: str) -> str:
    return f"{name:<38} {value:>10} {p90:>10} {floor:>10} {ratio:>7}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and 20 tasks instead of 100 (a smoke run)")
    args = parser.parse_args()
    runs, count, rounds, window = (5, 20, 1, 2.0) if args.quick else (15, 100, 3, 5.0)
    if os.geteuid() != 0:
        print("bench_slurm needs the test Slurm: run it as root (it starts tools/test-stack)", file=sys.stderr)
        return 2
    lease = str(os.getpid())  # shares the stack with test sessions; the last lease stops it
    subprocess.run([str(STACK), "start", "--lease", lease], check=True, timeout=900)
    env = {**os.environ, **stack_env()}
    scratch = Path(tempfile.mkdtemp(prefix="flow-bench-slurm-"))
    shim_dir = scratch / "bin"
    shim_dir.mkdir()
    log = scratch / "calls.log"
    log.touch()
    write_shims(shim_dir, log)
    daemon = BenchDaemon()
    config = daemon.home.config
    providers = {PROVIDER: "", COUNTED: f"    bin_dir: {shim_dir}\n"}
    config.write_text(
        "providers:\n"
        + "".join(
            f"  {name}:\n    kind: slurm\n    mode: local\n    slurm_conf: {env['SLURM_CONF']}\n"
            f"    poll_interval: {POLL_INTERVAL}\n    work_dir: {scratch}/work-{name}\n{extra}"
            for name, extra in providers.items()
        )
    )
    config.chmod(0o600)
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    try:
        daemon.start()
        flow = Flow(provider=PROVIDER, flow_home=daemon.home.root)
        counted = Flow(provider=COUNTED, flow_home=daemon.home.root)
        print(f"FLOW_HOME={daemon.home.root}: slurm provider (local CLI mode), poll_interval {POLL_INTERVAL} s")
        flow_once(flow)  # warm: sinfo, the first scheduler pass
        wait_idle(env)
        floor, measured = latencies(env, flow, runs)
        bare_totals: list[float] = []
        flow_totals: list[float] = []
        for _ in range(rounds):  # in turns too
            bare_totals.append(bare_many(env, count))
            wait_idle(env)
            took, tasks = flow_many(flow, count)
            flow_totals.append(took)
            for task in tasks:
                task.cancel()
            wait_idle(env)
        bare_total = statistics.median(bare_totals)
        flow_total = statistics.median(flow_totals)
        _, tasks = flow_many(counted, count)
        before = calls(log, "squeue")
        t0 = time.time()
        time.sleep(window)
        t1 = time.time()
        steady = calls(log, "squeue", t0, t1)
        polls = window / POLL_INTERVAL
        ids_per_call = (
            statistics.mean(len(c.split("-j ", 1)[1].split(" ", 1)[0].split(",")) for c in steady) if steady else 0
        )
        sbatch_calls = len(calls(log, "sbatch"))
        for task in tasks:
            task.cancel()
        print()
        print(row("row", "median", "p90", "floor", "ratio"))
        ratio = measured.median / floor.median
        print(
            row("submit->RUNNING (1 task)", fmt(measured.median), fmt(measured.p90), fmt(floor.median), f"{ratio:.1f}x")
        )
        many = f"{count} tasks submit->all RUNNING"
        print(row(many, fmt(flow_total), "-", fmt(bare_total), f"{flow_total / bare_total:.1f}x"))
        per_poll = len(steady) / polls
        print(row(f"squeue calls per poll ({count} live)", f"{per_poll:.2f}", "-", "1.00", f"{per_poll:.1f}x"))
        print()
        print(
            f"steady window {window:g} s = {polls:g} polls: {len(steady)} squeue calls, {ids_per_call:.0f} job ids "
            f"each; {sbatch_calls} sbatch calls for {count} tasks; {len(before)} squeue calls before it"
        )
        return 0
    finally:
        if daemon.pid is not None:  # the tasks' jobs: cancelled through Flow, before it stops
            with contextlib.suppress(Exception):
                for name in providers:
                    bench = Flow(provider=name, flow_home=daemon.home.root, auto_start=False)
                    for task in bench.list_tasks(limit=10 * count):
                        if not task.is_terminal:
                            task.cancel()
        daemon.stop()
        if BARE_JOBS:
            subprocess.run(["scancel", *BARE_JOBS], env=env, check=False, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run([str(STACK), "release", lease], check=False, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
