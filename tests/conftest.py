"""Shared fixtures: a real flowd on a real Unix socket, in a private FLOW_HOME per test (or per
module, for the read-mostly tests), started and killed exactly as users' daemons are."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from flow.home import FlowHome

# Hypothesis times each example against a 200 ms deadline and checks that data generation is quick:
# both are timing claims that fail on a busy CI machine, not defects. Properties are what we test.
settings.register_profile("flow", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("flow")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The tests that need root, marked `root` here in one place (`make test-user` runs the others:
# pytest -m "not root"): by the fixtures they use, the Slurm and sshd test stack (apt-get, useradd,
# mknod), loop-mounted volumes in mount namespaces (and s3:// mounts, made there), a host's
# container engine, flowd without CAP_SYS_ADMIN (setpriv); by where they live, the Kubernetes
# cluster and real images, the benchmarks of volumes, Slurm and Mithril, and the tests that skip
# themselves without root. (Checked by running `make test-user` as `nobody`.)
NEEDS_ROOT_FIXTURES = frozenset(
    {"slurm_stack", "mithril_stack", "vdaemon", "vshared", "s3_daemon", "capless_daemon", "host_daemon"}
)
NEEDS_ROOT_TESTS = (
    "tests/k8s/",
    "tests/images/",
    "tests/reliability/test_state_full.py",
    "tests/daemon/test_access.py::test_another_user_cannot_reach_the_socket_or_the_state",
    "tests/bench/test_bench_scripts.py::test_slurm_quick_prints_every_row_with_a_ratio_and_cleans_up",
    "tests/bench/test_bench_scripts.py::test_volumes_quick_prints_every_row_with_a_ratio_and_cleans_up",
    "tests/bench/test_bench_scripts.py::test_mithril_quick_prints_every_row_with_a_ratio_and_cleans_up",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if NEEDS_ROOT_FIXTURES.intersection(fixtures) or item.nodeid.startswith(NEEDS_ROOT_TESTS):
            item.add_marker(pytest.mark.root)


def short_tmpdir(prefix: str) -> Path:
    """Unix socket paths must stay under 108 bytes, so homes live directly under /tmp."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Daemon:
    """A real flowd process for one FLOW_HOME."""

    def __init__(self, root: Path) -> None:
        self.home = FlowHome(root=root)
        self.pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLOW_HOME"] = str(self.home.root)
        env.pop("FLOW_PROVIDER", None)
        return env

    def start(self, *extra: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "flowd", "--detach", "--home", str(self.home.root), *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        self.pid = int(self.home.lock.read_text().strip())

    def kill9(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(self.pid or 0), 10)

    def stop(self) -> None:
        if self.pid is not None and pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(self.pid or 0), 15)
        self.pid = None

    def client(self, **kwargs: object) -> object:
        from flow import Flow

        return Flow(flow_home=self.home.root, **kwargs)

    def flow_cli(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI as a user runs it, from `cwd` (by default an empty project directory)."""
        if cwd is None:
            cwd = self.home.root.parent / f"{self.home.root.name}-project"
            cwd.mkdir(exist_ok=True)
        return subprocess.run(
            [str(BIN / "flow"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=cwd,
        )


# A deadline only bounds how long a failing test takes to say so: it is never a timing claim.
# On a machine whose cores are all busy (CI runners, two `yes > /dev/null`) a process takes many
# times longer to start or stop, so no wait gives up before this many seconds.
MIN_DEADLINE = 60.0


def wait_until(predicate: object, timeout: float, interval: float = 0.02) -> None:
    """Returns once predicate() is true; fails after max(timeout, MIN_DEADLINE) seconds."""
    limit = max(timeout, MIN_DEADLINE)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {limit} s")


def _cleanup(daemon: Daemon) -> None:
    """Stops the daemon and every task process it started (tests must leave nothing behind)."""
    daemon.stop()
    kill_task_processes(daemon)
    shutil.rmtree(daemon.home.root, ignore_errors=True)
    shutil.rmtree(daemon.home.root.parent / f"{daemon.home.root.name}-project", ignore_errors=True)


def kill_task_processes(daemon: Daemon) -> None:
    for task_dir in daemon.home.tasks.glob("*"):
        marker = f"flow-task:{task_dir.name}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in argv:
                with contextlib.suppress(OSError):
                    os.killpg(int(entry), signal.SIGKILL)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-t-"))
    d.start()
    yield d
    _cleanup(d)


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-m-"))
    d.start()
    yield d
    _cleanup(d)


@pytest.fixture(scope="module")
def flow(shared_daemon: Daemon) -> Iterator[object]:
    client = shared_daemon.client()
    yield client
    client.close()
