"""Where users wait (issue 22): each goal as one row against a floor measured in the same run.

Run: .venv/bin/python bench/bench_waits.py [--quick] [--only NAME ...]   (Flow installed, as `make bench` does)

Every daemon is private (a fresh FLOW_HOME under /tmp, bench/harness.py) and is stopped with its
home removed at the end; so are the generated project and tree. One table: median, p90, floor,
ratio, and the goal with its verdict. Goals are reported, never asserted. The machine's load
average is printed before and after (the rows are only comparable at a similar load).

Rows (name: what is timed; floor):
  run      sdk run(true)+wait: Flow.run(["true"]) then task.wait(), client warm;
           floor subprocess.run(["true"]). Goal: within 2x.
  exec     task.exec("true") into a running task; floor subprocess.run(["true"]). Goal: within 3x.
  many     1,000 `true` tasks submitted from 16 threads (one shared client; the batch submit,
           Flow.run_many, when the SDK has it), until every one is COMPLETED, as seconds per
           task; floor: 1,000 subprocess.run(["true"]) from 16 threads. Goal: 1,000 tasks/s.
  warm     .remote() of a no-op FlowApp function declared with keep_warm=1 (where the SDK
           has it; otherwise the default path), client warm; floor: one request and answer
           through pipes to a warm Python worker (the least a warm call can cost). Goal: 3 ms.
  cold     the same function without keep_warm (the default: one process per call);
           floor: `python -c pass`. Context.
  upload   first upload of the tree into a fresh daemon (no blobs, no hash cache); floor:
           `tar -cf - tree | cat`. Goal: within 2x.
  again    upload of the unchanged tree again; floor: `git status` of the same tree (a git
           repository of it, committed). Goal: 100 ms.
  copy     materialise the snapshot: flow.run("true", code_root=tree) submit -> COMPLETED
           minus the same without code, paired run by run; floor `cp -r tree`. Goal: within 1x.

The tree: 100 directories of 100 files of 20 KB random bytes (10,000 files, 200 MB); --quick
uses 10 directories and fewer repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flow.app import FlowApp
from flow.client import Flow
from flow.task import Task, TaskStatus

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Row, Sample, fmt, git_repository, interleaved, running_daemon
else:
    from harness import BenchDaemon, Row, Sample, fmt, git_repository, interleaved, running_daemon

FILE_BYTES = 20_000
FILES_PER_DIR = 100
MANY = 1_000
THREADS = 16
TRUE_FLOOR = 'subprocess.run(["true"])'
ROWS = ("run", "exec", "many", "warm", "cold", "upload", "again", "copy")

APP_SOURCE = """\
from pathlib import Path

from flow import FlowApp

app = FlowApp()
HERE = str(Path(__file__).resolve().parent)


@app.function(code_root=HERE, **WARM)
def noop(x):
    return x


@app.function(code_root=HERE)
def noop_cold(x):
    return x
"""
WORKER = (
    "import json, sys\n"
    "def noop(x):\n    return x\n"
    "for line in sys.stdin:\n"
    "    sys.stdout.write(json.dumps({'value': noop(*json.loads(line)['args'])}) + '\\n')\n"
    "    sys.stdout.flush()\n"
)


@dataclass(frozen=True)
class Goal:
    text: str
    met: Callable[[Sample, Sample], bool]


GOALS = {
    "run": Goal("<= 2x floor", lambda s, f: s.median <= 2 * f.median),
    "exec": Goal("<= 3x floor", lambda s, f: s.median <= 3 * f.median),
    "many": Goal(">= 1,000 tasks/s", lambda s, f: s.median <= 1e-3),
    "warm": Goal("<= 3 ms", lambda s, f: s.median <= 3e-3),
    "upload": Goal("<= 2x floor", lambda s, f: s.median <= 2 * f.median),
    "again": Goal("<= 100 ms", lambda s, f: s.median <= 0.100),
    "copy": Goal("<= 1x floor", lambda s, f: s.median <= f.median),
}


@dataclass(frozen=True)
class Reps:
    run: int
    exec: int
    many: int
    calls: int
    first_uploads: int
    uploads: int
    materialize: int
    dirs: int

    @staticmethod
    def of(quick: bool) -> Reps:
        if quick:
            return Reps(run=30, exec=20, many=1, calls=20, first_uploads=1, uploads=3, materialize=2, dirs=10)
        return Reps(run=200, exec=100, many=3, calls=100, first_uploads=3, uploads=10, materialize=5, dirs=100)


@dataclass
class Report:
    rows: dict[str, Row] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)  # daemon homes and scratch, gone at the end


@contextlib.contextmanager
def daemon_for(report: Report) -> Iterator[BenchDaemon]:
    """A private flowd (bench/harness.py) whose home is listed as removed once it is stopped."""
    with running_daemon() as daemon:
        report.removed.append(daemon.home.root)
        yield daemon


def expect_completed(task: Task) -> None:
    if task.last_status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"task {task.task_id} ended {task.last_status}: {task.state_reason}")


def run_true(flow: Flow, **options: Any) -> Task:
    task = flow.run(["true"], **options)
    task.wait()
    expect_completed(task)
    return task


def spawn_true() -> None:
    subprocess.run(["true"], check=True)


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# --- submit, exec, throughput ------------------------------------------------------------------


def measure_run(flow: Flow, runs: int) -> Row:
    for _ in range(5):
        run_true(flow, upload_code=False)
        spawn_true()
    samples = interleaved({"floor": spawn_true, "run": lambda: run_true(flow, upload_code=False)}, runs)
    return Row(
        Sample("sdk run(true)+wait", samples["run"].seconds),
        Sample('subprocess.run(["true"])', samples["floor"].seconds),
    )


def measure_exec(flow: Flow, runs: int) -> Row:
    task = flow.run(["sleep", "600"], upload_code=False)
    try:
        deadline = time.monotonic() + 60
        while task.status is not TaskStatus.RUNNING:
            if time.monotonic() > deadline:
                raise RuntimeError(f"`sleep 600` did not start: {task.last_status}")
            time.sleep(0.01)

        def exec_true() -> None:
            if task.exec("true").exit_code != 0:
                raise RuntimeError("exec true failed")

        for _ in range(5):
            exec_true()
            spawn_true()
        samples = interleaved({"floor": spawn_true, "exec": exec_true}, runs)
    finally:
        task.cancel()
    return Row(
        Sample('task.exec("true")', samples["exec"].seconds),
        Sample('subprocess.run(["true"])', samples["floor"].seconds),
    )


def in_threads(work: Callable[[int], None]) -> float:
    """Seconds for THREADS threads to each run work(thread number)."""
    errors: list[BaseException] = []

    def body(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    if errors:
        raise errors[0]
    return took


def share(n: int) -> int:
    return MANY // THREADS + (1 if n < MANY % THREADS else 0)


def many_tasks(flow: Flow) -> float:
    batch = getattr(flow, "run_many", None)

    def submit_and_wait(n: int) -> None:
        count = share(n)
        if batch is not None:
            tasks = batch([["true"]] * count, upload_code=False)
        else:
            tasks = [flow.run(["true"], upload_code=False) for _ in range(count)]
        for task in tasks:
            task.wait()
            expect_completed(task)

    return in_threads(submit_and_wait) / MANY


def many_spawns() -> float:
    def spawn(n: int) -> None:
        for _ in range(share(n)):
            spawn_true()

    return in_threads(spawn) / MANY


def measure_many(flow: Flow, rounds: int, report: Report) -> Row:
    many_tasks(flow)  # warm: threads' channels, the daemon's pools
    flows: list[float] = []
    floors: list[float] = []
    for _ in range(rounds):
        floors.append(many_spawns())
        flows.append(many_tasks(flow))
    how = "Flow.run_many" if hasattr(flow, "run_many") else "Flow.run"
    report.notes.append(
        f"many: {MANY:,} tasks through {how} from {THREADS} threads: {1 / Sample('', flows).median:,.0f} tasks/s "
        f"(median), {1 / min(flows):,.0f} at best; floor {1 / Sample('', floors).median:,.0f} processes/s"
    )
    return Row(
        Sample(f"{MANY:,} true tasks, {THREADS} thr (/task)", flows),
        Sample(f"{MANY:,} subprocess.run, {THREADS} thr", floors),
    )


# --- functions -----------------------------------------------------------------------------------


def warm_supported() -> bool:
    return "keep_warm" in inspect.signature(FlowApp.function).parameters


def write_project(project: Path) -> ModuleType:
    warm = "{'keep_warm': 1}" if warm_supported() else "{}"
    (project / "noop_app.py").write_text(f"WARM = {warm}\n" + APP_SOURCE)
    spec = importlib.util.spec_from_file_location("noop_app", project / "noop_app.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot import the generated noop_app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["noop_app"] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def pipe_worker() -> Iterator[Callable[[], None]]:
    """A warm Python process answering one JSON line per request: the floor of a warm call."""
    with subprocess.Popen(
        [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as worker:
        assert worker.stdin is not None and worker.stdout is not None
        stdin, stdout = worker.stdin, worker.stdout

        def call() -> None:
            stdin.write('{"args": [7]}\n')
            if stdout.readline() != '{"value": 7}\n':
                raise RuntimeError("the pipe worker answered wrong")

        try:
            yield call
        finally:
            stdin.close()


def measure_functions(home: Path, project: Path, runs: int, report: Report) -> list[tuple[str, Row]]:
    saved = {name: os.environ.pop(name, None) for name in ("FLOW_HOME", "FLOW_PROVIDER")}
    os.environ["FLOW_HOME"] = str(home)  # FlowApp's client is Flow(): it finds this daemon
    try:
        app = write_project(project)
        try:

            def warm() -> None:
                if app.noop.remote(7) != 7:
                    raise RuntimeError("noop.remote(7) != 7")

            def cold() -> None:
                if app.noop_cold.remote(7) != 7:
                    raise RuntimeError("noop_cold.remote(7) != 7")

            def python_pass() -> None:
                subprocess.run([sys.executable, "-c", "pass"], check=True)

            with pipe_worker() as pipe_call:
                for _ in range(5):  # imports, .pyc caches, the hash cache, warm workers
                    warm()
                    cold()
                    python_pass()
                    pipe_call()
                time.sleep(0.5)  # let the first calls' workers settle (they start in the background)
                samples = interleaved({"pipe": pipe_call, "warm": warm, "pass": python_pass, "cold": cold}, runs)
        finally:
            app.app.flow.close()
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    report.notes.append(f"warm: keep_warm={'1' if warm_supported() else 'not supported (default path)'}")
    return [
        (
            "warm",
            Row(
                Sample(".remote() noop, warm worker", samples["warm"].seconds),
                Sample("pipe call, warm python", samples["pipe"].seconds),
            ),
        ),
        (
            "cold",
            Row(
                Sample(".remote() noop, default", samples["cold"].seconds),
                Sample("python -c pass", samples["pass"].seconds),
            ),
        ),
    ]


# --- code snapshots ------------------------------------------------------------------------------


def make_tree(root: Path, dirs: int) -> tuple[int, int]:
    for d in range(dirs):
        directory = root / f"d{d:03d}"
        directory.mkdir(parents=True)
        for f in range(FILES_PER_DIR):
            (directory / f"f{f:03d}.bin").write_bytes(os.urandom(FILE_BYTES))
    return dirs * FILES_PER_DIR, dirs * FILES_PER_DIR * FILE_BYTES


def tar_cat(root: Path) -> None:
    """`tar -cf - -C root . | cat >/dev/null`: tar reads every byte (unlike `-f /dev/null`)."""
    done = subprocess.run(
        ["sh", "-c", 'tar -cf - -C "$1" . | cat >/dev/null', "sh", str(root)], check=False, capture_output=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"tar | cat failed: {done.stderr.decode(errors='replace')}")


def drop_copy(home: Path, task: Task) -> None:
    """Removes a finished task's copy of the snapshot and flushes dirty pages, so that the next
    write-heavy measurement does not pay for this one's writeback."""
    shutil.rmtree(home / "tasks" / task.task_id / "code", ignore_errors=True)
    os.sync()


def measure_snapshots(tree: Path, scratch: Path, reps: Reps, only: set[str], report: Report) -> list[tuple[str, Row]]:
    rows: list[tuple[str, Row]] = []
    if "upload" in only:
        first: list[float] = []
        tar: list[float] = []
        for _ in range(reps.first_uploads):
            os.sync()
            tar.append(timed(lambda: tar_cat(tree)))
            os.sync()
            with daemon_for(report) as daemon, Flow(flow_home=daemon.home.root) as flow:
                started = time.perf_counter()
                upload = flow.upload_code(tree)
                first.append(time.perf_counter() - started)
            report.notes.append(f"upload: first upload sent {upload.sent_bytes:,} bytes in {upload.sent_files:,} blobs")
        rows.append(("upload", Row(Sample("upload first", first), Sample("tar -c tree | cat", tar))))
    if not only & {"again", "copy"}:
        return rows
    with daemon_for(report) as daemon:
        flow = Flow(flow_home=daemon.home.root)
        try:
            flow.upload_code(tree)
            if "again" in only:
                status = git_repository(tree, scratch / "git")
                again: list[float] = []
                git: list[float] = []
                sent = 0
                flow.upload_code(tree)
                status()
                for _ in range(reps.uploads):
                    started = time.perf_counter()
                    upload = flow.upload_code(tree)
                    again.append(time.perf_counter() - started)
                    sent += upload.sent_bytes
                    git.append(timed(status))
                report.notes.append(f"again: unchanged uploads sent {sent:,} bytes in all")
                rows.append(("again", Row(Sample("upload unchanged", again), Sample("git status", git))))
            if "copy" in only:
                plain: list[float] = []
                materialize: list[float] = []
                copy: list[float] = []
                destination = scratch / "copy"
                drop_copy(daemon.home.root, run_true(flow, code_root=str(tree)))  # warm both paths once
                run_true(flow, upload_code=False)
                for _ in range(reps.materialize):
                    started = time.perf_counter()
                    task = run_true(flow, code_root=str(tree))
                    with_code = time.perf_counter() - started
                    without = timed(lambda: run_true(flow, upload_code=False))
                    plain.append(without)
                    materialize.append(max(with_code - without, 1e-6))
                    drop_copy(daemon.home.root, task)
                    copy.append(timed(lambda: subprocess.run(["cp", "-r", str(tree), str(destination)], check=True)))
                    shutil.rmtree(destination)
                    os.sync()
                rows.append(("copy", Row(Sample("materialize snapshot", materialize), Sample("cp -r tree", copy))))
        finally:
            flow.close()
    return rows


# --- all of it -----------------------------------------------------------------------------------


def measure(quick: bool, only: set[str]) -> Report:
    reps = Reps.of(quick)
    report = Report()
    found: list[tuple[str, Row]] = []
    work = Path(tempfile.mkdtemp(prefix="flow-bw-", dir="/tmp"))
    try:
        if only & {"run", "exec", "many", "warm", "cold"}:
            with daemon_for(report) as daemon:
                flow = Flow(flow_home=daemon.home.root)
                try:
                    if "run" in only:
                        found.append(("run", measure_run(flow, reps.run)))
                    if "exec" in only:
                        found.append(("exec", measure_exec(flow, reps.exec)))
                    if "many" in only:
                        found.append(("many", measure_many(flow, reps.many, report)))
                finally:
                    flow.close()
                if only & {"warm", "cold"}:
                    project = work / "project"
                    project.mkdir()
                    found += [
                        (k, r) for k, r in measure_functions(daemon.home.root, project, reps.calls, report) if k in only
                    ]
        if only & {"upload", "again", "copy"}:
            tree = work / "tree"
            files, size = make_tree(tree, reps.dirs)
            report.notes.append(
                f"tree: {reps.dirs} dirs x {FILES_PER_DIR} files x {FILE_BYTES // 1000} KB = "
                f"{files:,} files, {size / 1e6:,.0f} MB"
            )
            found += measure_snapshots(tree, work, reps, only, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        report.removed.append(work)
    report.rows = {key: row for key, row in sorted(found, key=lambda kv: ROWS.index(kv[0]))}
    return report


def print_report(report: Report, quick: bool, load_before: tuple[float, float, float]) -> None:
    load_after = os.getloadavg()
    print(
        f"flow: where users wait ({'quick' if quick else 'full'}; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after)"
    )
    print(f"{'benchmark':<34} {'n':>4} {'median':>9} {'p90':>9}   {'floor':<30} {'median':>9} {'ratio':>7}   goal")
    for key, row in report.rows.items():
        s, f = row.sample, row.floor
        assert f is not None
        goal = GOALS.get(key)
        verdict = f"{goal.text} ({'ok' if goal.met(s, f) else 'over'})" if goal else "(context)"
        print(
            f"{s.name:<34} {len(s.seconds):>4} {fmt(s.median):>9} {fmt(s.p90):>9}   "
            f"{f.name:<30} {fmt(f.median):>9} {s.median / f.median:>6.1f}x   {verdict}"
        )
    for note in report.notes:
        print(note)
    for path in report.removed:
        print(f"removed: {path}")
    print("(medians of repeated runs; floors measured in this run, interleaved; goals are reported, not asserted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller tree (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=ROWS, help="only these rows")
    args = parser.parse_args()
    load = os.getloadavg()
    print_report(measure(args.quick, set(args.only or ROWS)), args.quick, load)


if __name__ == "__main__":
    main()
