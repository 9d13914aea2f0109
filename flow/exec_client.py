"""The client side of ExecTask: `task.ssh()`, `task.exec()` and `flow ssh`.

A session is one bidirectional stream: the first message says what to run; then stdin bytes,
window sizes and end-of-input go up while output and, last, the exit code come down.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

from flow.errors import TaskExecutionError
from flow.wire.exec_codec import (
    ExecOutput,
    exec_call,
    exec_resize_request,
    exec_start_request,
    exec_stdin_closed_request,
    exec_stdin_request,
)

if TYPE_CHECKING:
    from flow.connection import DaemonConnection
    from flow.exec_result import ExecResult

_DONE = object()


def as_argv(command: str | Sequence[str] | None) -> list[str]:
    """A string is a shell command line (as with ssh); a list runs as it is; None: a shell."""
    if command is None:
        return []
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return list(command)


class _Session:
    def __init__(self, conn: DaemonConnection, task_id: str, argv: list[str], tty: bool) -> None:
        size = shutil.get_terminal_size()
        self._outbox: queue.Queue[bytes | object] = queue.Queue()
        term = os.environ.get("TERM", "xterm-256color")
        self._outbox.put(exec_start_request(task_id, argv, tty, size.lines, size.columns, term))
        self._conn = conn

    def _requests(self) -> Iterator[bytes]:
        while isinstance(item := self._outbox.get(), bytes):
            yield item

    def send(self, data: bytes) -> None:
        self._outbox.put(exec_stdin_request(data))

    def close_stdin(self) -> None:
        """Says end of input, then half-closes the request stream: nothing more goes up."""
        self._outbox.put(exec_stdin_closed_request())
        self._outbox.put(_DONE)

    def resize(self, rows: int, columns: int) -> None:
        self._outbox.put(exec_resize_request(rows, columns))

    def responses(self) -> Iterator[ExecOutput]:
        try:
            yield from self._conn.bidi_stream(exec_call(self._requests))
        finally:
            self._outbox.put(_DONE)


def run(
    conn: DaemonConnection,
    task_id: str,
    argv: list[str],
    stdin: bytes | None = None,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
) -> ExecResult:
    """Runs a command without a terminal; output is collected, and also copied to out/err."""
    from flow.exec_result import ExecResult

    code, stdout, stderr = _output(conn, task_id, argv, stdin, out, err, keep=True)
    return ExecResult(exit_code=code, stdout=stdout, stderr=stderr)


def run_streaming(
    conn: DaemonConnection, task_id: str, argv: list[str], stdin: bytes | None, out: BinaryIO, err: BinaryIO
) -> int:
    """Runs a command without a terminal, its output copied to out/err as it comes and not
    kept (`flow ssh TASK -- CMD`); answers its exit code."""
    return _output(conn, task_id, argv, stdin, out, err, keep=False)[0]


def _output(
    conn: DaemonConnection,
    task_id: str,
    argv: list[str],
    stdin: bytes | None,
    out: BinaryIO | None,
    err: BinaryIO | None,
    keep: bool,
) -> tuple[int, bytes, bytes]:
    session = _Session(conn, task_id, argv, tty=False)
    if stdin:
        session.send(stdin)
    session.close_stdin()
    stdout, stderr = bytearray(), bytearray()
    code: int | None = None
    for reply in session.responses():
        if reply.stdout:
            if keep:
                stdout += reply.stdout
            if out is not None:
                out.write(reply.stdout)
                out.flush()
        if reply.stderr:
            if keep:
                stderr += reply.stderr
            if err is not None:
                err.write(reply.stderr)
                err.flush()
        if reply.exit_code is not None:
            code = reply.exit_code
    if code is None:
        raise TaskExecutionError("the exec session ended without an exit status", suggestions=["try again"])
    return code, bytes(stdout), bytes(stderr)


def interactive(conn: DaemonConnection, task_id: str, argv: list[str]) -> int:
    """A terminal session: this terminal in raw mode, keys up, screen down, resizes followed."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    session = _Session(conn, task_id, argv, tty=True)

    def on_resize(*_: object) -> None:
        size = shutil.get_terminal_size()
        session.resize(size.lines, size.columns)

    def forward_keys() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(fd, 4096):
                session.send(data)
        session.close_stdin()

    previous = signal.signal(signal.SIGWINCH, on_resize)
    tty.setraw(fd)
    try:
        threading.Thread(target=forward_keys, name="exec-keys", daemon=True).start()
        code = 255
        for reply in session.responses():
            if reply.stdout:
                os.write(sys.stdout.fileno(), reply.stdout)
            if reply.exit_code is not None:
                code = reply.exit_code
        return code
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
