"""Times Python functions as tasks and code snapshots against a real flowd.

Run: .venv/bin/python bench/bench_functions.py [--quick]   (Flow installed, as `make bench` does)

Each daemon is private, in a fresh FLOW_HOME directly under /tmp (bench_spine's BenchDaemon), and
is stopped with its home removed at the end; so are the generated project and tree. Every row is
measured against a floor measured in the same run, on the same machine; one table is printed
(median, p90, floor, ratio), then what each upload sent and the budget. Nothing is asserted.

Rows:
  .remote() noop           FlowApp `def noop(x): return x` (its module imports flow), call to value,
                           client warm; floor: `python -c pass`, the interpreter start a cold call pays
                           (flowd runs function tasks on a warm interpreter: warm_python.py)
  cold .remote() noop      the same call on a flowd with FLOW_WARM_PYTHON=0 (every call starts
                           `python`), for comparison; same floor
  warm .remote() noop      the same function declared keep_warm=1: the call runs in a warm worker that
                           imported the module once (warm_workers.py); floor: one unary RPC to the same
                           flowd (GetDaemonInfo), the least any call to flowd pays (a .remote() makes
                           four: FindMissingBlobs, CreateTask, WaitTask, GetTaskResult)
  invoke() noop            the same function in a file that imports nothing; same floor
  upload_code first        flow.upload_code(tree) into a fresh daemon (no blobs, cold hash cache):
                           hash, FindMissingBlobs, send everything; floor: `tar -cf - -C tree .`
                           read to EOF through a pipe (GNU tar skips reading when it writes to
                           /dev/null itself)
  upload_code unchanged    the same tree again: its tree index checked with one stat per file and
                           directory, one question to flowd, nothing sent (flow/code_index.py);
                           floor: `git status --porcelain` on the same tree (its repository kept
                           outside it), which does the same for git; the budget is 100 ms
  run(true), no upload     context for the next row: submit -> COMPLETED without code
  materialize snapshot     flow.run("true", code_root=tree) submit -> COMPLETED minus the row above,
                           paired run by run: the unchanged upload, flowd checking the manifest and
                           copying the snapshot into the task; floor: `cp -r tree` (a plain copy)

The tree is 100 directories of 100 files of 20 KB random bytes (10,000 files, 200 MB); --quick
uses 10 directories (1,000 files, 20 MB) and fewer repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from flow.app import FlowApp
from flow.client import Flow
from flow.code_upload import Upload
from flow.invoke import invoke
from flow.task import Task, TaskStatus
from flow.wire.daemon_codec import daemon_info_call

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Row, Sample, fmt, git_repository, interleaved, running_daemon
else:
    from harness import BenchDaemon, Row, Sample, fmt, git_repository, interleaved, running_daemon

T = TypeVar("T")
REMOTE = ".remote() noop"
REMOTE_COLD = "cold .remote() noop"
WARM = "warm .remote() noop"
UNARY_FLOOR = "unary RPC to flowd"
INVOKE = "invoke() noop"
PASS_FLOOR = "python -c pass"
FIRST = "upload_code first"
AGAIN = "upload_code unchanged"
TAR_FLOOR = "tar -cf - tree | pipe"
RUN_PLAIN = "run(true), no upload"
MATERIALIZE = "materialize snapshot"
CP_FLOOR = "cp -r tree"
GIT_FLOOR = "git status --porcelain"
UNCHANGED_BUDGET_S = 0.100
REMOTE_BUDGET_S = 0.060
WARM_BUDGET_S = 0.003  # issue 22: `.remote()` of a no-op within 3 ms on a warm worker
FILE_BYTES = 20_000
FILES_PER_DIR = 100

APP_SOURCE = """\
from pathlib import Path

from flow import FlowApp

app = FlowApp()


@app.function(code_root=str(Path(__file__).resolve().parent))
def noop(x):
    return x


@app.function(code_root=str(Path(__file__).resolve().parent), keep_warm=1)
def warm_noop(x):
    return x
"""
PLAIN_SOURCE = "def noop(x):\n    return x\n"


@dataclass(frozen=True)
class Reps:
    calls: int
    first_uploads: int
    uploads: int
    materialize: int
    dirs: int

    @staticmethod
    def of(quick: bool) -> Reps:
        if quick:
            return Reps(calls=10, first_uploads=1, uploads=3, materialize=2, dirs=10)
        return Reps(calls=30, first_uploads=3, uploads=10, materialize=5, dirs=100)


@dataclass
class Report:
    rows: list[Row]
    sent: list[str]  # what the uploads sent
    remote: Sample
    warm: Sample
    tree: str
    homes: list[str]
    work: str = ""  # the project and the tree, gone by the time the report prints


# --- functions as tasks --------------------------------------------------------------------------


def write_project(project: Path) -> ModuleType:
    """A project with the FlowApp module and the plain file; returns the imported FlowApp module."""
    (project / "noop_app.py").write_text(APP_SOURCE)
    (project / "noop_plain.py").write_text(PLAIN_SOURCE)
    spec = importlib.util.spec_from_file_location("noop_app", project / "noop_app.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot import the generated noop_app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["noop_app"] = module
    spec.loader.exec_module(module)
    return module


def expect(value: object, wanted: object, what: str) -> None:
    if value != wanted:
        raise RuntimeError(f"{what} returned {value!r}, expected {wanted!r}")


def measure_calls(flow: Flow, daemon: BenchDaemon, cold: Flow, project: Path, runs: int) -> dict[str, Sample]:
    saved = {name: os.environ.pop(name, None) for name in ("FLOW_HOME", "FLOW_PROVIDER")}
    os.environ["FLOW_HOME"] = str(daemon.home.root)  # FlowApp's client is Flow(): it finds this daemon
    try:
        return measure_calls_here(flow, cold, project, runs)
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def measure_calls_here(flow: Flow, cold: Flow, project: Path, runs: int) -> dict[str, Sample]:
    app = write_project(project)
    plain = project / "noop_plain.py"
    # The same function of the same module, its calls sent to the flowd without warm interpreters.
    cold_noop = FlowApp(flow=cold).function(code_root=str(project))(app.noop.__flow_wrapped__)

    def remote() -> None:
        expect(app.noop.remote(7), 7, REMOTE)

    def warm() -> None:
        expect(app.warm_noop.remote(7), 7, WARM)

    def unary() -> None:
        flow.connection.unary(daemon_info_call(), timeout=10)

    def remote_cold() -> None:
        expect(cold_noop.remote(7), 7, REMOTE_COLD)

    def invoked() -> None:
        expect(invoke(plain, "noop", args=[7], flow=flow, code_root=str(project)), 7, INVOKE)

    def floor() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    for _ in range(3):  # warm: imports, .pyc caches, the hash cache, the daemon's blobs
        remote()
        remote_cold()
        invoked()
        floor()
        warm()
        unary()
    try:
        works = {PASS_FLOOR: floor, REMOTE: remote, REMOTE_COLD: remote_cold, INVOKE: invoked}
        return interleaved({**works, UNARY_FLOOR: unary, WARM: warm}, runs)
    finally:
        app.app.flow.close()


# --- code snapshots ------------------------------------------------------------------------------


def make_tree(root: Path, dirs: int) -> tuple[int, int]:
    """`dirs` directories of FILES_PER_DIR files of FILE_BYTES random bytes; (files, bytes)."""
    for d in range(dirs):
        directory = root / f"d{d:03d}"
        directory.mkdir(parents=True)
        for f in range(FILES_PER_DIR):
            (directory / f"f{f:03d}.bin").write_bytes(os.urandom(FILE_BYTES))
    return dirs * FILES_PER_DIR, dirs * FILES_PER_DIR * FILE_BYTES


def tar_through_pipe(root: Path) -> None:
    """Archives the tree into a pipe read to EOF: tar reads every byte (unlike `-f /dev/null`)."""
    with subprocess.Popen(["tar", "-cf", "-", "-C", str(root), "."], stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        while tar.stdout.read(1 << 20):
            pass
    if tar.returncode != 0:
        raise RuntimeError(f"tar exited {tar.returncode}")


def run_true(flow: Flow, **options: Any) -> Task:
    task = flow.run("true", **options)
    task.wait()
    if task.last_status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"`true` ended {task.last_status}: {task.state_reason}")
    return task


def drop_copy(daemon: BenchDaemon, task: Task) -> None:
    """Removes a finished task's copy of the snapshot (200 MB each), then flushes the page cache's
    dirty pages, so that the next write-heavy measurement does not pay for this one's writeback."""
    shutil.rmtree(daemon.home.tasks / task.task_id / "code", ignore_errors=True)
    os.sync()


def timed(work: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def upload_into_fresh_daemon(tree: Path, report: Report) -> tuple[float, Upload]:
    """flow.upload_code(tree) into a new daemon: no blobs, an empty hash cache."""
    with running_daemon() as daemon:
        report.homes.append(str(daemon.home.root))
        with Flow(flow_home=daemon.home.root) as flow:
            return timed(lambda: flow.upload_code(tree))


def measure_snapshots(tree: Path, scratch: Path, reps: Reps, report: Report) -> list[Row]:
    first: list[float] = []
    again: list[float] = []
    tar: list[float] = []
    git: list[float] = []
    git_status = git_repository(tree, scratch / "git")
    git_status()  # once untimed: git refreshes its index the first time
    for _ in range(reps.first_uploads):
        tar.append(timed(lambda: tar_through_pipe(tree))[0])
        os.sync()  # the previous upload's writeback is not this one's
        seconds, upload = upload_into_fresh_daemon(tree, report)
        first.append(seconds)
        report.sent.append(f"{FIRST}: {upload.sent_bytes:,} bytes in {upload.sent_files:,} blobs")

    # The rest on one more fresh daemon, after one untimed first upload.
    with running_daemon() as daemon:
        report.homes.append(str(daemon.home.root))
        flow = Flow(flow_home=daemon.home.root)
        try:
            flow.upload_code(tree)
            sent = [0, 0]
            for _ in range(reps.uploads):
                seconds, upload = timed(lambda: flow.upload_code(tree))
                again.append(seconds)
                sent = [sent[0] + upload.sent_bytes, sent[1] + upload.sent_files]
                tar.append(timed(lambda: tar_through_pipe(tree))[0])
                git.append(timed(git_status)[0])
            report.sent.append(f"{AGAIN}: {sent[0]:,} bytes in {sent[1]:,} blobs, all {reps.uploads} runs together")

            plain: list[float] = []
            materialize: list[float] = []
            copy: list[float] = []
            destination = scratch / "copy"
            drop_copy(daemon, run_true(flow, code_root=str(tree)))  # warm both paths once
            run_true(flow, upload_code=False)
            for _ in range(reps.materialize):
                with_code, task = timed(lambda: run_true(flow, code_root=str(tree)))
                without, _ = timed(lambda: run_true(flow, upload_code=False))
                plain.append(without)
                materialize.append(with_code - without)
                drop_copy(daemon, task)
                copy.append(timed(lambda: subprocess.run(["cp", "-r", str(tree), str(destination)], check=True))[0])
                shutil.rmtree(destination)
                os.sync()
        finally:
            flow.close()
    tar_floor = Sample(TAR_FLOOR, tar)
    return [
        Row(Sample(FIRST, first), tar_floor),
        Row(Sample(AGAIN, again), Sample(GIT_FLOOR, git)),
        Row(Sample(RUN_PLAIN, plain), None),
        Row(Sample(MATERIALIZE, materialize), Sample(CP_FLOOR, copy)),
    ]


@contextlib.contextmanager
def cold_daemon() -> Iterator[BenchDaemon]:
    """A private flowd that starts every function task cold (FLOW_WARM_PYTHON=0)."""
    daemon = BenchDaemon()
    saved = os.environ.get("FLOW_WARM_PYTHON")
    os.environ["FLOW_WARM_PYTHON"] = "0"  # BenchDaemon hands its own environment to flowd
    try:
        daemon.start()
    finally:
        os.environ.pop("FLOW_WARM_PYTHON")
        if saved is not None:
            os.environ["FLOW_WARM_PYTHON"] = saved
    try:
        yield daemon
    finally:
        daemon.stop()


def measure(quick: bool) -> Report:
    reps = Reps.of(quick)
    work = Path(tempfile.mkdtemp(prefix="flow-bf-", dir="/tmp"))  # the project and the tree
    nothing = Sample(REMOTE, [0.0])
    report = Report(rows=[], sent=[], remote=nothing, warm=nothing, tree="", homes=[], work=str(work))
    try:
        project = work / "project"
        project.mkdir()
        with running_daemon() as daemon, cold_daemon() as no_warm:
            report.homes += [str(daemon.home.root), str(no_warm.home.root)]
            flow = Flow(flow_home=daemon.home.root)
            cold = Flow(flow_home=no_warm.home.root)
            try:
                calls = measure_calls(flow, daemon, cold, project, reps.calls)
            finally:
                flow.close()
                cold.close()
        floor = calls[PASS_FLOOR]
        report.remote = calls[REMOTE]
        report.warm = calls[WARM]
        report.rows += [Row(calls[REMOTE], floor), Row(calls[REMOTE_COLD], floor), Row(calls[INVOKE], floor)]
        report.rows.append(Row(calls[WARM], calls[UNARY_FLOOR]))

        tree = work / "tree"
        files, size = make_tree(tree, reps.dirs)
        shape = f"{reps.dirs} dirs x {FILES_PER_DIR} files x {FILE_BYTES // 1000} KB"
        report.tree = f"{shape} = {files:,} files, {size / 1e6:,.0f} MB"
        report.rows += measure_snapshots(tree, work, reps, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


# --- the table ----------------------------------------------------------------------------------


def print_report(report: Report, quick: bool) -> None:
    print(
        f"flow functions benchmark ({'quick' if quick else 'full'}; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus)"
    )
    print(f"tree: {report.tree}")
    print(f"{'benchmark':<26} {'n':>4} {'median':>10} {'p90':>10}   {'floor':<24} {'median':>10} {'ratio':>8}")
    for row in report.rows:
        s = row.sample
        if row.floor is None:
            floor = f"{'-':<24} {'-':>10} {'-':>8}"
        else:
            floor = f"{row.floor.name:<24} {fmt(row.floor.median):>10} {s.median / row.floor.median:>7.1f}x"
        print(f"{s.name:<26} {len(s.seconds):>4} {fmt(s.median):>10} {fmt(s.p90):>10}   {floor}")
    for sent in report.sent:
        print(f"sent by {sent}")
    budgets = [(REMOTE_BUDGET_S, report.remote), (WARM_BUDGET_S, report.warm)]
    budgets += [(UNCHANGED_BUDGET_S, row.sample) for row in report.rows if row.sample.name == AGAIN]
    for budget, sample in budgets:
        verdict = "ok" if sample.median <= budget else "over"
        print(f"budget {budget * 1e3:g} ms ({sample.name}, median): {fmt(sample.median)} ({verdict})")
    print("(medians of repeated runs; floors measured in this run; budgets are reported, not asserted)")
    for home in report.homes:
        print(f"flowd for FLOW_HOME={home}: stopped, home removed")
    print(f"project and tree in {report.work}: removed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller tree (a smoke run)")
    args = parser.parse_args()
    print_report(measure(args.quick), args.quick)


if __name__ == "__main__":
    main()
