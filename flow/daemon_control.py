"""`flow daemon start|stop|status|gc`: managing flowd by hand."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import grpc

from flow.connection import DaemonConnection
from flow.errors import DaemonUnavailableError
from flow.home import resolve_home
from flowapi.v1 import code_service_pb2, daemon_service_pb2

STOP_TIMEOUT = 15.0


def _info(conn: DaemonConnection) -> dict[str, Any] | None:
    try:
        reply = conn.daemon.GetDaemonInfo(daemon_service_pb2.GetDaemonInfoRequest(), timeout=3)
    except grpc.RpcError:
        return None
    return {
        "running": True,
        "version": reply.version,
        "pid": reply.pid,
        "flow_home": reply.flow_home,
        "addresses": list(reply.addresses),
        "default_provider": reply.default_provider,
        "blob_count": reply.blob_count,
        "blob_store_bytes": reply.blob_store_bytes,
    }


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(state, indent=2) + "\n")
    elif state.get("running"):
        print(f"flowd {state['version']} is running (pid {state['pid']}) on {', '.join(state['addresses'])}")
        if "blob_count" in state:
            print(
                f"blob store: {state['blob_count']} blobs, {_megabytes(state['blob_store_bytes'])} (`flow daemon gc`)"
            )
    else:
        print(f"flowd is not running (FLOW_HOME={state['flow_home']})")


def run_action(action: str, as_json: bool) -> int:
    home = resolve_home()
    conn = DaemonConnection(home, auto_start=False)
    try:
        if action == "status":
            found = _info(conn) or {"running": False, "flow_home": str(home.root)}
            _show(found, as_json)
            return 0 if found["running"] else 1
        if action == "start":
            if _info(conn) is None:
                conn.close()
                conn = DaemonConnection(home, auto_start=True)  # a fresh channel, not one backing off
                conn.ensure_daemon()
            started = _info(conn)
            if started is None:
                raise DaemonUnavailableError(f"flowd started but does not answer on {home.socket}")
            _show(started, as_json)
            return 0
        if action == "gc":
            if _info(conn) is None:
                _show({"running": False, "flow_home": str(home.root)}, as_json)
                return 1
            done = conn.code.CollectBlobs(code_service_pb2.CollectBlobsRequest(), timeout=600)
            collected = {
                "removed_blobs": done.removed_blobs,
                "removed_bytes": done.removed_bytes,
                "kept_blobs": done.kept_blobs,
                "kept_bytes": done.kept_bytes,
            }
            if as_json:
                sys.stdout.write(json.dumps(collected, indent=2) + "\n")
            else:
                print(
                    f"removed {done.removed_blobs} blobs ({_megabytes(done.removed_bytes)}) that no unfinished "
                    f"task uses; the blob store holds {done.kept_blobs} ({_megabytes(done.kept_bytes)})"
                )
            return 0
        # stop
        state = _info(conn)
        if state is None:
            _show({"running": False, "flow_home": str(home.root)}, as_json)
            return 0
        conn.daemon.ShutdownDaemon(daemon_service_pb2.ShutdownDaemonRequest(), timeout=5)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and (_process_exists(state["pid"]) or _lock_held(home.lock)):
            time.sleep(0.02)
        stopped = {"running": False, "stopped_pid": state["pid"], "flow_home": str(home.root)}
        if as_json:
            sys.stdout.write(json.dumps(stopped, indent=2) + "\n")
        else:
            print(f"flowd (pid {state['pid']}) stopped; running tasks keep running")
        return 0
    finally:
        conn.close()


def _process_exists(pid: int) -> bool:
    """True while pid runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _lock_held(path: Any) -> bool:
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
