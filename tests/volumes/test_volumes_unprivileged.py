"""Where flowd cannot give a task a private mount namespace (here: flowd runs without
CAP_SYS_ADMIN, as in an unprivileged container), a task with volumes or data mounts is refused
before anything is created, saying why and what to do; it is never run with its volumes mounted
elsewhere, or without them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Daemon, short_tmpdir
from flow import MountSpec, TaskConfig, VolumeSpec
from flow.errors import VolumeError
from flow.task import TaskStatus
from volumes.conftest import stop_daemon


@pytest.fixture
def capless_daemon() -> Iterator[Daemon]:
    """flowd as root, but with CAP_SYS_ADMIN dropped from its bounding set (setpriv)."""
    d = Daemon(short_tmpdir("flow-u-"))
    done = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", sys.executable, "-m", "flowd", "--detach", "--home", str(d.home.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    d.pid = int(d.home.lock.read_text().strip())
    yield d
    stop_daemon(d)


@pytest.mark.parametrize(
    ("field", "config"),
    [
        ("volumes", TaskConfig(command="true", upload_code=False, volumes=[VolumeSpec(name="data", size_gb=1)])),
        (
            "data_mounts",
            TaskConfig(command="true", upload_code=False, data_mounts=[MountSpec(source="/tmp", target="/d")]),
        ),
    ],
)
def test_without_mount_namespaces_volumes_are_refused_before_launch_saying_why(
    capless_daemon: Daemon, field: str, config: TaskConfig
) -> None:
    flow: Any = capless_daemon.client()
    with pytest.raises(VolumeError) as refused:
        flow.run(config)
    message = refused.value.message
    assert field in message and "refuses private mount namespaces" in message and "not permitted" in message
    assert any("root" in tip for tip in refused.value.suggestions)
    assert flow.list_tasks() == [] and flow.list_volumes() == []  # nothing was created
    assert flow.run(TaskConfig(command="true", upload_code=False)).wait(timeout=60).status is TaskStatus.COMPLETED
    flow.close()
