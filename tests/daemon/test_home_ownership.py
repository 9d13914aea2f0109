"""A $FLOW_HOME another user controls is refused by flowd and by every client, as OpenSSH refuses
keys and config files with the wrong owner: whoever owns the home can move the socket aside and
receive the clients' requests, secret values included."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, Daemon, _cleanup, short_tmpdir
from flow import Flow
from flow.errors import ValidationError
from flow.home import FlowHome

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root (CI runs as root)")
NOBODY = 65534


@pytest.fixture
def home() -> Iterator[Path]:
    root = short_tmpdir("flow-o-")
    yield root
    leftover = Daemon(root)  # a daemon that started although it should not have
    pid = FlowHome(root).lock.read_text().strip() if FlowHome(root).lock.is_file() else ""
    leftover.pid = int(pid) if pid.isdigit() else None
    _cleanup(leftover)


def _flowd(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowd", "--detach", "--home", str(root)], capture_output=True, text=True, timeout=60
    )


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOW_HOME": str(root)}
    return subprocess.run([str(BIN / "flow"), *args], capture_output=True, text=True, timeout=60, env=env)


def _assert_refused(message: str, path: Path) -> None:
    assert str(path) in message, message
    assert "owned by" in message or "writable by" in message, message
    assert "chown" in message or "chmod" in message, message  # the fix
    assert "Traceback" not in message, message


@pytest.mark.parametrize("what", ["home", "database", "config", "lock"])
def test_flowd_refuses_a_home_or_state_file_owned_by_another_user(home: Path, what: str) -> None:
    paths = FlowHome(home)
    target = {"home": home, "database": paths.database, "config": paths.config, "lock": paths.lock}[what]
    if target != home:
        target.write_text("")
    os.chown(target, NOBODY, NOBODY)
    done = _flowd(home)
    assert done.returncode == 1, done.stderr
    _assert_refused(done.stderr, target)
    assert not paths.socket.exists()


def test_flowd_refuses_a_world_writable_home(home: Path) -> None:
    home.chmod(0o777)
    done = _flowd(home)
    assert done.returncode == 1
    _assert_refused(done.stderr, home)
    assert not FlowHome(home).socket.exists()


def test_clients_refuse_a_home_owned_by_another_user(home: Path) -> None:
    os.chown(home, NOBODY, NOBODY)
    with pytest.raises(ValidationError) as caught:
        Flow(flow_home=home)
    _assert_refused(str(caught.value), home)
    for args in (("status",), ("status", "--json"), ("daemon", "status")):
        done = _cli(home, *args)
        assert done.returncode != 0, (args, done.stdout)
        _assert_refused(done.stdout if "--json" in args else done.stderr, home)
    assert not FlowHome(home).socket.exists()  # and no daemon was started for it


def test_clients_refuse_a_socket_owned_by_another_user() -> None:
    daemon = Daemon(short_tmpdir("flow-o-"))
    daemon.start()
    try:
        os.chown(daemon.home.socket, NOBODY, NOBODY, follow_symlinks=False)
        with pytest.raises(ValidationError) as caught:
            Flow(flow_home=daemon.home.root)
        _assert_refused(str(caught.value), daemon.home.socket)
        for args in (("status",), ("daemon", "status")):
            done = _cli(daemon.home.root, *args)
            assert done.returncode != 0
            _assert_refused(done.stderr, daemon.home.socket)
    finally:
        _cleanup(daemon)


def test_a_home_owned_by_the_user_or_root_is_used(home: Path) -> None:
    """The refusal is about other users only: the user's own home (here root's) works."""
    daemon = Daemon(home)
    daemon.start()
    try:
        assert daemon.client().daemon_info().pid == daemon.pid  # type: ignore[attr-defined]
    finally:
        _cleanup(daemon)
