"""Task dependencies: the delay from a dependency's end to its dependent's start (local, and on
Slurm against Slurm's own --dependency), and the time to resolve a 1,000-task DAG.

Run: .venv/bin/python bench/bench_dependencies.py [--quick]   (the Slurm rows need root: they
take a lease on tools/test-stack, starting it if needed; elsewhere they are left out, said so)

Every row is measured against a floor measured in the same run, on the same machine, interleaved
where both are short; one table (median, p90, floor, ratio). Nothing is asserted. The daemon is
private, in a fresh FLOW_HOME directly under /tmp, stopped with its home removed at the end.

The delay is measured by the tasks themselves: the dependency's last command writes the time
(`date +%s.%N`), the dependent's first command writes the time, and the delay is the difference,
so Flow and its floor are timed by the very same clock reads whatever notices the end.

Rows:
  local: end -> dependent start   B = run(..., depends_on=[A]) submitted while A runs (flowd
                                  holds B and launches it when A completes); floor: the same
                                  chain by hand in the SDK, A.wait() then run(B)
  slurm: end -> dependent start   on the slurm provider, B depends_on A: Slurm's own
                                  --dependency=afterok (flowd hands it over); floor: bare
                                  `sbatch --dependency=afterok:A` of the same two commands
  slurm after local (held)        A runs on the local provider, B on Slurm: flowd holds B and
                                  submits it when A completes; floor: the native Slurm row's
  core: check 1,000-task DAG      flow.domain.task.dependencies: find_cycle over a 1,000-task DAG
                                  (10 layers of 100, each task after 2 of the layer before) plus
                                  readiness of every task and the start order; floor: the
                                  standard library's graphlib.TopologicalSorter.static_order of
                                  the same graph
  flowd: 1,000-task DAG           that DAG of `true` tasks behind a gated root, submitted through
                                  flowd (each submit checks ids and cycles), then the gate opened:
                                  root end -> the last task COMPLETED; floor: the same DAG run by
                                  hand from the SDK (each task submitted once its parents have
                                  completed, Task.wait), root end -> the last task COMPLETED
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import graphlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flow.client import Flow
from flow.domain.task.dependencies import Dependency, Node, Observed, find_cycle, readiness, start_order
from flow.domain.task.states import TaskState
from flow.task import Task, TaskStatus

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Sample, fmt, running_daemon
else:
    from harness import BenchDaemon, Sample, fmt, running_daemon

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "tools" / "test-stack"
SLURM = "bench-slurm"
DEADLINE = 600.0
SPIN = 0.02
LAYER = 100
PARENTS = 2


def row(name: str, value: str, p90: str, floor: str, ratio: str) -> str:
    return f"{name:<34} {value:>10} {p90:>10} {floor:>10} {ratio:>7}"


def stamped(path: Path, before: str = "") -> str:
    """A shell command that runs `before` and then writes the time to `path`."""
    return f"{before}{'; ' if before else ''}date +%s.%N > {path}"


def starting(path: Path) -> str:
    return f"date +%s.%N > {path}; true"


def written(path: Path) -> bool:
    return path.exists() and path.read_text().strip() != ""


def delay(end: Path, start: Path) -> float:
    return float(start.read_text()) - float(end.read_text())


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(SPIN)


def finished(task: Task) -> Task:
    task.wait(timeout=DEADLINE)
    if task.last_status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"{task.task_id} ended {task.last_status}: {task.state_reason}")
    return task


# --- end -> dependent start ------------------------------------------------------------------------


def chain_delays(flow: Flow, scratch: Path, runs: int, dependent: Flow | None = None) -> tuple[Sample, Sample]:
    """(held by flowd, chained by hand), interleaved: A sleeps a little, so B is submitted while
    A runs. `dependent` is the client B is submitted with (another provider), default `flow`."""
    then = dependent or flow
    held: list[float] = []
    by_hand: list[float] = []
    for i in range(runs):
        end, start = scratch / f"held-a{i}", scratch / f"held-b{i}"
        first = flow.run(stamped(end, "sleep 0.3"), upload_code=False)
        finished(then.run(starting(start), depends_on=[first], upload_code=False))
        held.append(delay(end, start))
        end, start = scratch / f"hand-a{i}", scratch / f"hand-b{i}"
        finished(flow.run(stamped(end, "sleep 0.3"), upload_code=False))
        finished(then.run(starting(start), upload_code=False))
        by_hand.append(delay(end, start))
    return Sample("held", held), Sample("by hand", by_hand)


# --- the 1,000-task DAG ------------------------------------------------------------------------------


def dag(count: int, seed: int = 7) -> list[list[int]]:
    """Parents of each task: layers of LAYER tasks, each after PARENTS tasks of the layer before
    (the first layer after nothing)."""
    rng = random.Random(seed)
    parents: list[list[int]] = []
    for i in range(count):
        layer = i // LAYER
        if layer == 0:
            parents.append([])
            continue
        previous = range((layer - 1) * LAYER, min(layer * LAYER, count))
        parents.append(rng.sample(list(previous), min(PARENTS, len(previous))))
    return parents


def core_resolve(parents: list[list[int]]) -> None:
    ids = [f"t-{i:06d}" for i in range(len(parents))]
    nodes = [
        Node(ids[i], f"job-{i}", seq=i, depends_on=tuple(Dependency(ids[p]) for p in ps))
        for i, ps in enumerate(parents)
    ]
    assert find_cycle(nodes) is None
    done = {t: Observed(t, TaskState.COMPLETED, started=True) for t in ids}
    for node in nodes:
        readiness(node.depends_on, done, [], None, 0.0)
    start_order([(n.task_id, 0, n.seq) for n in nodes])


def core_floor(parents: list[list[int]]) -> None:
    graph = {f"t-{i:06d}": {f"t-{p:06d}" for p in ps} for i, ps in enumerate(parents)}
    list(graphlib.TopologicalSorter(graph).static_order())


def median_of(work: Callable[[], object], runs: int) -> Sample:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return Sample("", seconds)


def flowd_dag(flow: Flow, scratch: Path, parents: list[list[int]]) -> tuple[float, float]:
    """(submit every task, root end -> every task COMPLETED)."""
    gate, end = scratch / "gate", scratch / "root-end"
    root = flow.run(stamped(end, f"while [ ! -e {gate} ]; do sleep 0.01; done"), upload_code=False)
    tasks: list[Task] = []
    started = time.perf_counter()
    for ps in parents:
        after = [tasks[p] for p in ps] or [root]
        tasks.append(flow.run(["true"], depends_on=after, upload_code=False))
    submitted = time.perf_counter() - started
    gate.touch()
    for task in tasks:  # waited for as by hand (Task.wait): listing them all often would load flowd
        finished(task)
    last = max(t.refresh().completed_at.timestamp() for t in tasks)  # type: ignore[union-attr]
    return submitted, last - float(end.read_text())


def by_hand_dag(flow: Flow, scratch: Path, parents: list[list[int]]) -> float:
    """The same DAG run from the SDK by hand: after the root, each task is submitted once its
    parents have completed (Task.wait). Root end -> every task COMPLETED."""
    gate, end = scratch / "hand-gate", scratch / "hand-root-end"
    root = flow.run(stamped(end, f"while [ ! -e {gate} ]; do sleep 0.01; done"), upload_code=False)
    gate.touch()
    finished(root)
    tasks: list[Task] = []
    for ps in parents:
        for p in ps:
            finished(tasks[p])
        tasks.append(flow.run(["true"], upload_code=False))
    for task in tasks:
        finished(task)
    last = max(t.refresh().completed_at.timestamp() for t in tasks)  # type: ignore[union-attr]
    return last - float(end.read_text())


# --- Slurm ---------------------------------------------------------------------------------------------


def stack_env() -> dict[str, str]:
    done = subprocess.run([str(STACK), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


def sbatch(env: dict[str, str], command: str, *options: str) -> str:
    return subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", *options, "--wrap", command],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()


def slurm_delays(flow: Flow, env: dict[str, str], scratch: Path, runs: int) -> tuple[Sample, Sample]:
    """(Flow's native dependency, bare sbatch --dependency), interleaved."""
    native: list[float] = []
    bare: list[float] = []
    for i in range(runs):
        end, start = scratch / f"slurm-a{i}", scratch / f"slurm-b{i}"
        first = flow.run(stamped(end, "sleep 1"), upload_code=False)
        finished(flow.run(starting(start), depends_on=[first], upload_code=False))
        native.append(delay(end, start))
        end, start = scratch / f"bare-a{i}", scratch / f"bare-b{i}"
        job = sbatch(env, stamped(end, "sleep 1"))
        sbatch(env, starting(start), f"--dependency=afterok:{job}")
        wait_for(functools.partial(written, start), "the bare dependent to start")
        bare.append(delay(end, start))
    return Sample("flow", native), Sample("bare", bare)


def slurm_rows(runs: int) -> list[str]:
    if os.geteuid() != 0:
        return ["slurm rows left out: they need the test Slurm (tools/test-stack), which needs root"]
    lease = str(os.getpid())  # shares the stack with test sessions; the last lease stops it
    subprocess.run([str(STACK), "start", "--lease", lease], check=True, timeout=900, capture_output=True)
    env = {**os.environ, **stack_env()}
    scratch = Path(tempfile.mkdtemp(prefix="flow-bench-deps-slurm-"))
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]  # the daemon inherits it
    daemon = BenchDaemon()
    daemon.home.config.write_text(
        f"providers:\n  {SLURM}:\n    kind: slurm\n    mode: local\n"
        f"    slurm_conf: {env['SLURM_CONF']}\n    poll_interval: 0.25\n    work_dir: {scratch}/work\n"
    )
    daemon.home.config.chmod(0o600)
    try:
        daemon.start()
        slurm = Flow(provider=SLURM, flow_home=daemon.home.root)
        local = Flow(provider="local", flow_home=daemon.home.root)
        print(f"FLOW_HOME={daemon.home.root}: slurm provider (local CLI mode), poll_interval 0.25 s")
        finished(slurm.run("true", upload_code=False))  # warm: sinfo, the first scheduler pass
        native, bare = slurm_delays(slurm, env, scratch, runs)
        held, _ = chain_delays(local, scratch, runs, dependent=slurm)
        return [
            row(
                "slurm: end -> dependent start",
                fmt(native.median),
                fmt(native.p90),
                fmt(bare.median),
                f"{native.median / bare.median:.1f}x",
            ),
            row(
                "slurm after local (held)",
                fmt(held.median),
                fmt(held.p90),
                fmt(bare.median),
                f"{held.median / bare.median:.1f}x",
            ),
        ]
    finally:
        daemon.stop()
        print(f"FLOW_HOME={daemon.home.root}: stopped, home removed")
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run([str(STACK), "release", lease], check=False, timeout=120, capture_output=True)


# --- main ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and a 200-task DAG (a smoke run)")
    parser.add_argument("--no-slurm", action="store_true", help="leave the Slurm rows out")
    args = parser.parse_args()
    runs, count, core_runs = (3, 200, 5) if args.quick else (15, 1_000, 21)
    parents = dag(1_000)
    core = median_of(lambda: core_resolve(parents), core_runs)
    floor = median_of(lambda: core_floor(parents), core_runs)
    lines = [
        row(
            "core: check 1,000-task DAG",
            fmt(core.median),
            fmt(core.p90),
            fmt(floor.median),
            f"{core.median / floor.median:.1f}x",
        )
    ]
    scratch = Path(tempfile.mkdtemp(prefix="flow-bench-deps-"))
    try:
        with running_daemon() as daemon:
            flow = Flow(provider="local", flow_home=daemon.home.root)
            print(f"FLOW_HOME={daemon.home.root}: local provider")
            finished(flow.run(["true"], upload_code=False))  # warm
            held, by_hand = chain_delays(flow, scratch, runs)
            lines.append(
                row(
                    "local: end -> dependent start",
                    fmt(held.median),
                    fmt(held.p90),
                    fmt(by_hand.median),
                    f"{held.median / by_hand.median:.1f}x",
                )
            )
            shape = dag(count)
            submitted, resolved = flowd_dag(flow, scratch, shape)
            by_hand_total = by_hand_dag(flow, scratch, shape)
            name = f"flowd: {count:,}-task DAG"
            lines.append(row(name, fmt(resolved), "-", fmt(by_hand_total), f"{resolved / by_hand_total:.1f}x"))
            edges = sum(len(p) or 1 for p in shape)  # the first layer waits for the root
            notes = [
                f"{name}: {edges:,} dependencies, {count // LAYER} layers of {LAYER} behind one root; "
                f"submitted in {fmt(submitted)} "
                f"({fmt(submitted / count)} a task, each checked for unknown ids and cycles); "
                f"root end -> last COMPLETED {fmt(resolved)}",
            ]
        print(f"FLOW_HOME={daemon.home.root}: stopped, home removed")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.no_slurm:
        lines.append("slurm rows left out (--no-slurm)")
    else:
        lines += slurm_rows(runs)
    print()
    print(row("row", "median", "p90", "floor", "ratio"))
    for line in lines:
        print(line)
    print()
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
