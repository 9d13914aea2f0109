"""One thread per remote provider (Slurm, Mithril) that follows every live task of it.

The poller keeps the tasks being followed (one value each, the provider's own: a Slurm job, a
Mithril bid) and calls the provider's `poll` with all of them at once, at a fixed rate (every
`interval` from the start of the previous poll), and sooner, a quarter interval after the last
poll, when a task was just added (`follow`) or `wake` was called. With `fast_start`, a task just
added is looked at sooner still, until the provider says it has `settled` (a Slurm job seen
running or ended): after a tenth of the time the newest such task has waited, at least
`fast_start` (`quick_delay`), until that reaches the interval or QUICK_WINDOW has passed. A
Slurm job that can run starts within milliseconds to a second of sbatch; a look every poll
interval would add up to a whole interval to that, and these looks add at most a tenth (or
`fast_start`). A poll that fails
because the provider cannot be reached (one of `transient`) is retried next time and logged at
most once a minute; any other failure is logged with its traceback and retried too.

What a poll does with a task's output is the same for every remote provider: the new bytes of the
remote log are appended to the task's local copy at exactly its current size
(`TaskDir.append_at`), so every byte is there once, and flowd streams the local copy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Generic, TypeVar

log = logging.getLogger(__name__)

J = TypeVar("J")
WARN_EVERY: Final = 60.0
QUICK_FRACTION: Final = 0.1  # a task not yet settled is looked at again after this part of its wait
# Quick looks end this long after the newest follow: a job still queued then may wait for hours,
# and the regular interval is soon enough (about 35 looks in all, one query each for all tasks).
QUICK_WINDOW: Final = 2.0


def quick_delay(interval: float, fast_start: float, newest_wait: float) -> float | None:
    """How soon to look again while a task followed `newest_wait` seconds ago has not settled:
    None once that is no sooner than the interval, or the quick looks' window is over."""
    delay = max(fast_start, newest_wait * QUICK_FRACTION)
    return delay if delay < interval and newest_wait < QUICK_WINDOW else None


class RemotePoller(Generic[J]):
    def __init__(
        self,
        name: str,
        interval: float,
        poll: Callable[[list[J]], None],
        transient: tuple[type[Exception], ...],
        clock: Callable[[], float] = time.monotonic,
        fast_start: float | None = None,
    ) -> None:
        self._name = name
        self._fast_start = fast_start
        self._fresh: dict[str, float] = {}  # task id -> when it was followed, until it settles
        self._interval = interval
        self._poll = poll
        self._transient = transient
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, J] = {}
        self._stop = threading.Event()
        self._soon = threading.Event()
        self._changed = threading.Event()  # what the loop waits on: a follow, a wake, the end
        self._last_warning = -WARN_EVERY
        self.polls = 0
        self._thread = threading.Thread(target=self._loop, name=f"poll-{name}", daemon=True)
        self._thread.start()

    def follow(self, task_id: str, job: J) -> J:
        """Follows the task (once: the job already followed is kept and returned)."""
        with self._lock:
            kept = self._jobs.setdefault(task_id, job)
            if self._fast_start is not None and kept is job:
                self._fresh[task_id] = self._clock()
        self._soon.set()
        self._changed.set()
        return kept

    def settled(self, task_id: str) -> None:
        """The task needs no quick looks any more (its job was seen running, or ended)."""
        with self._lock:
            self._fresh.pop(task_id, None)

    def forget(self, task_id: str) -> J | None:
        with self._lock:
            self._fresh.pop(task_id, None)
            return self._jobs.pop(task_id, None)

    def get(self, task_id: str) -> J | None:
        with self._lock:
            return self._jobs.get(task_id)

    def jobs(self) -> list[J]:
        with self._lock:
            return list(self._jobs.values())

    def wake(self) -> None:
        self._soon.set()
        self._changed.set()

    def warn(self, message: str) -> None:
        """Logs `message` at most once a minute (a provider that stays unreachable)."""
        now = self._clock()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("%s", message)

    def _delay(self) -> float:
        if self._fast_start is not None:
            with self._lock:
                newest = max(self._fresh.values(), default=None)
                quick = (
                    None if newest is None else quick_delay(self._interval, self._fast_start, self._clock() - newest)
                )
                if quick is None:
                    self._fresh.clear()  # all of them waited long enough for the interval to do
            if quick is not None:
                return quick
        return self._interval / 4 if self._soon.is_set() else self._interval

    def _loop(self) -> None:
        last = self._clock()
        while not self._stop.is_set():
            delay = self._delay()
            due = last + delay
            now = self._clock()
            if now < due:
                self._changed.wait(min(due - now, self._interval / 4))
                self._changed.clear()
                continue
            self._soon.clear()
            last = now
            jobs = self.jobs()
            if not jobs:
                continue
            self.polls += 1
            try:
                self._poll(jobs)
            except self._transient as exc:
                self.warn(f"provider {self._name}: status query failed (retrying): {exc}")
            except Exception:
                log.exception("provider %s: status query failed", self._name)

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout=10)
