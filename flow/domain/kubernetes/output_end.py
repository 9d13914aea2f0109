"""Where a Kubernetes task's output ends, told in-band, so none of it is lost at the container's end.

The container runtime drops output still in flight when a container's main process exits
(containerd up to at least 1.7 closes the pipes at the task's delete: a program that writes 1.3 MB
and exits loses its last 70-130 KB, in `kubectl logs` too). So the program runs under a small
shell (manifests.WRAPPER) that, once the program has ended, writes an end mark on stdout and one
on stderr (two pipes, two copies: either may arrive first) and waits, at most DRAIN_WAIT_SECONDS,
until flowd has read both through the log API and says so by creating OUTPUT_IN in the container.
Only then does the container end.

flowd strips the marks from what it mirrors (MarkScan): the task's log is exactly what the program
wrote. A mark split across chunks is held back only while the bytes seen so far could still be one
(they start with the record separator, \\x1e, which progress bars and text do not end with), so a
live reader never waits on ordinary output.
"""

from __future__ import annotations

from typing import Final

from attrs import evolve, frozen

OUT_DIR: Final = "/flow/out"
OUTPUT_IN: Final = f"{OUT_DIR}/output-in"  # flowd creates it once both marks have reached it
DRAIN_WAIT_SECONDS: Final = 30  # the wrapper's wait for flowd (flowd down, or a cluster without exec)
STREAMS: Final = ("stdout", "stderr")


_MARK: Final = "flow: the {stream} of {task} ends here"


def end_marks(task_id: str) -> tuple[bytes, ...]:
    """The marks the wrapper writes after the program (one per stream, in STREAMS' order)."""
    return tuple(("\x1e" + _MARK.format(stream=s, task=task_id) + "\n").encode() for s in STREAMS)


def mark_format() -> str:
    """An end mark as a printf format, the stream and the task id its two %s (for the wrapper)."""
    return "\\036" + _MARK.format(stream="%s", task="%s") + "\\n"


@frozen
class MarkScan:
    """What a scan of one pod's log has seen: the marks still to come and the bytes held back
    because they may be the start of one. `stripped`: bytes of marks left out so far (the log API
    counts them; the mirrored file does not)."""

    marks: tuple[bytes, ...]
    seen: frozenset[int] = frozenset()
    held: bytes = b""
    stripped: int = 0

    @property
    def complete(self) -> bool:
        """Every mark has come: all the program wrote is in."""
        return len(self.seen) == len(self.marks)


def scan(state: MarkScan, chunk: bytes) -> tuple[MarkScan, bytes]:
    """The next chunk of the log: the new state and the bytes to mirror (marks left out)."""
    data = state.held + chunk
    seen, stripped = set(state.seen), state.stripped
    for i, mark in enumerate(state.marks):
        if i in seen:
            continue
        at = data.find(mark)
        if at >= 0:
            data = data[:at] + data[at + len(mark) :]
            seen.add(i)
            stripped += len(mark)
    pending = [m for i, m in enumerate(state.marks) if i not in seen]
    keep = _partial_mark_at_end(data, pending)
    held = data[len(data) - keep :] if keep else b""
    return evolve(state, seen=frozenset(seen), held=held, stripped=stripped), data[: len(data) - keep]


def release(state: MarkScan) -> tuple[MarkScan, bytes]:
    """The stream has ended for good: the held-back bytes were output after all."""
    return evolve(state, held=b""), state.held


def _partial_mark_at_end(data: bytes, pending: list[bytes]) -> int:
    """The length of the end of `data` that is the start of a pending mark (0: none). A mark holds
    \x1e only as its first byte, so only the end from the last \x1e can be one."""
    if not pending:
        return 0
    start = data.rfind(b"\x1e", max(0, len(data) - max(len(m) for m in pending) + 1))
    if start >= 0 and any(m.startswith(data[start:]) for m in pending):
        return len(data) - start
    return 0
