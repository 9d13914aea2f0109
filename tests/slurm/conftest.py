"""The real Slurm and sshd the slurm provider's tests run against, and flowds configured for them.

`tools/test-stack start` installs (apt, first time only) and starts a single-node Slurm with fake
GPUs and a private sshd on 127.0.0.1, idempotently, in /tmp/flow-test-stack. The session fixture
starts it, under a lease, for any pytest run that selects these tests (so `pytest tests/slurm`
works alone, and `make test` needs nothing more), and releases the lease at the end: the last
lease stops the stack, unless someone started it by hand. Test sessions and benchmarks running at
once share it; each module cancels only the jobs of its own work directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from attrs import frozen

from conftest import REPO, Daemon, _cleanup, short_tmpdir

STACK_SCRIPT = REPO / "tools" / "test-stack"
MODES = ("slurm-local", "slurm-ssh")


@frozen
class Stack:
    env: dict[str, str]

    @property
    def root(self) -> Path:
        return Path(self.env["FLOW_TEST_STACK"])

    @property
    def slurm_conf(self) -> str:
        return self.env["SLURM_CONF"]

    @property
    def shared(self) -> Path:
        """A directory every job can read and write (gates, outputs of tests)."""
        return Path(self.env["FLOW_TEST_SLURM_OUT"])

    @property
    def ssh_home(self) -> Path:
        return Path(self.env["FLOW_TEST_SSH_HOME"])

    def slurm(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, check=check, env={**os.environ, **self.env}
        )

    def cancel_under(self, *roots: Path) -> None:
        """Cancels the live jobs that run in any of these directories (this test's jobs only:
        other sessions may share the cluster)."""
        listed = self.slurm("squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i|%Z").stdout.splitlines()
        mine = [
            job
            for job, _, where in (line.partition("|") for line in listed)
            if any(where == str(root) or where.startswith(f"{root}/") for root in roots)
        ]
        if mine:
            self.slurm("scancel", *mine)

    def config_yaml(self, ssh_work_dir: Path, poll_interval: float = 0.2, extra: str = "") -> str:
        e = self.env
        return f"""\
providers:
  slurm-local:
    kind: slurm
    mode: local
    slurm_conf: {e["SLURM_CONF"]}
    gpu_type: a100
    poll_interval: {poll_interval}
  slurm-ssh:
    kind: slurm
    mode: ssh
    host: {e["FLOW_TEST_SSH_HOST"]}
    port: {e["FLOW_TEST_SSH_PORT"]}
    user: {e["FLOW_TEST_SSH_USER"]}
    key_file: {e["FLOW_TEST_SSH_KEY"]}
    known_hosts: {e["FLOW_TEST_SSH_KNOWN_HOSTS"]}
    work_dir: {ssh_work_dir}
    gpu_type: a100
    poll_interval: {poll_interval}
{extra}"""


def _stack_env() -> dict[str, str]:
    done = subprocess.run([str(STACK_SCRIPT), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


@pytest.fixture(scope="session")
def slurm_stack() -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("the Slurm test stack needs root (apt-get, useradd, mknod); CI runs the tests as root")
    lease = str(os.getpid())
    subprocess.run([str(STACK_SCRIPT), "start", "--lease", lease], check=True, timeout=900)
    try:
        yield Stack(env=_stack_env())
    finally:
        subprocess.run([str(STACK_SCRIPT), "release", lease], check=False, timeout=120)


def slurm_daemon_for(stack: Stack, extra: str = "") -> tuple[Daemon, Path]:
    """A flowd (not started) whose config names both providers, and the SSH user's work dir."""
    daemon = Daemon(short_tmpdir("flow-s-"))
    work = stack.ssh_home / f"flow-{uuid.uuid4().hex[:8]}"
    config = daemon.home.config
    config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.write_text(stack.config_yaml(work, extra=extra))
    config.chmod(0o600)
    return daemon, work


@pytest.fixture(scope="module")
def slurm_daemon(slurm_stack: Stack) -> Iterator[Daemon]:
    daemon, work = slurm_daemon_for(slurm_stack)
    daemon.start()
    yield daemon
    slurm_stack.cancel_under(daemon.home.root, work)
    _cleanup(daemon)
    with contextlib.suppress(OSError):
        shutil.rmtree(work)


@pytest.fixture
def gate(slurm_stack: Stack) -> Iterator[Path]:
    """A path jobs of either mode can wait for (create it to let them go on)."""
    path = slurm_stack.shared / f"gate-{uuid.uuid4().hex[:10]}"
    yield path
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
