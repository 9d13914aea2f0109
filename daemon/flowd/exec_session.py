"""A command run inside a task's environment, as bytes in and out (the shell of ExecTask).

With a tty the command gets a pseudo-terminal as its controlling terminal (via `setsid --ctty`,
so no Python code runs between fork and exec in this multi-threaded daemon) and its output is
one stream; without, stdout and stderr stay apart. Output arrives through `read()` as
("stdout" | "stderr", bytes) until None, then `wait()` gives the exit code (128+N for signal N).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import shutil
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

READ_BYTES = 64 * 1024


class ExecChannel(Protocol):
    """What ExecTask drives: a local process (ExecSession) or a remote one (a pod's exec stream)."""

    def read(self, timeout: float | None = None) -> tuple[str, bytes] | None: ...
    def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def resize(self, rows: int, columns: int) -> None: ...
    def wait(self) -> int: ...
    def kill(self) -> None: ...


class ExecError(Exception):
    """The command could not be started (the message says why)."""


class ExecSession:
    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        tty: bool,
        rows: int = 24,
        columns: int = 80,
    ) -> None:
        self._tty = tty
        self._output: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=256)
        self._pty: int | None = None
        self._readers: list[threading.Thread] = []
        self._stdin_closed = False
        try:
            if tty:
                self._start_tty(argv, cwd, env, rows, columns)
            else:
                self._start_pipes(argv, cwd, env)
        except OSError as exc:
            raise ExecError(f"cannot run {argv[0]!r}: {exc.strerror}") from exc

    def _start_tty(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], rows: int, columns: int) -> None:
        primary, secondary = os.openpty()
        self._pty = primary
        self.resize(rows, columns)
        setsid = shutil.which("setsid") or "/usr/bin/setsid"
        try:
            self._process = subprocess.Popen(
                [setsid, "--ctty", "--wait", *argv],
                stdin=secondary,
                stdout=secondary,
                stderr=secondary,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
            )
        finally:
            os.close(secondary)
        self._readers = [threading.Thread(target=self._pump_fd, args=(primary, "stdout"), daemon=True)]
        self._readers[0].start()

    def _start_pipes(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        self._process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr")):
            reader = threading.Thread(target=self._pump_fd, args=(stream.fileno(), name), daemon=True)
            reader.start()
            self._readers.append(reader)
        threading.Thread(target=self._finish_when_read, daemon=True).start()

    def _pump_fd(self, fd: int, name: str) -> None:
        while True:
            try:
                data = os.read(fd, READ_BYTES)
            except OSError:  # EIO: the pty's last writer is gone
                data = b""
            if not data:
                break
            self._output.put((name, data))
        if self._tty:
            self._output.put(None)

    def _finish_when_read(self) -> None:
        for reader in self._readers:
            reader.join()
        self._output.put(None)

    def read(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        """The next piece of output; None once the command has closed its output."""
        return self._output.get(timeout=timeout)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._pty is not None:
                os.write(self._pty, data)
            elif self._process.stdin is not None:
                self._process.stdin.write(data)
                self._process.stdin.flush()

    def close_stdin(self) -> None:
        """End of input (once: stdin_closed and the half-close that may follow are one EOF)."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        with contextlib.suppress(OSError, ValueError):
            if self._pty is not None:
                os.write(self._pty, b"\x04")  # what a terminal sends for Ctrl-D
            elif self._process.stdin is not None:
                self._process.stdin.close()

    def resize(self, rows: int, columns: int) -> None:
        if self._pty is not None and rows > 0 and columns > 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._pty, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def wait(self) -> int:
        code = self._process.wait()
        if self._pty is not None:
            with contextlib.suppress(OSError):
                os.close(self._pty)
            self._pty = None
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        """Ends the command and everything it started (the client went away)."""
        if self._pty is not None:  # hang up the terminal: its session gets SIGHUP, as with ssh
            with contextlib.suppress(OSError):
                os.close(self._pty)
            self._pty = None
        with contextlib.suppress(OSError):
            os.killpg(self._process.pid, signal.SIGHUP if self._tty else signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=2)
            return
        with contextlib.suppress(OSError):
            os.killpg(self._process.pid, signal.SIGKILL)
