"""One thread per remote provider (Slurm, Mithril) that follows every live task of it.

The poller keeps the tasks being followed (one value each, the provider's own: a Slurm job, a
Mithril bid) and calls the provider's `poll` with all of them at once, at a fixed rate (every
`interval` from the start of the previous poll), and sooner, a quarter interval after the last
poll, when a task was just added (`follow`) or `wake` was called. A poll that fails because the
provider cannot be reached (one of `transient`) is retried next time and logged at most once a
minute; any other failure is logged with its traceback and retried too.

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
    ) -> None:
        self._name = name
        self._interval = interval
        self._poll = poll
        self._transient = transient
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, J] = {}
        self._stop = threading.Event()
        self._soon = threading.Event()
        self._last_warning = -WARN_EVERY
        self.polls = 0
        self._thread = threading.Thread(target=self._loop, name=f"poll-{name}", daemon=True)
        self._thread.start()

    def follow(self, task_id: str, job: J) -> J:
        """Follows the task (once: the job already followed is kept and returned)."""
        with self._lock:
            kept = self._jobs.setdefault(task_id, job)
        self._soon.set()
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

    def warn(self, message: str) -> None:
        """Logs `message` at most once a minute (a provider that stays unreachable)."""
        now = self._clock()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("%s", message)

    def _loop(self) -> None:
        last = self._clock()
        while not self._stop.is_set():
            due = last + (self._interval / 4 if self._soon.is_set() else self._interval)
            now = self._clock()
            if now < due:
                self._stop.wait(min(due - now, self._interval / 4))
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
        self._thread.join(timeout=10)
