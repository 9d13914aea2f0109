"""When a follower waits for more output before sending (flowd.logs.worth_settling)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowd.logs import SETTLE_BYTES, worth_settling


@given(st.integers(min_value=0, max_value=4 * SETTLE_BYTES), st.booleans(), st.booleans())
def test_only_a_small_read_of_a_live_task_waits_and_never_twice(available: int, final: bool, settled: bool) -> None:
    waits = worth_settling(available, final, settled)
    if final:  # the task has ended: everything it wrote goes out at once
        assert not waits
    if settled:  # it has just waited: whatever is there now is sent, so output is never held
        assert not waits
    if available == 0 or available >= SETTLE_BYTES:  # nothing to hold, or enough for a message
        assert not waits
    if not final and not settled and 0 < available < SETTLE_BYTES:
        assert waits
