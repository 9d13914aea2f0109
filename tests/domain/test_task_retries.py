"""run_again: which ends of a run are not the task's end, and the history it keeps."""

from __future__ import annotations

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import (
    REQUEUE_EXIT_STATUS,
    Exited,
    LaunchFailed,
    Lost,
    Preempted,
    Started,
    TaskEvent,
    TaskRecord,
    TaskState,
    TimedOut,
    apply,
    run_again,
)

ENDS = st.one_of(
    st.builds(Exited, exit_code=st.sampled_from([0, 1, REQUEUE_EXIT_STATUS, 143])),
    st.builds(TimedOut, exit_code=st.sampled_from([None, REQUEUE_EXIT_STATUS, 143])),
    st.builds(Preempted, reason=st.text(max_size=5)),
    st.builds(LaunchFailed, reason=st.just("no")),
    st.builds(Lost, reason=st.just("gone")),
)


@given(retries=st.integers(0, 4), ends=st.lists(ENDS, min_size=1, max_size=8))
def test_a_task_runs_at_most_max_retries_more_times_and_only_after_preemption_or_75(
    retries: int, ends: list[TaskEvent]
) -> None:
    record = TaskRecord("t-1", TaskConfig(command="x", max_retries=retries), "local", 0.0)
    clock = 1.0
    for end in ends:
        record = apply(record, Started(), clock).unwrap()
        ended = apply(record, end, clock + 1).unwrap()
        again = run_again(record, ended)
        asked = ended.state is TaskState.PREEMPTED or ended.exit_code == REQUEUE_EXIT_STATUS
        assert (again is not None) == (asked and len(record.attempts) < retries)
        if again is None:
            assert ended.attempts == record.attempts
            record = ended
            break
        assert again.state is TaskState.PENDING and again.exit_code is None and again.started_at is None
        assert again.attempts[-1].state is ended.state and again.attempts[-1].ended_at == clock + 1
        record = again
        clock += 2
    assert len(record.attempts) <= retries


def test_a_cancel_requested_run_never_runs_again() -> None:
    record = TaskRecord("t-1", TaskConfig(command="x", max_retries=3), "local", 0.0, state=TaskState.RUNNING)
    cancelling = evolve(record, cancel_requested=True)
    ended = apply(cancelling, Exited(exit_code=REQUEUE_EXIT_STATUS), 1.0).unwrap()
    assert ended.state is TaskState.CANCELLED and run_again(cancelling, ended) is None
