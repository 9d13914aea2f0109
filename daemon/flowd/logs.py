"""Reading task output files at byte offsets (the I/O half of log streaming).

The rules of what to send (whole lines, cursors) are pure, in flow.domain.log_cursor."""

from __future__ import annotations

import os
from pathlib import Path

from flow.domain.log_cursor import tail_start

CHUNK_BYTES = 256 * 1024
TAIL_WINDOW = 64 * 1024


def read_at(path: Path, offset: int, limit: int = CHUNK_BYTES) -> bytes:
    """Up to `limit` bytes of the file from `offset`; b"" when there are none (or no file yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, limit, offset)
    finally:
        os.close(fd)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail_offset(path: Path, lines: int) -> int:
    """Where the last `lines` lines of the file begin, reading only as much of its end as needed."""
    size = size_of(path)
    window = TAIL_WINDOW
    while True:
        start = max(0, size - window)
        data = read_at(path, start, size - start)
        offset = tail_start(data, start, lines)
        if offset > start or start == 0:
            return offset
        window *= 4
