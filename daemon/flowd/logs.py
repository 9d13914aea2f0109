"""Reading task output files at byte offsets (the I/O half of log streaming).

The rules of what to send (whole lines, cursors) are pure, in flow.domain.task.log_cursor. Every
read is bounded (a chunk, a block), so memory never grows with a log."""

from __future__ import annotations

import os
from pathlib import Path

CHUNK_BYTES = 256 * 1024
TAIL_BLOCK = 64 * 1024
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


def tail_offset(path: Path, lines: int, block: int = TAIL_BLOCK) -> int:
    """Where the last `lines` lines of the file begin (flow.domain.task.log_cursor.tail_start's
    rule: a trailing newline ends the last line), scanning backwards one block at a time: memory
    stays one block whatever the file's size, line lengths or `lines`."""
    size = size_of(path)
    if lines <= 0:
        return size
    end = size
    last = read_at(path, size - 1, 1) if size else b""
    if last == b"\n":
        end -= 1  # the newline that ends the last line starts no line of its own
    wanted = lines
    while end > 0:
        start = max(0, end - block)
        data = read_at(path, start, end - start)
        position = len(data)
        while True:
            position = data.rfind(b"\n", 0, position)
            if position < 0:
                break
            wanted -= 1
            if wanted == 0:
                return start + position + 1
        end = start
    return 0
