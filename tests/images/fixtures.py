"""pytest fixtures for real podman (tools/podman-setup). Import the ones you use:

    from images.fixtures import podman  # noqa: F401

`podman` (session) installs and configures Debian's podman 4.3 for this machine class (first
time: apt-get, and the base image's debootstrap, about 2 minutes; then a few seconds) and returns
a `Podman`: the environment that points any podman client at the test configuration and storage
(give `podman.env` to a flowd so its local provider finds a working engine), and the loaded base
image, Debian minbase with python3 (`podman.image`). Without real GPUs, CDI declares fake devices
nvidia.com/gpu=0..7 whose only effect is FLOW_FAKE_CDI_GPU<i>=1 in the container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from attrs import frozen

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "tools" / "podman-setup"


@frozen
class Podman:
    env: dict[str, str]  # CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, FLOW_PODMAN_IMAGE
    client: str  # the podman executable

    @property
    def image(self) -> str:
        return self.env["FLOW_PODMAN_IMAGE"]

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """This process's environment with the podman configuration (and extra) added."""
        return {**os.environ, **self.env, **(extra or {})}

    def run(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """`podman ARGV...` (argv without the client), with the test configuration."""
        return subprocess.run(
            [self.client, *argv],
            env=self.environ(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )


def setup_env() -> dict[str, str]:
    done = subprocess.run([str(SETUP_SCRIPT), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


@pytest.fixture(scope="session")
def podman() -> Podman:
    if os.geteuid() != 0:
        pytest.skip("the podman test setup needs root (apt-get; rootful podman); CI runs as root")
    subprocess.run([str(SETUP_SCRIPT), "setup"], check=True, timeout=900)
    client = shutil.which("podman")
    assert client is not None, "tools/podman-setup setup left no podman on PATH"
    return Podman(env=setup_env(), client=client)
