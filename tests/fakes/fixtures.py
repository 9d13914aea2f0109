"""pytest fixtures for the fake Mithril server. Import the ones a test module uses:

    from fakes.fixtures import fake_mithril, mithril_stack  # noqa: F401 - pytest finds fixtures by name

`mithril_stack` (session) starts tools/test-stack under a lease (as tests/slurm does; the last
lease out stops it) and returns its `env` lines as a dict (FLOW_TEST_SSH_PORT, FLOW_TEST_SSH_KEY,
FLOW_TEST_SSH_KNOWN_HOSTS, FLOW_TEST_MITHRIL_SSH_USER, ...). `fake_mithril` is a started
FakeMithril whose instances point at that sshd; at teardown it is stopped (every instance's
processes killed) and the test fails if any request or response broke the spec.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.mithril import FakeMithril

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "tools" / "test-stack"


def stack_env() -> dict[str, str]:
    done = subprocess.run([str(STACK_SCRIPT), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


@pytest.fixture(scope="session")
def mithril_stack() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("the fake Mithril's instances need the test stack, which needs root (CI runs the tests as root)")
    lease = str(os.getpid())
    subprocess.run([str(STACK_SCRIPT), "start", "--lease", lease], check=True, timeout=900)
    try:
        yield stack_env()
    finally:
        subprocess.run([str(STACK_SCRIPT), "release", lease], check=False, timeout=120)


@pytest.fixture
def fake_mithril(mithril_stack: dict[str, str]) -> Iterator[FakeMithril]:
    fake = FakeMithril(
        ssh_port=int(mithril_stack["FLOW_TEST_SSH_PORT"]), ssh_user=mithril_stack["FLOW_TEST_MITHRIL_SSH_USER"]
    )
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    fake.assert_clean()
