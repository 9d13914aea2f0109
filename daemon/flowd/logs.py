"""Reading task output files at byte offsets (the I/O half of log streaming).

The rules of what to send (whole lines, cursors) are pure, in flow.domain.task.log_cursor."""

from __future__ import annotations

import os
from pathlib import Path

from flow.domain.task.log_cursor import tail_start

CHUNK_BYTES = 256 * 1024
TAIL_WINDOW = 64 * 1024
# A live task's output, read as soon as it appears, comes in small pieces (a few KiB per read
# while the task writes at full speed): each becomes one stream message, and per-message work in
# flowd and the client competes for the CPUs with the task itself. So a follower that finds less
# than SETTLE_BYTES waits SETTLE_SECONDS, once, for more before sending (20 MB of output went
# from ~2,500 messages to ~100, and each side's CPU time from ~300 ms to ~100 ms). The wait adds
# at most SETTLE_SECONDS to what a user watching `flow logs -f` sees.
SETTLE_BYTES = 64 * 1024
SETTLE_SECONDS = 0.005


def worth_settling(available: int, final: bool, settled: bool) -> bool:
    """Whether a follower should wait a moment for more output before sending `available` bytes:
    only for a small, non-empty read of a task that may still write, and not twice in a row."""
    return not final and not settled and 0 < available < SETTLE_BYTES


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
