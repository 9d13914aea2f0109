"""flowd under faults and under load, against real daemons: a crash soak and a load run.

Run: .venv/bin/python bench/bench_reliability.py [--quick | --full] [--seed N]

crash soak   local tasks with known output and exit codes (some cancelled, some running long
             enough to span restarts, some with megabytes of output) are submitted, followed and
             cancelled by client threads while flowd is killed with SIGKILL at random points
             (right after a submit or a cancel was sent, or at a random time under the write load
             of tasks ending) and started again each time. Then every task whose CreateTask was
             acknowledged must exist exactly once (a retry with the same request_id returns the
             same task) with its final state, exit code and complete logs, the logs followed
             across the restarts must be whole (no loss, no duplicate), no task process may be
             left, and the database must pass PRAGMA integrity_check.
load         concurrent clients (threads, each with its own channel) each submit, poll, list,
             follow and cancel tasks while a separate checker calls grpc.health.v1 Check every
             50 ms. Every task must end with its output; reports requests/s, GetTask p50/p99,
             the slowest health answer and flowd's resident memory before and after.

Sizes: --quick (a smoke run), the default (medium), --full (50 clients x 200 tasks; a soak of
400 tasks through 40 kills). tests/reliability runs short versions of the same functions and
asserts what they report; this script prints the figures, and exits 1 when anything was lost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flow.home import FlowHome
from flowapi.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from flowd.store import Store

T = TypeVar("T")
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Reconnect quickly after a restart (gRPC's default backoff grows to minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 300),
    ("grpc.max_receive_message_length", 64 << 20),
]
MARKER_PREFIX = "flow-task:"  # the local provider's argv marker on every task's wrapper
TERMINAL = frozenset(
    {
        task_pb2.TASK_STATE_COMPLETED,
        task_pb2.TASK_STATE_FAILED,
        task_pb2.TASK_STATE_CANCELLED,
        task_pb2.TASK_STATE_PREEMPTED,
    }
)
SIGTERM_EXIT = 128 + signal.SIGTERM


# --- daemons ----------------------------------------------------------------------------------


class DaemonLike(Protocol):
    """A flowd for one FLOW_HOME that can be started, killed and stopped (tests/conftest.Daemon,
    or Flowd below)."""

    home: FlowHome
    pid: int | None

    def start(self) -> None: ...

    def kill9(self) -> None: ...

    def stop(self) -> None: ...


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(0.02)


class Flowd:
    """A real flowd in its own FLOW_HOME, started as the SDK starts it (`flowd --detach`)."""

    def __init__(self, root: Path) -> None:
        self.home = FlowHome(root=root)
        self.pid: int | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("FLOW_PROVIDER", None)
        done = subprocess.run(
            [sys.executable, "-m", "flowd", "--detach", "--home", str(self.home.root)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"flowd did not start: {done.stderr}")
        self.pid = int(self.home.lock.read_text().strip())

    def kill9(self) -> None:
        pid = self.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10)

    def stop(self) -> None:
        pid = self.pid
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid), 15)
        self.pid = None


# --- /proc ------------------------------------------------------------------------------------


def task_processes(task_ids: set[str]) -> dict[int, str]:
    """Live processes of these tasks: pid -> task id, by the wrapper's argv marker or by
    FLOW_TASK_ID in the environment (which every process a task starts inherits)."""
    markers = {(MARKER_PREFIX + t).encode(): t for t in task_ids}
    env_marks = {f"FLOW_TASK_ID={t}".encode(): t for t in task_ids}
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not pid_alive(int(entry)):
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for word in (*argv, *environ):
            owner = markers.get(word) or env_marks.get(word)
            if owner is not None:
                found[int(entry)] = owner
                break
    return found


def kill_task_processes(task_ids: set[str]) -> None:
    for pid in task_processes(task_ids):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- gRPC -------------------------------------------------------------------------------------


class Client:
    """One client's own channel and stubs."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    call: Any = error
    code: grpc.StatusCode = call.code()
    return code


def describe(error: grpc.RpcError) -> str:
    call: Any = error
    return f"{code_of(error).name}: {call.details()}"


class Retry:
    """Calls that retry while flowd is down or restarting (UNAVAILABLE, DEADLINE_EXCEEDED); any
    other error is recorded in `errors` and the call gives up."""

    def __init__(self, errors: list[str], give_up_after: float = 120.0) -> None:
        self.errors = errors
        self.give_up_after = give_up_after
        self.transient = 0
        self._lock = threading.Lock()

    def error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def __call__(self, what: str, method: Callable[..., T], request: object, timeout: float = 30) -> T | None:
        """`method(request, timeout=timeout)`, again while flowd is down (`give_up_after` at most)."""
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                return method(request, timeout=timeout)
            except grpc.RpcError as exc:
                if code_of(exc) not in TRANSIENT:
                    self.error(f"{what}: {describe(exc)}")
                    return None
                with self._lock:
                    self.transient += 1
                if time.monotonic() > deadline:
                    self.error(f"{what}: still {describe(exc)} after {self.give_up_after:g} s")
                    return None
                time.sleep(0.05)


def read_logs(client: Client, name: str, retry: Retry) -> bytes | None:
    """The task's whole output as it stands (no follow), resuming from its cursor after a restart."""
    return follow_logs(client, name, retry, follow=False)


def follow_logs(client: Client, name: str, retry: Retry, follow: bool = True) -> bytes | None:
    """Every byte of the task's output until it ends, through daemon restarts (by the cursor)."""
    data = bytearray()
    cursor = ""
    deadline = time.monotonic() + retry.give_up_after
    while True:
        request = task_service_pb2.StreamTaskLogsRequest(name=name, cursor=cursor, follow=follow)
        try:
            for chunk in client.tasks.StreamTaskLogs(request, timeout=60):
                data += chunk.data
                cursor = chunk.cursor
            return bytes(data)
        except grpc.RpcError as exc:
            if code_of(exc) not in TRANSIENT or time.monotonic() > deadline:
                retry.error(f"logs of {name}: {describe(exc)}")
                return None
            retry.transient += 1  # resumed from `cursor` once flowd is back
            time.sleep(0.05)


def wait_terminal(client: Client, name: str, retry: Retry, timeout: float) -> task_pb2.Task | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = task_service_pb2.WaitTaskRequest(name=name)
        request.timeout.seconds = 5
        reply = retry(f"WaitTask {name}", client.tasks.WaitTask, request, 10)
        if reply is None:
            return None
        if reply.task.state in TERMINAL:
            return reply.task
    retry.error(f"{name} did not end within {timeout:g} s")
    return None


def list_all(client: Client, retry: Retry) -> list[task_pb2.Task] | None:
    tasks: list[task_pb2.Task] = []
    token = ""
    while True:
        request = task_service_pb2.ListTasksRequest(page_size=1000, page_token=token)
        page = retry("ListTasks", client.tasks.ListTasks, request)
        if page is None:
            return None
        tasks.extend(page.tasks)
        token = page.next_page_token
        if not token:
            return tasks


class HealthChecker:
    """A separate client calling grpc.health.v1 Check every `every` seconds, timing each answer."""

    def __init__(self, address: str, every: float = 0.05) -> None:
        self._client = Client(address)
        self._every = every
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="health-checker", daemon=True)

    def __enter__(self) -> HealthChecker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                reply = self._client.health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    self.failures.append(f"status {reply.status}")
            except grpc.RpcError as exc:
                self.failures.append(describe(exc))
            self.latencies.append(time.monotonic() - started)
            self._stop.wait(self._every)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- what the tasks run -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskPlan:
    """One task, with everything it must end with."""

    index: int
    name: str
    argv: tuple[str, ...]
    output: bytes
    state: task_pb2.TaskState.ValueType
    exit_code: int
    cancel: bool = False
    follow: bool = False

    @property
    def request_id(self) -> str:
        return f"req-{self.name}"

    def spec(self) -> task_pb2.TaskSpec:
        return task_pb2.TaskSpec(name=self.name, command=list(self.argv), upload_code=False)


def _ended(code: int) -> task_pb2.TaskState.ValueType:
    return task_pb2.TASK_STATE_COMPLETED if code == 0 else task_pb2.TASK_STATE_FAILED


def plan_tasks(count: int, rng: random.Random, tag: str) -> list[TaskPlan]:
    """Of every 20 tasks: 9 quick ones (up to 300 lines), 4 slow ones (1.5-4 s, spanning restarts),
    3 cancelled ones, 3 writing to stdout and stderr, and 1 with 1.4 MB of output."""
    kinds = "qqqqqqqqqssssccceeeb"
    plans: list[TaskPlan] = []
    for index in range(count):
        name = f"{tag}-{index}"
        kind = kinds[index % len(kinds)]
        code = rng.choice((0, 0, 0, 1, 2, 42, 255))
        if kind == "q":
            lines = rng.randint(1, 300)
            argv = ("sh", "-c", f"seq -f '{name} %g' 1 {lines}; exit {code}")
            output = "".join(f"{name} {n}\n" for n in range(1, lines + 1))
            plans.append(TaskPlan(index, name, argv, output.encode(), _ended(code), code, follow=index % 4 == 0))
        elif kind == "s":
            pause = rng.choice((0.3, 0.5, 0.8))
            argv = ("sh", "-c", f"for j in 1 2 3 4 5; do echo {name}-$j; sleep {pause}; done; exit {code}")
            output = "".join(f"{name}-{j}\n" for j in range(1, 6))
            plans.append(TaskPlan(index, name, argv, output.encode(), _ended(code), code, follow=True))
        elif kind == "c":
            argv = ("sh", "-c", f"echo {name}-started; exec sleep 600")
            started = f"{name}-started\n".encode()
            cancelled = task_pb2.TASK_STATE_CANCELLED
            plans.append(TaskPlan(index, name, argv, started, cancelled, SIGTERM_EXIT, cancel=True, follow=True))
        elif kind == "e":
            argv = ("sh", "-c", f"echo {name}-out; echo {name}-err >&2; exit 7")
            plans.append(TaskPlan(index, name, argv, f"{name}-out\n{name}-err\n".encode(), _ended(7), 7))
        else:
            filler = "x" * 50
            argv = ("sh", "-c", f"seq -f '{name} %g {filler}' 1 20000")
            output = "".join(f"{name} {n} {filler}\n" for n in range(1, 20001))
            plans.append(TaskPlan(index, name, argv, output.encode(), task_pb2.TASK_STATE_COMPLETED, 0, follow=True))
    return plans


def same_output(plan: TaskPlan, logs: bytes) -> bool:
    """The task's output exactly; a cancelled one may end with the line its wrapper shell prints
    for a command killed by SIGTERM ("Terminated", from dash)."""
    return logs == plan.output or (plan.cancel and logs == plan.output + b"Terminated\n")


def check_task(plan: TaskPlan, task: task_pb2.Task, logs: bytes | None) -> list[str]:
    problems = []
    if task.state != plan.state:
        problems.append(
            f"{plan.name}: {task_pb2.TaskState.Name(task.state)} ({task.state_reason}), "
            f"expected {task_pb2.TaskState.Name(plan.state)}"
        )
    if not task.HasField("exit_code") or task.exit_code != plan.exit_code:
        shown = task.exit_code if task.HasField("exit_code") else None
        problems.append(f"{plan.name}: exit code {shown}, expected {plan.exit_code} ({task.state_reason})")
    if logs is not None and not same_output(plan, logs):
        problems.append(f"{plan.name}: logs differ: {len(logs)} bytes, expected {len(plan.output)}: {logs[-120:]!r}")
    return problems


# --- the crash soak ---------------------------------------------------------------------------


@dataclass
class SoakReport:
    tasks: int
    kills: int = 0
    kill_points: Counter[str] = field(default_factory=Counter)
    unacknowledged_submits: int = 0
    lost_replies: int = 0
    same_request_retries: int = 0
    cancels: int = 0
    followed: int = 0
    transient_errors: int = 0
    tasks_checked: int = 0
    integrity: str = ""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class _Moments:
    """Where the clients are, so the killer can strike right after a submit or a cancel left."""

    def __init__(self) -> None:
        self.submit = threading.Event()
        self.cancel = threading.Event()


def crash_soak(
    daemon: DaemonLike,
    tasks: int = 100,
    kills: int = 12,
    seed: int | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> SoakReport:
    """See the module docstring. The daemon must be running; it is running again at the end."""
    seed = random.randrange(2**32) if seed is None else seed
    say(f"crash soak: {tasks} tasks, {kills} kills, seed {seed}")
    rng = random.Random(seed)
    plans = plan_tasks(tasks, rng, f"k{seed % 10_000}")
    report = SoakReport(tasks=tasks)
    retry = Retry(report.errors)
    address = daemon.home.address
    acked: dict[int, str] = {}
    acked_lock = threading.Lock()
    followed: dict[int, bytes] = {}
    follow_queue: queue.Queue[TaskPlan | None] = queue.Queue()
    cancel_queue: queue.Queue[TaskPlan | None] = queue.Queue()
    moments = _Moments()
    started = time.monotonic()
    # Submissions are spread over the kill phase (about 1.5 s between kills).
    pace = kills * 1.5 / max(1, tasks) * 4

    def acknowledge(plan: TaskPlan, task_id: str) -> None:
        with acked_lock:
            known = acked.setdefault(plan.index, task_id)
        if known != task_id:
            retry.error(f"{plan.name}: request_id {plan.request_id} gave {known} and then {task_id}")

    def submitter(mine: list[TaskPlan], seed: int) -> None:
        local = random.Random(seed)
        client = Client(address)
        try:
            for plan in mine:
                time.sleep(local.uniform(0, 2 * pace))
                request = task_service_pb2.CreateTaskRequest(spec=plan.spec(), request_id=plan.request_id)
                last_failure = 0.0
                while True:
                    moments.submit.set()
                    try:
                        reply = client.tasks.CreateTask(request, timeout=15)
                    except grpc.RpcError as exc:
                        if code_of(exc) not in TRANSIENT:
                            retry.error(f"CreateTask {plan.name}: {describe(exc)}")
                            break
                        report.unacknowledged_submits += 1  # no answer: the same request_id again
                        last_failure = time.time()
                        time.sleep(0.05)
                        continue
                    if reply.task.create_time.ToNanoseconds() < last_failure * 1e9:
                        report.lost_replies += 1  # an attempt that failed had created it: not twice
                    acknowledge(plan, reply.task.task_id)
                    if local.random() < 0.15:  # an idempotent retry on purpose
                        again = retry(f"CreateTask again {plan.name}", client.tasks.CreateTask, request, 15)
                        if again is not None:
                            report.same_request_retries += 1
                            acknowledge(plan, again.task.task_id)
                    if plan.follow:
                        follow_queue.put(plan)
                    if plan.cancel:
                        cancel_queue.put(plan)
                    break
        finally:
            client.close()

    def follower() -> None:
        client = Client(address)
        try:
            while (plan := follow_queue.get()) is not None:
                data = follow_logs(client, f"tasks/{acked[plan.index]}", retry)
                if data is not None:
                    followed[plan.index] = data
        finally:
            client.close()

    def canceller(seed: int) -> None:
        local = random.Random(seed)
        client = Client(address)
        try:
            while (plan := cancel_queue.get()) is not None:
                name = f"tasks/{acked[plan.index]}"
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:  # cancelled once it has started and printed
                    logs = read_logs(client, name, retry)
                    if logs is None or logs.startswith(plan.output):
                        break
                    time.sleep(0.05)
                time.sleep(local.uniform(0, 0.5))
                moments.cancel.set()
                request = task_service_pb2.CancelTaskRequest(name=name)
                if retry(f"CancelTask {plan.name}", client.tasks.CancelTask, request, 15) is not None:
                    report.cancels += 1
        finally:
            client.close()

    submitters = [
        threading.Thread(target=submitter, args=(plans[i::4], rng.randrange(2**32)), daemon=True) for i in range(4)
    ]
    followers = [threading.Thread(target=follower, daemon=True) for _ in range(3)]
    cancellers = [threading.Thread(target=canceller, args=(rng.randrange(2**32),), daemon=True)]
    for thread in (*submitters, *followers, *cancellers):
        thread.start()

    for _ in range(kills):
        point = rng.choice(("random", "after submit", "after submit", "after cancel"))
        if point == "random":
            time.sleep(rng.uniform(0.2, 2.5))
        else:
            moment = moments.submit if point == "after submit" else moments.cancel
            moment.clear()
            if not moment.wait(timeout=3):
                point = "random"
            time.sleep(rng.uniform(0, 0.05))  # while flowd handles it: stores, launches, answers
        daemon.kill9()
        report.kills += 1
        report.kill_points[point] += 1
        time.sleep(rng.uniform(0, 0.3))
        daemon.start()

    for thread in submitters:
        thread.join(timeout=300)
    cancel_queue.put(None)
    for thread in cancellers:
        thread.join(timeout=300)
    checker = Client(address)
    try:
        finals: dict[int, task_pb2.Task] = {}
        for plan in plans:
            if plan.index not in acked:
                retry.error(f"{plan.name} was never acknowledged")
                continue
            final = wait_terminal(checker, f"tasks/{acked[plan.index]}", retry, timeout=180)
            if final is not None:
                finals[plan.index] = final
        for _ in followers:
            follow_queue.put(None)
        for thread in followers:
            thread.join(timeout=300)
        report.followed = len(followed)

        # One more kill with everything at rest: what was reported must also have been saved.
        daemon.kill9()
        report.kills += 1
        report.kill_points["at rest"] += 1
        daemon.start()

        listed = list_all(checker, retry) or []
        names = Counter(t.spec.name for t in listed)
        for name, count in names.items():
            if count > 1:
                retry.error(f"{name} exists {count} times")
        ours = {t.task_id: t for t in listed}
        if set(ours) != set(acked.values()):
            retry.error(
                f"listed tasks {sorted(set(ours) - set(acked.values()))} were never acknowledged; "
                f"acknowledged {sorted(set(acked.values()) - set(ours))} are not listed"
            )
        for plan in plans:
            task_id = acked.get(plan.index)
            if task_id is None or task_id not in ours:
                continue
            report.errors.extend(check_task(plan, ours[task_id], read_logs(checker, f"tasks/{task_id}", retry)))
            if plan.index in followed and not same_output(plan, followed[plan.index]):
                data = followed[plan.index]
                retry.error(f"{plan.name}: followed logs differ: {len(data)} bytes, expected {len(plan.output)}")
            report.tasks_checked += 1
    finally:
        checker.close()
    all_ids = {p.name for p in daemon.home.tasks.iterdir()} | set(acked.values())
    left = task_processes(all_ids)
    if left:
        retry.error(f"task processes left running: {left}")
        kill_task_processes(all_ids)
    store = Store(daemon.home.database)
    try:
        report.integrity = store.integrity_check()
    finally:
        store.close()
    if report.integrity != "ok":
        retry.error(f"PRAGMA integrity_check: {report.integrity}")
    report.transient_errors = retry.transient
    report.seconds = time.monotonic() - started
    return report


# --- the load run -----------------------------------------------------------------------------


@dataclass
class LoadReport:
    clients: int
    tasks: int
    requests: int = 0
    seconds: float = 0.0
    get_task_seconds: list[float] = field(default_factory=list)
    health_checks: int = 0
    health_failures: list[str] = field(default_factory=list)
    health_worst: float = 0.0
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    tasks_checked: int = 0
    errors: list[str] = field(default_factory=list)


def load_run(
    daemon: DaemonLike,
    clients: int = 50,
    tasks_per_client: int = 4,
    seed: int | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> LoadReport:
    """See the module docstring: `clients` threads with their own channels, each running
    `tasks_per_client` tasks through submit, GetTask polls, a listing, a log stream (and a cancel
    for one task in five), WaitTask and a final check."""
    seed = random.randrange(2**32) if seed is None else seed
    say(f"load: {clients} clients x {tasks_per_client} tasks, seed {seed}")
    assert daemon.pid is not None
    pid = daemon.pid
    report = LoadReport(clients=clients, tasks=clients * tasks_per_client)
    retry = Retry(report.errors, give_up_after=0)  # nothing restarts here: every error counts
    counts: list[int] = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    checked = [0] * clients
    address = daemon.home.address

    def one_client(number: int, seed: int) -> None:
        local = random.Random(seed)
        client = Client(address)

        def call(what: str, method: Callable[..., T], request: object) -> T | None:
            counts[number] += 1
            return retry(what, method, request, 60)

        try:
            for t in range(tasks_per_client):
                name = f"l{number}-{t}"
                if (number + t) % 5 == 0:
                    plan = TaskPlan(t, name, ("sleep", "600"), b"", task_pb2.TASK_STATE_CANCELLED, SIGTERM_EXIT, True)
                else:
                    lines, code = local.randint(1, 50), local.choice((0, 0, 3))
                    argv = ("sh", "-c", f"seq -f '{name} %g' 1 {lines}; exit {code}")
                    output = "".join(f"{name} {n}\n" for n in range(1, lines + 1)).encode()
                    plan = TaskPlan(t, name, argv, output, _ended(code), code)
                create = task_service_pb2.CreateTaskRequest(spec=plan.spec(), request_id=f"{plan.request_id}-{seed}")
                created = call(f"CreateTask {name}", client.tasks.CreateTask, create)
                if created is None:
                    continue
                task_name = created.task.name
                get = task_service_pb2.GetTaskRequest(name=task_name)
                for _ in range(5):
                    began = time.monotonic()
                    got = call(f"GetTask {name}", client.tasks.GetTask, get)
                    latencies[number].append(time.monotonic() - began)
                    if got is None or got.task.state in TERMINAL:
                        break
                    time.sleep(0.01)
                listing = task_service_pb2.ListTasksRequest(page_size=20)
                call("ListTasks", client.tasks.ListTasks, listing)
                if plan.cancel:
                    cancel = task_service_pb2.CancelTaskRequest(name=task_name)
                    call(f"CancelTask {name}", client.tasks.CancelTask, cancel)
                counts[number] += 1
                logs = follow_logs(client, task_name, retry)
                final = wait_terminal(client, task_name, retry, timeout=120)
                counts[number] += 1
                if final is not None:
                    report.errors.extend(check_task(plan, final, logs))
                    checked[number] += 1
        finally:
            client.close()

    rng = random.Random(seed)
    report.rss_before_kb = rss_kb(pid)
    threads = [threading.Thread(target=one_client, args=(n, rng.randrange(2**32)), daemon=True) for n in range(clients)]
    started = time.monotonic()
    with HealthChecker(address) as health:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=900)
        report.seconds = time.monotonic() - started
    if any(thread.is_alive() for thread in threads):
        report.errors.append("some clients did not finish within 900 s")
    report.rss_after_kb = rss_kb(pid)
    report.requests = sum(counts)
    report.get_task_seconds = [x for per_client in latencies for x in per_client]
    report.health_checks = len(health.latencies)
    report.health_failures = health.failures
    report.health_worst = health.worst
    report.tasks_checked = sum(checked)
    return report


# --- the script -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    clients: int
    tasks_per_client: int
    soak_tasks: int
    kills: int


SIZES = {
    "quick": Sizes(clients=10, tasks_per_client=2, soak_tasks=20, kills=3),
    "medium": Sizes(clients=50, tasks_per_client=20, soak_tasks=100, kills=15),
    "full": Sizes(clients=50, tasks_per_client=200, soak_tasks=400, kills=40),
}


@contextlib.contextmanager
def private_daemon(prefix: str) -> Iterator[Flowd]:
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    daemon = Flowd(root)
    daemon.start()
    print(f"FLOW_HOME={root}: flowd pid {daemon.pid}", flush=True)
    try:
        yield daemon
    finally:
        daemon.stop()
        kill_task_processes({p.name for p in daemon.home.tasks.iterdir()} if daemon.home.tasks.exists() else set())
        shutil.rmtree(root, ignore_errors=True)
        print(f"FLOW_HOME={root}: stopped and removed", flush=True)


def print_load(report: LoadReport) -> None:
    ms = [s * 1000 for s in report.get_task_seconds]
    print(f"load: {report.clients} clients x {report.tasks // max(1, report.clients)} tasks = {report.tasks} tasks")
    print(f"  tasks checked (state, exit code, logs)   {report.tasks_checked}")
    print(f"  requests                                 {report.requests} in {report.seconds:.1f} s")
    print(f"  requests/s                               {report.requests / max(report.seconds, 1e-9):.0f}")
    print(
        f"  GetTask p50 / p99 / max                  {percentile(ms, 0.5):.1f} / {percentile(ms, 0.99):.1f} / "
        f"{max(ms, default=0):.1f} ms ({len(ms)} calls)"
    )
    print(
        f"  health checks / failed / slowest         {report.health_checks} / {len(report.health_failures)} / "
        f"{report.health_worst * 1000:.0f} ms"
    )
    print(
        f"  flowd RSS before -> after                {report.rss_before_kb / 1024:.1f} -> "
        f"{report.rss_after_kb / 1024:.1f} MiB"
    )
    if ms:
        print(f"  GetTask mean                             {statistics.fmean(ms):.1f} ms")


def print_soak(report: SoakReport) -> None:
    points = ", ".join(f"{k}: {v}" for k, v in sorted(report.kill_points.items()))
    print(f"crash soak: {report.tasks} tasks, {report.kills} SIGKILLs survived ({points})")
    print(f"  tasks checked (once, state, exit code, logs) {report.tasks_checked}")
    print(f"  submit attempts unanswered, retried          {report.unacknowledged_submits}")
    print(f"  ... of which had created the task (once)     {report.lost_replies}")
    print(f"  deliberate same-request_id retries           {report.same_request_retries}")
    print(f"  cancels acknowledged                         {report.cancels}")
    print(f"  logs followed across restarts                {report.followed}")
    print(f"  calls retried/resumed while flowd was down   {report.transient_errors}")
    print(f"  PRAGMA integrity_check                       {report.integrity}")
    print(f"  took                                         {report.seconds:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description="flowd under SIGKILLs and under load.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    size.add_argument("--full", action="store_true", help="50 clients x 200 tasks; 400 tasks through 40 kills")
    parser.add_argument("--seed", type=int, default=None, help="for a reproducible run")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full" if args.full else "medium"]
    failed: list[str] = []
    with private_daemon("flow-bl-") as daemon:
        load = load_run(daemon, sizes.clients, sizes.tasks_per_client, args.seed, say=print)
        print_load(load)
        failed += load.errors + [f"health: {f}" for f in load.health_failures]
    with private_daemon("flow-bk-") as daemon:
        soak = crash_soak(daemon, sizes.soak_tasks, sizes.kills, args.seed, say=print)
        print_soak(soak)
        failed += soak.errors
    for problem in failed[:50]:
        print(f"!! {problem}")
    if failed:
        print(f"{len(failed)} problems")
        return 1
    print("nothing lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
