"""Managing flowd by hand (`flow daemon start|stop|status|gc`): what runs, starting and stopping
it, collecting its unused blobs. These answer values; the CLI (flow.cli.daemon) shows them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from flow.connection import DaemonConnection
from flow.errors import DaemonUnavailableError, FlowError
from flow.home import FlowHome
from flow.wire.code_codec import CollectedBlobs, collect_blobs_call
from flow.wire.daemon_codec import DaemonInfo, daemon_info_call, list_providers_call, shutdown_daemon_call

STOP_TIMEOUT: Final = 15.0


def _info(conn: DaemonConnection) -> DaemonInfo | None:
    try:
        return conn.unary(daemon_info_call(), timeout=3)
    except FlowError:
        return None


def status(home: FlowHome) -> DaemonInfo | None:
    """The daemon serving `home`, if one answers, with its providers (and what is wrong with any)."""
    conn = DaemonConnection(home, auto_start=False)
    try:
        info = _info(conn)
        if info is None:
            return None
        try:
            return info._replace(providers=conn.unary(list_providers_call(), timeout=10))
        except FlowError:
            return info
    finally:
        conn.close()


def start(home: FlowHome) -> DaemonInfo:
    """The daemon serving `home`, started first when none answers (starting a running one does nothing)."""
    found = status(home)
    if found is not None:
        return found
    conn = DaemonConnection(home, auto_start=True)
    try:
        conn.ensure_daemon()
        started = _info(conn)
    finally:
        conn.close()
    if started is None:
        raise DaemonUnavailableError(f"flowd started but does not answer on {home.socket}")
    return started


def stop(home: FlowHome) -> int | None:
    """Stops the daemon serving `home` and waits until it is gone; its pid, or None when none ran.
    Running tasks keep running."""
    conn = DaemonConnection(home, auto_start=False)
    try:
        state = _info(conn)
        if state is None:
            return None
        conn.unary(shutdown_daemon_call(), timeout=5)
    finally:
        conn.close()
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and (_process_exists(state.pid) or _lock_held(home.lock)):
        time.sleep(0.02)
    return state.pid


def collect_blobs(home: FlowHome) -> CollectedBlobs | None:
    """Removes the uploaded blobs no unfinished task uses (CodeService.CollectBlobs); None when
    no daemon serves `home`."""
    conn = DaemonConnection(home, auto_start=False)
    try:
        if _info(conn) is None:
            return None
        return conn.unary(collect_blobs_call(), timeout=600)
    finally:
        conn.close()


def _process_exists(pid: int) -> bool:
    """True while pid runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _lock_held(path: Path) -> bool:
    import fcntl

    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


__all__ = ["collect_blobs", "start", "status", "stop"]
