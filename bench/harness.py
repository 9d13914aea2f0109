"""What every benchmark in bench/ shares: timing samples, interleaved runs against their floors,
and a private flowd in a fresh FLOW_HOME that leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from flow.home import FlowHome

MARKER_PREFIX = "flow-task:"  # the local provider's argv marker on every task process


@dataclass(frozen=True)
class Sample:
    """Repeated timings of one thing, in seconds."""

    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p90(self) -> float:
        if len(self.seconds) < 2:
            return self.seconds[0]
        return statistics.quantiles(self.seconds, n=10, method="inclusive")[8]


@dataclass(frozen=True)
class Row:
    sample: Sample
    floor: Sample | None


def repeat(work: Callable[[], object], runs: int, name: str) -> Sample:
    return interleaved({name: work}, runs)[name]


def interleaved(works: dict[str, Callable[[], object]], runs: int) -> dict[str, Sample]:
    """Times each work `runs` times, round-robin, so that a noisy neighbour's bursts hit a
    measurement and its floor alike instead of skewing one ratio."""
    timings: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(runs):
        for name, work in works.items():
            started = time.perf_counter()
            work()
            timings[name].append(time.perf_counter() - started)
    return {name: Sample(name, seconds) for name, seconds in timings.items()}


# --- the daemon --------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class BenchDaemon:
    """A real flowd for a private FLOW_HOME directly under /tmp (Unix socket paths stay short)."""

    def __init__(self) -> None:
        self.home = FlowHome(root=Path(tempfile.mkdtemp(prefix="flow-b-", dir="/tmp")))
        self.pid: int | None = None

    def env(self) -> dict[str, str]:
        """For child processes: this FLOW_HOME, the default provider, and .pyc caches in use."""
        env = dict(os.environ)
        env["FLOW_HOME"] = str(self.home.root)
        env.pop("FLOW_PROVIDER", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def start(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "flowd", "--detach", "--home", str(self.home.root)],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"flowd did not start: {done.stderr.strip()}")
        self.pid = int(self.home.lock.read_text().strip())

    def stop(self) -> None:
        """SIGTERM to flowd, then SIGKILL to any task process left, then the home goes."""
        if self.pid is not None and pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid_alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        # Task processes carry FLOW_TASK_ID in their environment (a warm wrapper, a marker in argv).
        ids = [d.name for d in self.home.tasks.glob("*")]
        words = {f"{MARKER_PREFIX}{i}".encode() for i in ids} | {f"FLOW_TASK_ID={i}".encode() for i in ids}
        if ids:
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    seen = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                    seen += Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if words.intersection(seen):
                    with contextlib.suppress(OSError):
                        os.killpg(int(entry), signal.SIGKILL)
                    with contextlib.suppress(OSError):
                        os.kill(int(entry), signal.SIGKILL)
        shutil.rmtree(self.home.root, ignore_errors=True)


@contextlib.contextmanager
def running_daemon() -> Iterator[BenchDaemon]:
    daemon = BenchDaemon()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # so the finally below still stops the daemon

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        signal.signal(signal.SIGTERM, previous)


def fmt(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def git_repository(tree: Path, git_dir: Path) -> Callable[[], None]:
    """A committed git repository of `tree` (its .git kept outside it); returns `git status`."""
    git = ["git", "--git-dir", str(git_dir), "--work-tree", str(tree), "-c", "core.compression=0"]
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True, env=env)
    subprocess.run([*git, "config", "core.bare", "false"], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", "tree"], check=True, env=env)

    def status() -> None:
        done = subprocess.run([*git, "status", "--porcelain"], check=True, capture_output=True, env=env)
        if done.stdout.strip():
            raise RuntimeError(f"git status found changes: {done.stdout[:200]!r}")

    return status
