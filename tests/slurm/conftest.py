"""The real Slurm and sshd the slurm provider's tests run against, and flowds configured for them.

`tools/test-stack start` installs (apt, first time only) and starts a Slurm cluster with fake GPUs
(localhost, the default partition's node, and node1..node4, each in namespaces of its own: see the
script) and a private sshd on 127.0.0.1, idempotently, in /tmp/flow-test-stack. The session
fixture starts it, under a lease, for any pytest run that selects these tests (so `pytest
tests/slurm` works alone, and `make test` needs nothing more), and releases the lease at the end:
the last lease stops the stack, unless someone started it by hand. Test sessions and benchmarks
running at once share it; each module cancels only the jobs of its own work directories.
`multinode` gives the namespaced nodes and their partitions, for tests that drive Slurm directly
and for providers configured on a partition of several nodes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from attrs import frozen

from conftest import REPO, Daemon, _cleanup, short_tmpdir, wait_until

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

    def sbatch(self, script: str, *options: str) -> str:
        """Submits `script` (its text) as sbatch does from this machine, the login node; the job id."""
        done = subprocess.run(
            ["sbatch", "--parsable", *options],
            input=script,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **self.env},
            cwd=self.shared,
        )
        assert done.returncode == 0, f"sbatch {shlex.join(options)} failed: {done.stderr}"
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o`, as a mapping (JobState, Reason, NodeList, ExitCode, ...); empty
        once the job has left the controller."""
        done = self.slurm("scontrol", "show", "job", "-o", job_id)
        fields: dict[str, str] = {}
        for item in done.stdout.split():
            key, eq, value = item.partition("=")
            if eq and key not in fields:
                fields[key] = value
        return fields

    def wait_job(self, job_id: str, states: Iterable[str], timeout: float = 120) -> dict[str, str]:
        """Waits until the job is in one of `states`; its fields then."""
        wanted = set(states)
        seen: dict[str, str] = {}

        def reached() -> bool:
            seen.update(self.job(job_id))
            return seen.get("JobState") in wanted

        try:
            wait_until(reached, timeout, interval=0.2)
        except AssertionError:
            raise AssertionError(f"job {job_id} did not reach {sorted(wanted)} in {timeout} s: {seen}") from None
        return dict(seen)

    def hostnames(self, nodelist: str) -> list[str]:
        return self.slurm("scontrol", "show", "hostnames", nodelist, check=True).stdout.split()

    def node_state(self, node: str) -> str:
        return self.slurm("sinfo", "-h", "-N", "-n", node, "-o", "%t").stdout.split("\n")[0].strip()

    def kill_node(self, node: str) -> None:
        """Crashes `node`: every process of its namespaces dies at once (tools/test-stack kill-node)."""
        self._script("kill-node", node)

    def start_node(self, node: str) -> None:
        """Starts a killed node's slurmd again and waits until Slurm can use the node."""
        self._script("start-node", node)
        wait_until(lambda: self.node_state(node) in ("idle", "mix", "alloc"), 60, interval=0.2)

    def _script(self, *argv: str) -> None:
        subprocess.run(
            [str(STACK_SCRIPT), *argv], check=True, timeout=120, env={**os.environ, **self.env}, capture_output=True
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


@frozen
class MultiNode:
    """The stack's namespaced nodes (each its own host: hostname, address, /etc/hosts) and their
    partitions: `multi` for multi-node jobs, `spot` (preemptible, where nodes get killed) and
    `urgent` (preempts spot) on the other two, `all` on every one (tools/test-stack)."""

    stack: Stack
    nodes: tuple[str, ...]
    multi: str = "multi"
    spot: str = "spot"
    urgent: str = "urgent"
    all: str = "all"

    def partition_nodes(self, partition: str) -> list[str]:
        listed = self.stack.slurm("sinfo", "-h", "-p", partition, "-o", "%N").stdout.strip()
        return self.stack.hostnames(listed) if listed else []

    def provider_yaml(self, name: str, partition: str, mode: str = "local", poll_interval: float = 0.2) -> str:
        """A slurm provider (for `extra=` of slurm_daemon_for) whose tasks run on `partition`."""
        return (
            f"  {name}:\n    kind: slurm\n    mode: {mode}\n    slurm_conf: {self.stack.slurm_conf}\n"
            f"    partition: {partition}\n    gpu_type: a100\n    poll_interval: {poll_interval}\n"
        )


@pytest.fixture(scope="session")
def multinode(slurm_stack: Stack) -> MultiNode:
    nodes = tuple(filter(None, slurm_stack.env.get("FLOW_TEST_SLURM_NODES", "").split(",")))
    cluster = MultiNode(stack=slurm_stack, nodes=nodes)
    if not nodes or cluster.partition_nodes(cluster.multi) != list(nodes[:2]):
        pytest.fail(
            "the running test Slurm has no namespaced nodes: it was started by an older tools/test-stack "
            "and other sessions hold it; once they end it restarts with them (or: tools/test-stack stop)"
        )
    return cluster


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
