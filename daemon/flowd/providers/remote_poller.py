"""One thread per remote provider (Slurm, Mithril) that follows every live task of it.

The poller keeps the tasks being followed (one value each, the provider's own: a Slurm job, a
Mithril bid) and calls the provider's `poll` with all of them at once, at a fixed rate (every
`interval` from the start of the previous poll), and sooner, a quarter interval after the last
poll, when a task was just added (`follow`) or `wake` was called. With `fast_start`, a task just
added is looked at sooner still: at once, then `fast_start` seconds later, then after twice as
long each time, until the interval is reached (a Slurm job that can run starts within
milliseconds of sbatch: a few quick looks see it, where the next poll could be an interval
away). A poll that fails because the provider cannot be reached (one of `transient`) is retried
next time and logged at most once a minute; any other failure is logged with its traceback and
retried too.

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
        self._backoff: float | None = None  # the next quick look's delay after a follow
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
            if self._fast_start is not None:
                self._backoff = 0.0  # a first look at once, then fast_start, 2 x fast_start, ...
        self._soon.set()
        self._changed.set()
        return kept

    def forget(self, task_id: str) -> J | None:
        with self._lock:
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
        with self._lock:
            quick = self._backoff
        if quick is not None and quick < self._interval:
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
            with self._lock:
                if self._backoff is not None:
                    grown = max(self._backoff * 2, self._fast_start or 0.0)
                    self._backoff = grown if grown < self._interval else None
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
