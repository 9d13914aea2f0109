"""`flowd`: the per-user daemon. Foreground by default; `--detach` for the SDK's auto-start.

Start-up order matters:
  1. $FLOW_HOME is created private (0700) and an exclusive flock is taken on flowd.lock, so a
     second daemon refuses instead of stealing the socket (gRPC would silently unlink it).
  2. With --detach, the process forks before any thread exists; the parent exits only when the
     child reports "serving" (or an error) through a pipe, so the caller knows the outcome.
  3. State is opened, unfinished tasks are recovered, then the socket is bound (0600).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
from typing import IO

from flow.home import MAX_SOCKET_PATH, FlowHome, check_ownership, resolve_home
from flowd.tcp_settings import AccessConfigError, TcpSettings, tcp_settings

EXIT_ALREADY_RUNNING = 3
EXIT_FAILED = 1
log = logging.getLogger("flowd")


class AlreadyRunningError(Exception):
    pass


def take_lock(home: FlowHome) -> IO[str]:
    """The daemon's exclusive claim on $FLOW_HOME, held (open) for its whole life."""
    handle = open(home.lock, "a+")  # noqa: SIM115 - must stay open while the daemon runs
    os.chmod(home.lock, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunningError(
            f"flowd is already running for FLOW_HOME={home.root} (pid {holder}); "
            "use `flow daemon stop` to stop it, or set FLOW_HOME to run another"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def prepare_home(home: FlowHome) -> None:
    check_ownership(home)  # before anything is created or chmod-ed (root may chmod any file)
    home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home.root, 0o700)
    home.tasks.mkdir(exist_ok=True, mode=0o700)
    if len(str(home.socket)) > MAX_SOCKET_PATH:
        raise OSError(
            f"the socket path {home.socket} is longer than {MAX_SOCKET_PATH} bytes, "
            "which Unix sockets cannot hold; set FLOW_HOME to a shorter directory"
        )


def configure_logging(home: FlowHome, detached: bool, level: str) -> None:
    if detached:
        fd = os.open(home.daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handler: logging.Handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def detach() -> int:
    """Forks; the parent waits for the child's verdict and exits with it. Returns the pipe's
    write end in the child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        with os.fdopen(read_end) as verdict:
            message = verdict.read()
        if message.startswith("ok"):
            sys.exit(0)
        sys.stderr.write(message or "flowd exited before it was ready\n")
        sys.exit(EXIT_ALREADY_RUNNING if message.startswith("already") else EXIT_FAILED)
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return write_end


def serve(home: FlowHome, ready: int | None, tcp: TcpSettings | None) -> None:
    """Runs the daemon until SIGTERM/SIGINT or a ShutdownDaemon call."""
    from flowd.server import build_daemon  # grpc is imported only after any fork

    stop = threading.Event()
    daemon = build_daemon(home, shutdown=stop.set, tcp=tcp)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    daemon.start()
    log.info("flowd %s serving on %s (pid %d)", daemon.version, ", ".join(daemon.addresses), os.getpid())
    if ready is not None:
        os.write(ready, b"ok\n")
        os.close(ready)
    # A short wait, not a long one: the kernel may deliver SIGTERM to any thread, and Python runs
    # the handler only once the main thread wakes up.
    while not stop.wait(0.2):
        pass
    log.info("flowd stopping")
    daemon.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flowd", description="The Flow daemon (one per user).")
    parser.add_argument("--home", help="state directory (default: $FLOW_HOME or ~/.flow)")
    parser.add_argument("--detach", action="store_true", help="run in the background; exit once serving")
    parser.add_argument("--log-level", default=os.environ.get("FLOW_LOG_LEVEL", "info"))
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--tcp",
        default=os.environ.get("FLOW_DAEMON_TCP"),
        metavar="HOST:PORT",
        help="also listen on TCP (off by default); calls need the token in $FLOW_HOME/daemon-token",
    )
    parser.add_argument("--tls-cert", default=os.environ.get("FLOW_DAEMON_TLS_CERT"), help="TLS certificate (PEM)")
    parser.add_argument("--tls-key", default=os.environ.get("FLOW_DAEMON_TLS_KEY"), help="TLS private key (PEM)")
    args = parser.parse_args(argv)
    if args.version:
        from flow.version import __version__

        print(f"flowd {__version__}")
        return
    os.umask(0o077)  # everything flowd creates (socket, state, logs) is private to the user
    home = resolve_home(explicit=args.home)
    try:
        tcp = tcp_settings(args.tcp, args.tls_cert, args.tls_key)
        prepare_home(home)
        lock = take_lock(home)
    except AlreadyRunningError as exc:
        sys.stderr.write(f"already running: {exc}\n")
        sys.exit(EXIT_ALREADY_RUNNING)
    except (OSError, AccessConfigError) as exc:
        sys.stderr.write(f"flowd cannot start: {exc}\n")
        sys.exit(EXIT_FAILED)
    ready = detach() if args.detach else None
    if ready is not None:
        # The lock's pid line names the process that actually serves.
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
    configure_logging(home, detached=args.detach, level=args.log_level)
    try:
        serve(home, ready, tcp)
    except Exception as exc:
        log.exception("flowd failed")
        if ready is not None:
            with contextlib.suppress(OSError):
                os.write(ready, f"flowd failed to start: {exc}\n".encode())
        sys.exit(EXIT_FAILED)
    finally:
        lock.close()


if __name__ == "__main__":
    main()
