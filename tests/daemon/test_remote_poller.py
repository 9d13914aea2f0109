"""The remote poller's quick looks at a task just followed (Slurm: a job just submitted)."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from conftest import wait_until
from flowd.providers.remote_poller import QUICK_FRACTION, QUICK_WINDOW, RemotePoller, quick_delay

seconds = st.floats(min_value=0.0, max_value=1e5, allow_nan=False)


@given(
    interval=st.floats(min_value=0.01, max_value=3600), fast_start=st.floats(min_value=0.001, max_value=1), wait=seconds
)
def test_a_task_not_settled_is_looked_at_after_a_tenth_of_its_wait(
    interval: float, fast_start: float, wait: float
) -> None:
    delay = quick_delay(interval, fast_start, wait)
    wanted = max(fast_start, wait * QUICK_FRACTION)
    if wanted >= interval or wait >= QUICK_WINDOW:
        assert delay is None  # the regular poll comes as soon, or the job may wait for hours
    else:
        assert delay == wanted


def test_a_task_just_followed_is_looked_at_quickly_until_it_settles() -> None:
    """An hour's poll interval: without quick looks the first poll after follow would be 15
    minutes away; with them, the task is looked at again and again until it settles."""
    polls: list[list[str]] = []
    seen = threading.Event()

    def poll(jobs: list[str]) -> None:
        polls.append(jobs)
        if len(polls) == 5:
            poller.settled("t1")
            seen.set()

    poller: RemotePoller[str] = RemotePoller("test", 3600.0, poll, (OSError,), fast_start=0.001)
    try:
        poller.follow("t1", "job-1")
        wait_until(seen.is_set, timeout=60)
        assert all(jobs == ["job-1"] for jobs in polls[:5])
        poller.forget("t1")
    finally:
        poller.close()


def test_without_fast_start_a_follow_brings_the_next_poll_to_a_quarter_interval() -> None:
    polls: list[list[str]] = []
    poller: RemotePoller[str] = RemotePoller("test", 0.4, polls.append, (OSError,))
    try:
        poller.follow("t1", "job-1")
        wait_until(lambda: len(polls) >= 1, timeout=60)
        assert polls[0] == ["job-1"]
    finally:
        poller.close()
