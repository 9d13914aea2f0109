"""flowd's start-up loads only what this machine's configuration uses: the first `flow` command
on a machine waits for it (bench/bench_spine.py times it; here, what it loads).

A real flowd in the foreground under `python -X importtime`, until it answers a call."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from conftest import BIN, pid_alive, short_tmpdir, wait_until
from flowd.gpu_discovery import NVML_LIBRARY

# Where no Slurm provider is configured, none of its modules (nor paramiko, its SSH) are loaded.
SLURM_ONLY = frozenset({"paramiko", "invoke", "tarfile", "flowd.providers.slurm", "flowd.providers.slurm_cluster"})


def nvml_library_loads() -> bool:
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def test_flowd_serves_without_the_modules_of_providers_it_does_not_run() -> None:
    home = short_tmpdir("flow-i-")
    env = {**os.environ, "FLOW_HOME": str(home)}
    for name in ("FLOW_PROVIDER", "FLOW_LOCAL_GPUS", "MITHRIL_API_KEY"):
        env.pop(name, None)
    log = home.parent / f"{home.name}.importtime"
    with open(log, "w") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "flowd", "--home", str(home)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:

        def answers() -> bool:
            done = subprocess.run([str(BIN / "flow"), "status"], capture_output=True, env=env, timeout=60)
            return done.returncode == 0

        wait_until(lambda: (home / "flowd.sock").exists() and answers(), 60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert not pid_alive(daemon.pid)
    imported = {
        line.rsplit("|", 1)[1].strip() for line in log.read_text().splitlines() if line.startswith("import time:")
    }
    assert "flowd.server" in imported  # so the log really holds the daemon's imports
    loaded = imported & SLURM_ONLY
    assert not loaded, f"flowd loaded {sorted(loaded)} with no Slurm provider configured"
    if not nvml_library_loads():  # no NVIDIA driver here: nothing to ask NVML
        assert "pynvml" not in imported
