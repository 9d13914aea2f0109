"""A task's directory on this machine, and the files in it (names: flow.domain.task.task_files).

Everything written here is private to the user: files 0600 (0700 for what must run), the
directory 0700. Remote providers keep their local copies (the mirrored log, the fetched result)
here too, written through the same functions, so no file of a task ever gets the default mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from attrs import frozen

from flow.domain.task import task_files


@frozen
class TaskDir:
    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def output(self) -> Path:
        return self.path / task_files.OUTPUT

    def node(self, rank: int) -> TaskDir:
        return TaskDir(self.path / task_files.NODES_DIR / str(rank))

    def create(self) -> TaskDir:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def write(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        """Writes the file whole with `mode` (also when it existed with another mode)."""
        self.create()
        path = self.path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
        return path

    def clear_run(self) -> None:
        """Forgets how the previous run of the task ended (its exit status, time-out mark and
        result, also each node's), before it runs again under the same id. Its output stays:
        the next run appends to it."""
        for directory in (self, *(TaskDir(p) for p in (self.path / task_files.NODES_DIR).glob("*"))):
            for name in (task_files.EXIT_STATUS, task_files.TIMED_OUT, task_files.RESULT):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    (directory.path / name).unlink()

    def touch(self, name: str) -> Path:
        self.create()
        path = self.path / name
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
        return path

    def open_append(self, name: str) -> int:
        """A descriptor appending to the file (created 0600): what a task's output goes to."""
        self.create()
        return os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None

    def exit_status(self) -> int | None:
        """The status the wrapper recorded when the program ended, if it did."""
        data = self.read(task_files.EXIT_STATUS)
        text = (data or b"").decode("ascii", "replace").strip()
        return int(text) if text.lstrip("-").isdigit() else None

    def append_at(self, name: str, offset: int, data: bytes) -> bool:
        """Appends `data` if the file is exactly `offset` bytes long: a mirrored log gets exactly
        the bytes that follow, never twice. Returns whether it wrote."""
        fd = self.open_append(name)
        try:
            if os.fstat(fd).st_size != offset:
                return False
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            return True
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()
