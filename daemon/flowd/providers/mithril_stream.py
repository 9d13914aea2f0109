"""The pushed side of a Mithril provider: one kept-open channel per instance address, running
flow.runtime.task_watch, which sends every followed task's new output as it is written, and its
exit the moment it is recorded (see that module for the protocol).

A stream follows the tasks it is told to (`follow`), and tells the watcher where each local copy
ends; what arrives goes to the `StreamSink` (the provider): output appended at exactly its offset
(so a byte is never written twice), exits, start failures. When the channel or the connection
breaks, the stream connects again (backing off) and follows every task again from the sizes of
the local copies: nothing is lost, nothing repeated. A stream with no task left to follow closes
its channel. So the SSH work of the provider's poll does not grow with its tasks: it has none.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import paramiko

from flow.runtime import task_watch
from flowd.providers.mithril_link import InstanceLink, LinkError

log = logging.getLogger(__name__)

WATCHER_SOURCE: Final = Path(task_watch.__file__).read_text()
SILENCE: Final = 3 * task_watch.HEARTBEAT  # no frame for this long: the connection is dead
BACKOFF: Final = (0.2, 0.5, 1.0, 2.0, 5.0)
MAX_HEADER: Final = 4096


class StreamSink(Protocol):
    """What a stream tells the provider (from the stream's thread)."""

    def offsets(self, task_id: str) -> Sequence[int]:
        """The sizes of the task's local copies, node by node (where the watcher resumes)."""
        ...

    def output(self, task_id: str, node: int, offset: int, data: bytes) -> None: ...

    def exited(self, task_id: str, node: int, code: int, timed_out: bool) -> None: ...

    def start_failed(self, task_id: str, node: int, reason: str) -> None: ...


class _ClosedError(Exception):
    pass


class InstanceStream:
    def __init__(self, destination: str, link: InstanceLink, sink: StreamSink, tag: str) -> None:
        self.destination = destination
        self._link = link
        self._sink = sink
        self._command = f"exec python3 -u -c {shlex.quote(WATCHER_SOURCE)} flow-watch {shlex.quote(tag)}"
        self._lock = threading.Lock()
        self._tasks: dict[str, int] = {}  # task -> nodes
        self._stops: set[str] = set()  # asked to stop while not connected
        self._drains: dict[str, threading.Event] = {}
        self._channel: Any = None
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.connects = 0
        self._thread = threading.Thread(target=self._loop, name=f"mithril-stream-{destination}", daemon=True)
        self._thread.start()

    # --- what the provider asks ------------------------------------------------------------

    def follow(self, task_id: str, nodes: int) -> None:
        with self._lock:
            known = task_id in self._tasks
            self._tasks[task_id] = nodes
        if not known:
            self._request(self._follow_line(task_id, nodes))
        self._wake.set()

    def unfollow(self, task_id: str) -> None:
        with self._lock:
            self._tasks.pop(task_id, None)
            self._stops.discard(task_id)
        self._request(f"U {task_id}\n")

    def stop_task(self, task_id: str) -> None:
        """Asks the task's command to stop (SIGTERM to its process group, by its own script)."""
        with self._lock:
            self._stops.add(task_id)
        self._request(f"S {task_id}\n")

    def drain(self, task_id: str, timeout: float) -> bool:
        """Waits until everything the instance has of the task now has arrived; False when that
        could not be known within `timeout` (the instance is gone, or out of reach)."""
        token = f"{time.monotonic_ns()}"
        done = threading.Event()
        with self._lock:
            self._drains[token] = done
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not self._closed:
                if self._request(f"D {task_id} {token}\n"):
                    return done.wait(max(0.0, deadline - time.monotonic()))
                time.sleep(0.05)  # not connected: it may be again soon
            return False
        finally:
            with self._lock:
                self._drains.pop(token, None)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._tasks

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._close_channel()

    # --- the channel -----------------------------------------------------------------------

    def _follow_line(self, task_id: str, nodes: int) -> str:
        offsets = list(self._sink.offsets(task_id))[:nodes]
        offsets += [0] * (nodes - len(offsets))
        return f"F {task_id} {nodes} {','.join(str(o) for o in offsets)}\n"

    def _request(self, line: str) -> bool:
        """Sends a request to the watcher; False when no channel is open (it is then sent, or made
        moot, by the next connection)."""
        with self._send_lock:
            channel = self._channel
            if channel is None:
                return False
            try:
                channel.sendall(line.encode())
                return True
            except (OSError, EOFError, paramiko.SSHException):
                return False

    def _close_channel(self) -> None:
        with self._send_lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.close()

    def _loop(self) -> None:
        failures = 0
        while not self._closed:
            if self.idle:
                self._close_channel()
                self._wake.wait(5.0)
                self._wake.clear()
                continue
            try:
                self._serve()
                failures = 0
            except (LinkError, _ClosedError, OSError, EOFError) as exc:
                if not self._closed and not self.idle:
                    log.info("log stream from %s: %s (connecting again)", self.destination, exc)
            except Exception:
                log.exception("log stream from %s failed (connecting again)", self.destination)
            self._close_channel()
            if self._closed:
                return
            delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
            failures += 1
            self._wake.wait(delay)
            self._wake.clear()

    def _serve(self) -> None:
        channel = self._link.open_channel(self._command)
        self.connects += 1
        with self._send_lock:  # a task followed meanwhile is in this snapshot, or sent after it
            with self._lock:
                tasks = dict(self._tasks)
                stops = set(self._stops)
            self._channel = channel
            lines = [self._follow_line(t, n) for t, n in tasks.items()] + [f"S {t}\n" for t in stops]
            channel.sendall("".join(lines).encode())
        channel.settimeout(1.0)
        reader = _Frames(channel)
        last = time.monotonic()
        while not self._closed:
            if self.idle:
                return
            try:
                header = reader.line()
            except TimeoutError:
                if time.monotonic() - last > SILENCE:
                    raise _ClosedError(f"nothing heard for {SILENCE:.0f} s") from None
                continue
            last = time.monotonic()
            self._frame(header, reader)

    def _frame(self, header: str, reader: _Frames) -> None:
        parts = header.split()
        if not parts:
            return
        kind = parts[0]
        if kind == "L" and len(parts) == 5:
            data = reader.exactly(int(parts[4]))
            self._sink.output(parts[1], int(parts[2]), int(parts[3]), data)
        elif kind == "E" and len(parts) == 5:
            self._sink.exited(parts[1], int(parts[2]), int(parts[3]), parts[4] == "1")
        elif kind == "X" and len(parts) == 4:
            reason = reader.exactly(int(parts[3])).decode("utf-8", "replace")
            self._sink.start_failed(parts[1], int(parts[2]), reason)
        elif kind == "D" and len(parts) == 3:
            with self._lock:
                done = self._drains.get(parts[2])
            if done is not None:
                done.set()
        elif kind != "H":
            raise _ClosedError(f"an unreadable frame from the watcher: {header[:80]!r}")


class _Frames:
    """Lines and exact byte counts from a channel (its timeout raises TimeoutError)."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._buffer = bytearray()

    def _more(self) -> None:
        data = self._channel.recv(1 << 20)
        if not data:
            raise _ClosedError("the channel closed")
        self._buffer += data

    def line(self) -> str:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                text = bytes(self._buffer[:end]).decode("utf-8", "replace")
                del self._buffer[: end + 1]
                return text
            if len(self._buffer) > MAX_HEADER:
                raise _ClosedError("a frame header without its end")
            self._more()

    def exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            try:
                self._more()
            except TimeoutError:
                continue  # the rest of a frame is on its way
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data
