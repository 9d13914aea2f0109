"""`flow daemon start|stop|status|gc`: managing flowd by hand (flow.daemon_control does it; this shows it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flow.cli import exit_status
from flow.cli.arguments import add_json
from flow.cli.output import emit_json

if TYPE_CHECKING:
    from flow.wire.daemon_codec import DaemonInfo


def _running(info: DaemonInfo) -> dict[str, Any]:
    return {
        "running": True,
        "version": info.version,
        "pid": info.pid,
        "flow_home": info.flow_home,
        "addresses": list(info.addresses),
        "default_provider": info.default_provider,
        "providers": [
            {"name": p.name, "kind": p.kind, "default": p.default, **({"problem": p.problem} if p.problem else {})}
            for p in info.providers
        ],
        "blob_count": info.blob_count,
        "blob_store_bytes": info.blob_store_bytes,
    }


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _show(info: DaemonInfo, as_json: bool) -> None:
    if as_json:
        emit_json(_running(info))
    else:
        print(f"flowd {info.version} is running (pid {info.pid}) on {', '.join(info.addresses)}")
        for p in info.providers:
            default = ", the default" if p.default else ""
            print(f"  provider {p.name} ({p.kind}{default}): " + ("cannot be used" if p.problem else "ok"))
            for line in p.problem.splitlines():
                print(f"    {line}")
        size = _megabytes(info.blob_store_bytes)
        print(f"blob store: {info.blob_count} blobs, {size} (`flow daemon gc` removes unused ones)")


def cmd_daemon(args: argparse.Namespace) -> int:
    from flow import daemon_control
    from flow.home import resolve_home

    home = resolve_home()
    if args.action == "start":
        _show(daemon_control.start(home), args.json)
        return 0
    if args.action == "status":
        info = daemon_control.status(home)
        if info is not None:
            _show(info, args.json)
            return 0
    elif args.action == "gc":
        done = daemon_control.collect_blobs(home)
        if done is not None:
            if args.json:
                emit_json(done._asdict())
            else:
                print(
                    f"removed {done.removed_blobs} blobs ({_megabytes(done.removed_bytes)}) that no unfinished "
                    f"task uses; the blob store holds {done.kept_blobs} ({_megabytes(done.kept_bytes)})"
                )
            return 0
    else:
        stopped = daemon_control.stop(home)
        if stopped is not None:
            if args.json:
                emit_json({"running": False, "stopped_pid": stopped, "flow_home": str(home.root)})
            else:
                print(f"flowd (pid {stopped}) stopped; running tasks keep running")
            return 0
    if args.json:
        emit_json({"running": False, "flow_home": str(home.root)})
    else:
        print(f"flowd is not running (FLOW_HOME={home.root})")
    return exit_status.DAEMON_UNAVAILABLE if args.action in ("status", "gc") else 0


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    daemon = add_parser("daemon", help="manage flowd, the per-user daemon")
    daemon.add_argument(
        "action",
        choices=["start", "stop", "status", "gc"],
        help="start it (if none runs), stop it (tasks keep running), say whether it runs (exit 69 if not), "
        "or collect code blobs no task uses",
    )
    add_json(daemon)
    daemon.set_defaults(handler=cmd_daemon, command_parser=daemon)


__all__ = ["register"]
