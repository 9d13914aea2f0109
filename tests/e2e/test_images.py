"""Tasks with an `image` on the local provider.

Where no container engine answers (this CI machine: the docker client exists, no engine runs),
such a task must fail before launch, saying so and how to run on the host instead. Where one
does, the task runs in it. The command flowd hands the engine is checked end to end through a
stand-in `docker` client placed first on flowd's PATH: it answers `info` (counting the probes)
and prints the `run` command line it was given, since no real engine can run here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, _cleanup, short_tmpdir
from flow import Flow, TaskStatus
from flow.errors import ResourceNotAvailableError

INVENTORY = [{"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}] * 4


def _engine_works() -> bool:
    for name in ("docker", "podman"):
        client = shutil.which(name)
        if client and subprocess.run([client, "info"], capture_output=True, timeout=30).returncode == 0:
            return True
    return False


def _daemon_with(env: dict[str, str]) -> Daemon:
    d = Daemon(short_tmpdir("flow-i-"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d.start()
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    return d


@pytest.fixture
def host_daemon() -> Iterator[Daemon]:
    d = _daemon_with({})
    yield d
    _cleanup(d)


def test_an_image_task_needs_a_working_engine_or_fails_before_launch(host_daemon: Daemon) -> None:
    client: Flow = host_daemon.client()
    if _engine_works():  # a machine with docker or podman running: the task is accepted
        assert client.validate(["true"], image="alpine:3.20", upload_code=False).task_id == ""
        return
    with pytest.raises(ResourceNotAvailableError) as caught:
        client.run(["true"], image="pytorch/pytorch:2.1.0", upload_code=False)
    error = caught.value
    assert "No working container engine was found" in error.message and "'pytorch/pytorch:2.1.0'" in error.message
    if shutil.which("docker"):
        assert "`docker info` failed" in error.message  # what was tried, and how it answered
    assert any("leave image out" in s for s in error.suggestions)
    assert client.list_tasks() == []  # nothing was created


def test_without_any_engine_installed_the_error_says_so(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "bash", "sleep", "true"):
        found = shutil.which(tool)
        assert found is not None
        (bare / tool).symlink_to(found)
    d = _daemon_with({"PATH": str(bare)})
    try:
        client: Flow = d.client()
        with pytest.raises(ResourceNotAvailableError) as caught:
            client.run(["true"], image="alpine:3.20", upload_code=False)
        assert "neither docker nor podman is installed" in caught.value.message
        assert client.run(["true"], upload_code=False).wait(timeout=30).last_status is TaskStatus.COMPLETED
    finally:
        _cleanup(d)


STAND_IN = """#!/bin/sh
# A stand-in docker client: `info` succeeds (and is counted); `run` prints what it was given.
if [ "$1" = info ]; then echo probe >> "{count}"; exit 0; fi
if [ "$1" = exec ]; then echo "$*"; exit 0; fi
if [ "$1" = rm ]; then echo "$*" >> "{count}.rm"; exit 0; fi
for arg in "$@"; do printf '%s\\n' "$arg"; done
echo "A=$A"
echo "SECRET_SEEN=${{WANDB_API_KEY:+yes}}"
echo "NODE_RANK=$NODE_RANK WORLD_SIZE=$WORLD_SIZE CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
if [ -n "$HOLD" ]; then exec sleep 600; fi
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    bin_dir = tmp_path / "engine-bin"
    bin_dir.mkdir()
    count = tmp_path / "probes"
    docker = bin_dir / "docker"
    docker.write_text(STAND_IN.format(count=count))
    docker.chmod(0o755)
    d = _daemon_with({"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLOW_LOCAL_GPUS": json.dumps(INVENTORY)})
    yield d, count
    _cleanup(d)


def test_the_engine_gets_the_image_gpus_code_env_and_host_network(
    stand_in: tuple[Daemon, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, probes = stand_in
    client: Flow = d.client()
    monkeypatch.setenv("WANDB_API_KEY", "wk-canary-123")
    task = client.run(
        ["python", "-c", "print('a b')", "$HOME; rm -rf /"],
        image="pytorch/pytorch:2.1.0",
        instance_type="2xa100",
        num_instances=2,
        env={"A": "x y"},
        secret_env=["WANDB_API_KEY"],
        working_dir="src",
        upload_code=False,
    ).wait(timeout=30)
    assert task.last_status is TaskStatus.COMPLETED
    work = d.home.tasks / task.task_id / "work"
    for node, gpus in ((0, "0,1"), (1, "2,3")):
        lines = task.logs(node=node).splitlines()
        at = lines.index("pytorch/pytorch:2.1.0")
        assert lines[:3] == ["run", "--rm", "--init"]
        assert lines[at + 1 : at + 5] == ["python", "-c", "print('a b')", "$HOME; rm -rf /"]  # verbatim
        flags = lines[:at]
        assert flags[flags.index("--name") + 1] == f"flow-{task.task_id}-node{node}"
        assert flags[flags.index("--gpus") + 1] == f'"device={gpus}"'
        assert flags[flags.index("--network") + 1] == "host"
        assert flags[flags.index("--workdir") + 1] == "/workspace/src"
        assert f"type=bind,source={work},target=/workspace" in flags
        env_names = {flags[i + 1] for i, f in enumerate(flags) if f == "--env"}
        assert {"A", "WANDB_API_KEY", "FLOW_TASK_ID", "MASTER_PORT", "NODE_RANK", "CUDA_VISIBLE_DEVICES"} <= env_names
        assert "PATH" not in env_names  # the image's own PATH
        assert "A=x y" in lines and "SECRET_SEEN=yes" in lines  # values reach the client's environment
        assert f"NODE_RANK={node} WORLD_SIZE=2 CUDA_VISIBLE_DEVICES=0,1" in lines  # numbered from 0 inside
    assert "wk-canary-123" not in task.logs()  # the secret is never on a command line
    again = client.run(["true"], image="alpine:3.20", upload_code=False).wait(timeout=30)
    assert "--gpus" not in again.logs().splitlines() and "--network" not in again.logs().splitlines()
    assert probes.read_text() == "probe\n"  # the engine was probed once for this daemon


def test_exec_goes_into_the_tasks_container(stand_in: tuple[Daemon, Path]) -> None:
    d, probes = stand_in
    client: Flow = d.client()
    task = client.run(["sleep", "600"], image="alpine:3.20", env={"HOLD": "1"}, upload_code=False)
    deadline = time.monotonic() + 30
    while task.status is not TaskStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.02)
    done = task.exec(["echo", "a b"])
    assert (done.exit_code, done.stdout) == (0, f"exec -i flow-{task.task_id} echo a b\n".encode())
    task.cancel()
    assert task.wait(timeout=30).last_status is TaskStatus.CANCELLED
    removed = Path(f"{probes}.rm")  # a client stopped by force leaves no container behind
    deadline = time.monotonic() + 30
    while not (removed.exists() and removed.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert removed.read_text() == f"rm -f flow-{task.task_id}\n"
