"""Resumable log cursors and the line-chunking rule of StreamTaskLogs.

A task's output is an append-only byte file. A cursor names a byte offset in it; the stream sends
whole lines (up to and including a newline), so a client that resumes from the last cursor it
received sees every byte exactly once. Two exceptions keep any output flowing: a line longer
than a chunk is sent in pieces (a chunk then ends mid-line), and the last line of a finished task
may lack its newline (it is sent once the task is terminal).

Cursors are opaque to clients: "c1." + offset. The version prefix leaves room for cursors over
several files (one per node) without breaking clients that only pass them back.
"""

from __future__ import annotations

from typing import Final

from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, validation_error, violation

CURSOR_PREFIX: Final = "c1."
MAX_CURSOR_LENGTH: Final = 32


def encode_cursor(offset: int) -> str:
    return f"{CURSOR_PREFIX}{offset}"


def decode_cursor(text: str) -> Result[int, DomainError]:
    """The byte offset a cursor names; an empty cursor is the beginning."""
    if text == "":
        return Success(0)
    digits = text[len(CURSOR_PREFIX) :]
    if len(text) <= MAX_CURSOR_LENGTH and text.startswith(CURSOR_PREFIX) and digits.isascii() and digits.isdigit():
        return Success(int(digits))
    return Failure(
        validation_error(
            [
                violation(
                    "cursor",
                    text,
                    "is not a cursor from this stream",
                    "pass back the cursor of the last chunk you received, or '' to start over",
                )
            ],
            subject="log request",
        )
    )


def emit_length(data: bytes, final: bool, limit: int) -> int:
    """How many leading bytes of `data` (a read of at most `limit` bytes) to send now: up to the
    last newline; all of it when it is the end of the output of a terminal task (nothing more can
    arrive); and all of it when it is a piece of one line longer than `limit` (the line goes on in
    the next chunk), so that no line length can stop a stream."""
    end = data.rfind(b"\n") + 1
    if len(data) >= limit:  # there may be more: whole lines, or the piece of a longer one
        return end or len(data)
    return len(data) if final else end


def tail_start(window: bytes, window_offset: int, lines: int) -> int:
    """The offset where the last `lines` lines begin, given the file's last bytes (`window`,
    which starts at `window_offset`). A trailing newline ends the last line, not a new one."""
    if lines <= 0:
        return window_offset + len(window)
    end = len(window) - 1 if window.endswith(b"\n") else len(window)
    position = end
    for _ in range(lines):
        position = window.rfind(b"\n", 0, position)
        if position < 0:
            return window_offset
    return window_offset + position + 1
