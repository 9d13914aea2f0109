"""Fixtures for volumes: a real flowd whose volumes are real loop-mounted ext4 images, and a real
S3-compatible server on 127.0.0.1 (tools/s3-server). Teardown unmounts and detaches everything
the daemon mounted (loop devices are few), even after a crash."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import REPO, Daemon, kill_task_processes, short_tmpdir
from volumes.volume_helpers import release_storage


def stop_daemon(d: Daemon) -> None:
    d.stop()
    kill_task_processes(d)
    time.sleep(0.1)  # let the killed tasks' namespaces go, so their loop devices are released
    release_storage(d.home.root)
    shutil.rmtree(d.home.root, ignore_errors=True)
    shutil.rmtree(d.home.root.parent / f"{d.home.root.name}-project", ignore_errors=True)


@pytest.fixture
def vdaemon() -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-v-"))
    d.start()
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def vshared() -> Iterator[Daemon]:
    """One daemon for tests that create nothing (refusals)."""
    d = Daemon(short_tmpdir("flow-vm-"))
    d.start()
    yield d
    stop_daemon(d)


@pytest.fixture
def vflow(vdaemon: Daemon) -> Iterator[Any]:
    client = vdaemon.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    where = short_tmpdir("flow-s3-")
    started = subprocess.run(
        [sys.executable, str(REPO / "tools" / "s3-server"), "start", str(where)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([sys.executable, str(REPO / "tools" / "s3-server"), "stop", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAFLOWTESTKEY00001",
    "AWS_SECRET_ACCESS_KEY": "flow-test-secret-do-not-log-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_daemon(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A flowd whose environment points boto3 at the local S3 server, with test credentials."""
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    d = Daemon(short_tmpdir("flow-s-"))
    d.start()
    yield d
    stop_daemon(d)


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    """A real boto3 client of the local server (the tests put objects with it)."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=s3_endpoint)
