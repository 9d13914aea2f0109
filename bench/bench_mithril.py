"""The mithril provider against the fake Mithril server (tests/fakes/mithril.py) and the test
stack's real sshd: API requests and SSH commands per status poll, submit->RUNNING and
submit->first log line latency.

Run: .venv/bin/python bench/bench_mithril.py [--quick]   (as root: it takes a lease on
tools/test-stack for the instances' sshd, starting it if needed; the last lease stops it again)

  submit->RUNNING (1 task)        Flow.run(sleep) then task.status every 20 ms until RUNNING, with
                                  zero simulated provisioning delay; floor: one bare httpx GET of
                                  /v2/spot/availability to the same fake, in the same run
  submit->first log line         Flow.run("echo first; sleep 600") then the first line of
                                  task.logs(follow=True); same floor
  API requests per poll (N live)  with N running tasks, the fake's request log over a steady window
                                  divided by the polls in it (one bid listing starts each poll);
                                  floor: one request per task per poll (N). Batched listings make
                                  it a small constant whatever N.
  SSH commands per poll           N running tasks whose instances have 10 addresses (the fake gives
  (N live, 10 instances)          them 10 spellings of 127.0.0.1, all the one sshd): SSH channels
                                  flowd opened over a steady window divided by its polls, counted
                                  inside a flowd built in this process (flowd.server.build_daemon,
                                  the provider's ssh_commands and polls); floor: one command per
                                  task per poll (N), what polling each task's log and exit costs.
                                  The connections flowd keeps open are printed beside it (goal:
                                  one per instance address, whatever N).

Ratios are Flow's over the floor's; nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from flow.client import Flow
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import TaskState
from flow.home import FlowHome
from flow.task import Task, TaskStatus

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Sample, fmt, interleaved
else:
    from harness import BenchDaemon, Sample, fmt, interleaved

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "tools" / "test-stack"

POLL_INTERVAL = 0.25
SPIN = 0.02
TYPE = "a100-80gb.sxm.1x"


def stack_env() -> dict[str, str]:
    done = subprocess.run([str(STACK), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


def fake_mithril_class() -> Any:
    """tests/fakes/mithril.py's FakeMithril (the tests' fake server; not a package of Flow)."""
    sys.path.insert(0, str(REPO / "tests"))
    return importlib.import_module("fakes.mithril").FakeMithril


# Ten spellings of 127.0.0.1 (inet_aton reads each so): ten instance addresses, one sshd.
LOOPBACKS = (
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "127.0.0.01",
    "127.00.0.1",
    "127.000.0.1",
    "127.0.00.1",
    "127.0.000.1",
    "127.00.00.1",
    "127.000.000.001",
)


def config_yaml(fake: Any, stack: dict[str, str], known_hosts: bool = True) -> str:
    # Without known_hosts, flowd learns each address's host key on first use (accept-new).
    hosts = f"    known_hosts: {stack['FLOW_TEST_SSH_KNOWN_HOSTS']}\n" if known_hosts else ""
    return f"""\
providers:
  mithril:
    kind: mithril
    api_key: {fake.api_key}
    project: {fake.project_name}
    api_url: {fake.base_url}
    ssh_key_file: {stack["FLOW_TEST_SSH_KEY"]}
    ssh_user: {stack["FLOW_TEST_MITHRIL_SSH_USER"]}
{hosts}    poll_interval: {POLL_INTERVAL}
"""


def ssh_per_poll(fake: Any, stack: dict[str, str], live: int, window: float) -> None:
    """SSH commands per poll with `live` running tasks on len(LOOPBACKS) instance addresses,
    counted inside a flowd built in this process."""
    from flowd.server import build_daemon

    root = Path(tempfile.mkdtemp(prefix="flow-bi-", dir="/tmp"))
    home = FlowHome(root=root)
    home.config.write_text(config_yaml(fake, stack, known_hosts=False))
    home.config.chmod(0o600)
    fake.ssh_hosts = LOOPBACKS
    daemon = build_daemon(home, shutdown=lambda: None)
    engine = daemon.engine
    try:
        provider: Any = engine.providers.get("mithril")
        config = TaskConfig(command="echo up; sleep 600", instance_type="a100", upload_code=False)
        before = provider.ssh_commands
        with ThreadPoolExecutor(max_workers=16) as pool:
            ids = list(pool.map(lambda _: engine.create(config, "", False, "mithril").unwrap().task_id, range(live)))

        def followed(task_id: str) -> bool:  # its first line arrived: its instance's stream is up
            record = engine.get(task_id).unwrap()
            return record.state is TaskState.RUNNING and provider.log_files(record)[0].read_bytes() == b"up\n"

        deadline = time.monotonic() + 300
        while not all(followed(t) for t in ids):
            if time.monotonic() > deadline:
                raise RuntimeError("the tasks did not all reach RUNNING with their first line")
            time.sleep(0.1)
        started = provider.ssh_commands - before
        time.sleep(2 * POLL_INTERVAL)
        commands, polls = provider.ssh_commands, provider.polls
        time.sleep(window)
        commands, polls = provider.ssh_commands - commands, max(1, provider.polls - polls)
        per_poll = commands / polls
        links = len({d for t in ids for d in provider._tracker.destinations(t)})
        name = f"SSH commands per poll ({live} live)"
        print(f"{name:34} {per_poll:>10.2f} {'':>10} {live:>10}  {per_poll / live:.2f}x")
        print(
            f"  {live} tasks on {links} instance addresses: {started} SSH channels until every task's first line "
            f"arrived; "
            f"then {commands} in {window:.1f} s ({polls} polls)"
        )
        for t in ids:
            engine.cancel(t)
        deadline = time.monotonic() + 120
        while any(not engine.get(t).unwrap().is_terminal for t in ids) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        fake.ssh_hosts = (fake.ssh_host,)
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def until_running(task: Task, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while task.status is not TaskStatus.RUNNING:
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task.task_id} is {task.last_status}: {task.state_reason}")
        time.sleep(SPIN)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs and tasks (for the test suite)")
    args = parser.parse_args()
    runs, live = (3, 20) if args.quick else (10, 100)
    if os.geteuid() != 0:
        sys.exit("bench_mithril needs root (the test stack's sshd serves the fake's instances)")
    lease = str(os.getpid())
    subprocess.run([str(STACK), "start", "--lease", lease], check=True, timeout=900, capture_output=True)
    stack = stack_env()
    fake = fake_mithril_class()(ssh_port=int(stack["FLOW_TEST_SSH_PORT"]), ssh_user=stack["FLOW_TEST_MITHRIL_SSH_USER"])
    fake.start()
    daemon = BenchDaemon()
    try:
        for region in ("us-central1-a", "us-central1-b", "eu-central1-a"):
            fake.set_capacity(TYPE, region, live + runs + 10)
        daemon.home.root.mkdir(parents=True, exist_ok=True)
        daemon.home.config.write_text(config_yaml(fake, stack))
        daemon.home.config.chmod(0o600)
        daemon.start()
        print(f"FLOW_HOME={daemon.home.root}: a private flowd; fake Mithril at {fake.base_url}")
        flow = Flow(provider="mithril", flow_home=daemon.home.root)
        bare = httpx.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {fake.api_key}"})

        def submit_to_running() -> None:
            task = flow.run("sleep 600", instance_type="a100", upload_code=False)
            until_running(task)
            task.cancel()

        def submit_to_first_line() -> None:
            task = flow.run("echo first; sleep 600", instance_type="a100", upload_code=False)
            line = next(task.logs(follow=True))
            task.cancel()
            if line != "first":
                raise RuntimeError(f"the first line was {line!r}")

        def bare_get() -> None:
            bare.get("/v2/spot/availability").raise_for_status()

        submit_to_running()  # warm: catalog, project and SSH key lookups, the SSH connection
        timed = interleaved({"flow": submit_to_running, "line": submit_to_first_line, "bare": bare_get}, runs)
        rows: list[tuple[str, Sample, Sample | None]] = [
            ("submit->RUNNING (1 task)", timed["flow"], timed["bare"]),
            ("submit->first log line", timed["line"], timed["bare"]),
        ]
        print(f"{'measure':34} {'median':>10} {'p90':>10} {'floor':>10}  ratio")
        for name, sample, floor in rows:
            ratio = f"  {sample.median / floor.median:.1f}x" if floor else ""
            shown = fmt(floor.median) if floor else "-"
            print(f"{name:34} {fmt(sample.median):>10} {fmt(sample.p90):>10} {shown:>10}{ratio}")

        with ThreadPoolExecutor(max_workers=16) as pool:
            tasks = list(
                pool.map(lambda _: flow.run("sleep 600", instance_type="a100", upload_code=False), range(live))
            )
            list(pool.map(until_running, tasks))
        time.sleep(2 * POLL_INTERVAL)
        window = 10 * POLL_INTERVAL if args.quick else 20 * POLL_INTERVAL
        before = len(fake.requests)
        time.sleep(window)
        seen = fake.requests[before:]
        polls = sum(1 for r in seen if r.method == "GET" and r.path == "/v2/spot/bids") or 1
        per_poll = len(seen) / polls
        by_path: dict[str, int] = {}
        for r in seen:
            by_path[f"{r.method} {r.path}"] = by_path.get(f"{r.method} {r.path}", 0) + 1
        name = f"API requests per poll ({live} live)"
        print(f"{name:34} {per_poll:>10.2f} {'':>10} {live:>10}  {per_poll / live:.2f}x")
        print(f"  in {window:.1f} s: {polls} polls, requests by path: {by_path}")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda t: t.cancel(), tasks))
        bare.close()
        flow.close()
        ssh_per_poll(fake, stack, live, window)
    finally:
        daemon.stop()
        fake.stop()
        subprocess.run([str(STACK), "release", lease], check=False, timeout=120, capture_output=True)
    print(f"FLOW_HOME={daemon.home.root}: removed; fake stopped; violations: {len(fake.violations)}")


if __name__ == "__main__":
    main()
