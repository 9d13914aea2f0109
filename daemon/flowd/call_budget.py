"""The budget of long-lived calls, so that they can never starve the short ones.

Each RPC holds one of the server's worker threads while it lasts. Log followers, WaitTask and
exec sessions last as long as their client wants; health, GetTask, CreateTask and the rest last
milliseconds. The server's pool has room for LONG_CALLS long calls plus SHORT_CALLS others, and a
long call is admitted only while fewer than LONG_CALLS are open (else it is refused at once with
RESOURCE_EXHAUSTED, saying so), so a short call always finds a free worker. A long call that
waits does not spin: it sleeps on its own Event (flowd.wakeups.Waiter), woken by what it waits
for, and released at once when its client goes away.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from flow.domain.errors import DomainError, ErrorReason

LONG_CALLS: Final = 4096
SHORT_CALLS: Final = 128
LIMIT_ENV: Final = "FLOW_DAEMON_LONG_CALLS"  # another budget for this flowd (e.g. a small machine)


def long_call_limit(env: Mapping[str, str]) -> int:
    """The budget of long-lived calls on the Unix socket: LONG_CALLS, or $FLOW_DAEMON_LONG_CALLS."""
    text = env.get(LIMIT_ENV, "")
    return max(1, min(int(text), 65536)) if text.isascii() and text.isdigit() else LONG_CALLS


class CallBudget:
    def __init__(self, limit: int = LONG_CALLS) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def admitted(self) -> Iterator[bool]:
        """Whether the call may go on; its slot is held until the block ends."""
        got = self._slots.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._slots.release()

    def refusal(self) -> DomainError:
        return DomainError(
            reason=ErrorReason.QUOTA_EXCEEDED,
            message=(
                f"flowd already serves {self.limit} long-lived calls (log followers, waits, exec sessions); "
                "this one was refused so that other calls keep being answered"
            ),
            suggestions=("close log followers and waits you no longer need", "then call again"),
        )
