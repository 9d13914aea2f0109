"""Who waits for what: long-lived calls (WaitTask, log followers) register their own Event under
the keys they wait on (a task id, a log file), and whoever changes that thing fires the key.

Each call has its own Event, so one change wakes exactly the calls that wait for it (no thundering
herd through one condition), and the RPC layer can end a call at once by setting its Event when
the client goes away.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager


class Wakeups:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, set[threading.Event]] = {}
        self._closed = False

    @contextmanager
    def waiting(self, event: threading.Event, keys: Iterable[Hashable]) -> Iterator[None]:
        """`event` is set whenever one of `keys` fires, while the block runs."""
        keys = list(keys)
        with self._lock:
            if self._closed:
                event.set()
            for key in keys:
                self._waiting.setdefault(key, set()).add(event)
        try:
            yield
        finally:
            with self._lock:
                for key in keys:
                    events = self._waiting.get(key)
                    if events is not None:
                        events.discard(event)
                        if not events:
                            del self._waiting[key]

    def fire(self, key: Hashable) -> None:
        with self._lock:
            events = list(self._waiting.get(key, ()))
        for event in events:
            event.set()

    def waiting_keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._waiting)

    def close(self) -> None:
        """The daemon stops: every waiter wakes, now and from now on."""
        with self._lock:
            self._closed = True
            events = [e for group in self._waiting.values() for e in group]
        for event in events:
            event.set()

    @property
    def closed(self) -> bool:
        return self._closed


class Waiter:
    """A long-lived call's own wake-up: `event` is set by what the call waits for (through
    Wakeups) and by `release`, which the RPC layer calls when the client goes away. Callers clear
    `event` before they look at what they wait for, so no wake-up is ever lost."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.gone = threading.Event()  # set only by release: for pauses that no change may cut short

    def release(self) -> None:
        self.gone.set()
        self.event.set()

    @property
    def released(self) -> bool:
        return self.gone.is_set()
