"""Follows the tasks of one machine and pushes what changes to flowd, over the SSH channel it runs
in (the Mithril provider starts it once per instance it reaches: `python3 -c <this file> TAG`).
Standard library only: it runs on the instance with the system's python3.

A task's files on the instance are under ~/.flow/tasks/<task>/nodes/<K>/ (K: the node's rank;
see flow.domain.mithril.startup_script): output.log, exit_status, timed_out, start_failed. The
watcher looks at the files of every task it follows a few times a second (more often while they
change) and sends each byte of output once, from where flowd says its copy ends, then the exit
record once the output before it is all sent. So one connection per instance carries every
task's logs and exits as they happen, whatever the number of tasks, and a reconnect resumes from
flowd's copies without losing or repeating a byte.

Requests, one line each on stdin:
    F <task> <nodes> <offset>,...   follow the task's nodes 0..nodes-1 present here, node K's
                                    output from byte offset K
    U <task>                        stop following it
    S <task>                        ask the task's command to stop (creates nodes/<K>/stop: the
                                    task's own script sends SIGTERM to its process group)
    D <task> <token>                send everything there is now, then answer D <task> <token>
Frames on stdout:
    L <task> <node> <offset> <length>\\n<bytes>    output of a node, from byte offset
    E <task> <node> <code> <timed_out 0|1>\\n      a node's exit record (after its whole output)
    X <task> <node> <length>\\n<bytes>             a node could not start: why (UTF-8)
    D <task> <token>\\n                            a drain is done
    H\\n                                           a heartbeat, every HEARTBEAT seconds
The watcher ends when stdin closes (flowd closed the channel, or the connection is gone).
"""

from __future__ import annotations

import os
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

TASKS = os.path.join(os.path.expanduser("~"), ".flow", "tasks")
OUTPUT = "output.log"
EXIT = "exit_status"
TIMED_OUT = "timed_out"
START_FAILED = "start_failed"
STOP = "stop"
CHUNK = 1 << 20  # bytes of output per frame
BUDGET = 8 << 20  # bytes of one node's output per pass, so one chatty task cannot starve the rest
FAST = 0.05  # seconds between passes while something changes
SLOW = 0.2  # ... once nothing has changed for QUIET seconds
QUIET = 1.0
HEARTBEAT = 10.0


class Node:
    def __init__(self, task: str, rank: int, offset: int) -> None:
        self.task = task
        self.rank = rank
        self.offset = offset
        self.ended = False  # exit record or start failure sent

    def directory(self) -> str:
        nodes = os.path.join(TASKS, self.task, "nodes", str(self.rank))
        legacy = os.path.join(TASKS, self.task)  # before per-node directories: node 0 only
        if self.rank == 0 and not os.path.isdir(nodes) and os.path.exists(os.path.join(legacy, OUTPUT)):
            return legacy
        return nodes


class Watcher:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lock = threading.Lock()  # the followed nodes
        self.write_lock = threading.Lock()
        self.nodes: dict[str, list[Node]] = {}
        self.drains: list[tuple[str, str]] = []
        self.wake = threading.Event()
        self.closed = threading.Event()
        self.changed_at = time.monotonic()

    # --- frames --------------------------------------------------------------------------

    def send(self, header: str, payload: bytes = b"") -> None:
        with self.write_lock:
            self.out.write(header.encode() + b"\n" + payload)
            self.out.flush()

    # --- requests ------------------------------------------------------------------------

    def request(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        kind, args = parts[0], parts[1:]
        with self.lock:
            if kind == "F" and len(args) == 3:
                offsets = [int(x) for x in args[2].split(",") if x.strip().isdigit()]
                count = int(args[1])
                self.nodes[args[0]] = [Node(args[0], k, offsets[k] if k < len(offsets) else 0) for k in range(count)]
            elif kind == "U" and len(args) == 1:
                self.nodes.pop(args[0], None)
            elif kind == "S" and len(args) == 1:
                for node in self.nodes.get(args[0], []):
                    here = node.directory()
                    if os.path.isdir(here):
                        with open(os.path.join(here, STOP), "a"):
                            pass
            elif kind == "D" and len(args) == 2:
                self.drains.append((args[0], args[1]))
        self.wake.set()

    def read_requests(self, source: BinaryIO) -> None:
        for raw in source:
            try:
                self.request(raw.decode("utf-8", "replace"))
            except (OSError, ValueError):
                continue
        self.closed.set()
        self.wake.set()

    # --- one pass over the nodes ---------------------------------------------------------

    def follow(self, node: Node) -> bool:
        """Sends what is new about one node; True when something was."""
        if node.ended:
            return False
        here = node.directory()
        code = _read(os.path.join(here, EXIT))  # first: the output before it is then complete
        failed = _read(os.path.join(here, START_FAILED))
        sent = self.output(node, os.path.join(here, OUTPUT))
        if code is not None and code.strip().lstrip("-").isdigit():
            timed_out = 1 if os.path.exists(os.path.join(here, TIMED_OUT)) else 0
            self.send(f"E {node.task} {node.rank} {int(code.strip())} {timed_out}")
            node.ended = True
            return True
        if failed is not None:
            reason = failed.strip().encode("utf-8", "replace")
            self.send(f"X {node.task} {node.rank} {len(reason)}", reason)
            node.ended = True
            return True
        return sent

    def output(self, node: Node, path: str) -> bool:
        try:
            size = os.stat(path).st_size
        except OSError:
            return False
        if size <= node.offset:
            return False
        budget = BUDGET
        with open(path, "rb") as handle:
            handle.seek(node.offset)
            while budget > 0:
                data = handle.read(min(CHUNK, budget))
                if not data:
                    break
                self.send(f"L {node.task} {node.rank} {node.offset} {len(data)}", data)
                node.offset += len(data)
                budget -= len(data)
        return True

    def run_pass(self) -> None:
        with self.lock:
            nodes = [node for group in self.nodes.values() for node in group]
            drains, self.drains = self.drains, []
        changed = False
        for node in nodes:
            changed = self.follow(node) or changed
        for task, token in drains:
            with self.lock:
                mine = list(self.nodes.get(task, []))
            for node in mine:  # until nothing more is there
                while self.follow(node):
                    pass
            self.send(f"D {task} {token}")
        if changed:
            self.changed_at = time.monotonic()

    def run(self) -> None:
        beat = time.monotonic()
        while not self.closed.is_set():
            self.run_pass()
            now = time.monotonic()
            if now - beat >= HEARTBEAT:
                self.send("H")
                beat = now
            self.wake.wait(FAST if now - self.changed_at < QUIET else SLOW)
            self.wake.clear()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def main() -> int:
    watcher = Watcher(sys.stdout.buffer)
    reader = threading.Thread(target=watcher.read_requests, args=(sys.stdin.buffer,), daemon=True)
    reader.start()
    try:
        watcher.run()
    except (BrokenPipeError, OSError):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
