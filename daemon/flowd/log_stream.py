"""StreamTaskLogs: one loop over a task's N output files (one per node, or one), from a cursor.

Every byte a task writes reaches every reader exactly once, whatever the line lengths: a chunk
holds whole lines, except when a line is longer than a chunk (LINE_LIMIT: then the chunk ends
mid-line and the line continues in the next) and for the last, unterminated line of a task
that has ended. Each chunk carries the cursor that resumes right after it. With several files
(a multi-node task read whole), each chunk is one node's lines with "[node K] " before each, and
the cursor holds every node's offset; a piece of a line longer than a chunk is shown as a line
of its own there.

Memory is bounded by a constant whatever the output: at most one chunk per file is read at a
time, and `tail_lines` scans the end of each file backwards block by block (flowd.logs).

Followers do not poll: LogWatch stats the files someone follows (one thread for all of them)
and fires their key when a file grows; the lifecycle fires the task's key when its state
changes; the RPC layer sets a follower's own Event when its client goes away.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError
from flow.domain.task.log_cursor import decode_cursor, emit_length, encode_cursor
from flow.domain.task.multinode import decode_merged_cursor, encode_merged_cursor, label_lines
from flow.domain.task.requests import log_request_violations
from flowd import logs
from flowd.wakeups import Waiter, Wakeups

LINE_LIMIT: Final = logs.CHUNK_BYTES
IDLE_RECHECK: Final = 5.0  # a follower looks again this often even when nothing fired
WATCH_TICK: Final = 0.002  # LogWatch's pause between looks, with a few files followed
STATS_PER_SECOND: Final = 20_000  # ... and with many, at most this many stats a second


@frozen
class LogChunk:
    data: bytes
    cursor: str


class LogWatch:
    """One thread that notices followed files growing (by size) and fires their keys."""

    def __init__(self, wakeups: Wakeups) -> None:
        self._wakeups = wakeups
        self._lock = threading.Lock()
        self._followed: dict[Path, int] = {}  # path -> followers
        self._sizes: dict[Path, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-watch", daemon=True)
        self._thread.start()

    def follow(self, paths: Sequence[Path]) -> None:
        with self._lock:
            for path in paths:
                self._followed[path] = self._followed.get(path, 0) + 1
                self._sizes.setdefault(path, logs.size_of(path))
        self._wake.set()

    def unfollow(self, paths: Sequence[Path]) -> None:
        with self._lock:
            for path in paths:
                left = self._followed.get(path, 0) - 1
                if left > 0:
                    self._followed[path] = left
                else:
                    self._followed.pop(path, None)
                    self._sizes.pop(path, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                paths = list(self._followed)
            if not paths:
                self._wake.wait()
                self._wake.clear()
                continue
            for path in paths:
                size = logs.size_of(path)
                with self._lock:
                    changed = path in self._sizes and self._sizes[path] != size
                    if changed:
                        self._sizes[path] = size
                if changed:
                    self._wakeups.fire(path)
            self._stop.wait(max(WATCH_TICK, len(paths) / STATS_PER_SECOND))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()


class LogStreams:
    def __init__(self, wakeups: Wakeups, watch: LogWatch, is_live: Callable[[str], bool]) -> None:
        self._wakeups = wakeups
        self._watch = watch
        self._is_live = is_live

    def open(
        self,
        task_id: str,
        files: Sequence[Path],
        merged: bool,
        cursor: str,
        follow: bool,
        tail_lines: int,
        waiter: Waiter,
    ) -> Result[Iterator[LogChunk], DomainError]:
        """The output in `files` from `cursor` on (`merged`: several nodes' files read as one,
        labelled). The stream ends when the task is terminal and everything was sent (at once
        without `follow`), or when the waiter is released (the client went away)."""
        decoded = decode_merged_cursor(cursor, len(files)) if merged else decode_cursor(cursor).map(lambda o: (o,))
        if isinstance(decoded, Failure):
            return Failure(decoded.failure())
        offsets = list(decoded.unwrap())
        checked = log_request_violations(tail_lines, offsets, [logs.size_of(f) for f in files], cursor)
        if isinstance(checked, Failure):
            return Failure(checked.failure())
        if not cursor and tail_lines:  # the last N lines (of every node)
            offsets = [logs.tail_offset(path, tail_lines) for path in files]
        return Success(self._chunks(task_id, list(files), offsets, merged, follow, waiter))

    def _chunks(
        self, task_id: str, files: list[Path], offsets: list[int], merged: bool, follow: bool, waiter: Waiter
    ) -> Iterator[LogChunk]:
        with self._wakeups.waiting(waiter.event, [task_id, *files]):
            if follow:
                self._watch.follow(files)
            try:
                yield from self._loop(task_id, files, offsets, merged, follow, waiter)
            finally:
                if follow:
                    self._watch.unfollow(files)

    def _loop(
        self, task_id: str, files: list[Path], offsets: list[int], merged: bool, follow: bool, waiter: Waiter
    ) -> Iterator[LogChunk]:
        settled = False
        while not waiter.released and not self._wakeups.closed:
            waiter.event.clear()
            # Terminal before the read means no byte can follow what this read returns.
            final = not follow or not self._is_live(task_id)
            sent = False
            for k, path in enumerate(files):
                data = logs.read_at(path, offsets[k], LINE_LIMIT)
                if not merged and logs.worth_settling(len(data), final, settled):  # fewer, larger messages
                    settled = True
                    waiter.gone.wait(logs.SETTLE_SECONDS)
                    sent = True  # look again at once
                    break
                settled = False
                take = emit_length(data, final, LINE_LIMIT)
                if not take:
                    continue
                offsets[k] += take
                sent = True
                piece = data[:take]
                if merged:
                    yield LogChunk(data=label_lines(piece, k), cursor=encode_merged_cursor(offsets))
                else:
                    yield LogChunk(data=piece, cursor=encode_cursor(offsets[0]))
            if sent:
                continue
            if final:
                return
            waiter.event.wait(IDLE_RECHECK)
