"""The task life cycle: every state against every event, and properties of any event sequence."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import ErrorReason
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import (
    TERMINAL_STATES,
    CancelRequested,
    Exited,
    LaunchFailed,
    Lost,
    Preempted,
    Provisioning,
    Started,
    TaskEvent,
    TaskRecord,
    TaskState,
    TimedOut,
    apply,
    deadline_of,
)

T0 = 1_700_000_000.0
NOW = T0 + 50.0
NON_TERMINAL = [TaskState.PENDING, TaskState.PROVISIONING, TaskState.RUNNING]


def record(state: TaskState = TaskState.PENDING, **kw: object) -> TaskRecord:
    started = T0 + 10.0 if state is TaskState.RUNNING else None
    base = TaskRecord(
        task_id="t-abc",
        config=TaskConfig(instance_type="a100", max_run_time_hours=2.0),
        provider="local",
        created_at=T0,
        state=state,
        started_at=started,
    )
    return attrs.evolve(base, **kw)


def terminal_record(state: TaskState) -> TaskRecord:
    return record(state, started_at=T0 + 1, ended_at=T0 + 2, exit_code=1, state_reason="done")


ALL_EVENTS: list[TaskEvent] = [
    Provisioning(),
    Started(),
    Exited(0),
    Exited(3),
    CancelRequested(),
    TimedOut(),
    TimedOut(exit_code=143),
    Preempted("spot reclaimed"),
    LaunchFailed("no such file: train.py"),
    Lost("process vanished while flowd was down"),
]


def ok(rec: TaskRecord, event: TaskEvent, now: float = NOW) -> TaskRecord:
    result = apply(rec, event, now)
    assert isinstance(result, Success), result
    out: TaskRecord = result.unwrap()
    return out


def illegal(rec: TaskRecord, event: TaskEvent) -> None:
    result = apply(rec, event, NOW)
    assert isinstance(result, Failure), result
    error = result.failure()
    assert error.reason is ErrorReason.ILLEGAL_STATE
    assert rec.task_id in error.message and rec.state.value in error.message
    assert type(event).__name__ in error.message


# (state, event) -> (state, exit_code, state_reason) for every legal pair; None for illegal pairs.
EXPECTED: dict[tuple[TaskState, str], tuple[TaskState, int | None, str] | None] = {}
for _s in NON_TERMINAL:
    EXPECTED[(_s, "Exited(0)")] = (TaskState.COMPLETED, 0, "exited with code 0")
    EXPECTED[(_s, "Exited(3)")] = (TaskState.FAILED, 3, "exited with code 3")
    EXPECTED[(_s, "TimedOut()")] = (TaskState.FAILED, None, "TIMEOUT: ran past max_run_time_hours=2")
    EXPECTED[(_s, "TimedOut(143)")] = (TaskState.FAILED, 143, "TIMEOUT: ran past max_run_time_hours=2")
    EXPECTED[(_s, "Preempted")] = (TaskState.PREEMPTED, None, "spot reclaimed")
    EXPECTED[(_s, "LaunchFailed")] = (TaskState.FAILED, None, "could not start: no such file: train.py")
    EXPECTED[(_s, "Lost")] = (TaskState.FAILED, None, "process vanished while flowd was down")
EXPECTED[(TaskState.PENDING, "Provisioning")] = (TaskState.PROVISIONING, None, "")
EXPECTED[(TaskState.PROVISIONING, "Provisioning")] = None
EXPECTED[(TaskState.RUNNING, "Provisioning")] = None
EXPECTED[(TaskState.PENDING, "Started")] = (TaskState.RUNNING, None, "")
EXPECTED[(TaskState.PROVISIONING, "Started")] = (TaskState.RUNNING, None, "")
EXPECTED[(TaskState.RUNNING, "Started")] = None
EXPECTED[(TaskState.PENDING, "CancelRequested")] = (TaskState.CANCELLED, None, "cancelled before it started")
EXPECTED[(TaskState.PROVISIONING, "CancelRequested")] = (TaskState.CANCELLED, None, "cancelled before it started")
EXPECTED[(TaskState.RUNNING, "CancelRequested")] = (TaskState.RUNNING, None, "")  # waits for the exit


def _key(event: TaskEvent) -> str:
    if isinstance(event, Exited):
        return f"Exited({event.exit_code})"
    if isinstance(event, TimedOut):
        return "TimedOut()" if event.exit_code is None else f"TimedOut({event.exit_code})"
    return type(event).__name__


def test_table_covers_every_pair() -> None:
    assert {(s, _key(e)) for s in NON_TERMINAL for e in ALL_EVENTS} == set(EXPECTED)


@pytest.mark.parametrize("state", NON_TERMINAL)
@pytest.mark.parametrize("event", ALL_EVENTS, ids=_key)
def test_transition_table(state: TaskState, event: TaskEvent) -> None:
    rec = record(state)
    expected = EXPECTED[(state, _key(event))]
    if expected is None:
        illegal(rec, event)
        return
    new_state, exit_code, reason = expected
    out = ok(rec, event)
    assert out.state is new_state
    assert out.exit_code == exit_code
    assert out.state_reason == reason
    # Identity and history never change.
    assert (out.task_id, out.config, out.provider, out.created_at) == (rec.task_id, rec.config, rec.provider, T0)
    if new_state.is_terminal:
        assert out.ended_at == NOW
    else:
        assert out.ended_at is None
    if isinstance(event, Started):
        assert out.started_at == NOW
    else:
        assert out.started_at == rec.started_at
    assert out.cancel_requested == (isinstance(event, CancelRequested) and state is TaskState.RUNNING)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
@pytest.mark.parametrize("event", ALL_EVENTS, ids=_key)
def test_terminal_states_absorb_everything(state: TaskState, event: TaskEvent) -> None:
    rec = terminal_record(state)
    if isinstance(event, CancelRequested):
        assert apply(rec, event, NOW) == Success(rec)  # cancelling a finished task is a no-op
    else:
        illegal(rec, event)


@pytest.mark.parametrize("code", [0, 1, 3, 137, 255])
def test_cancel_then_exit_is_cancelled_with_the_exit_code(code: int) -> None:
    running = ok(record(TaskState.RUNNING), CancelRequested(), NOW)
    assert running.state is TaskState.RUNNING and running.cancel_requested
    assert running.ended_at is None
    done = ok(running, Exited(code), NOW + 1)
    assert done.state is TaskState.CANCELLED
    assert done.exit_code == code
    assert done.state_reason == "cancelled by user"
    assert done.ended_at == NOW + 1


def test_cancel_twice_while_running_is_harmless() -> None:
    once = ok(record(TaskState.RUNNING), CancelRequested())
    assert ok(once, CancelRequested()) == once


def test_cancel_then_lost_is_cancelled() -> None:
    running = ok(record(TaskState.RUNNING), CancelRequested())
    done = ok(running, Lost("gone"))
    assert (done.state, done.exit_code, done.state_reason) == (TaskState.CANCELLED, None, "cancelled by user")


def test_killed_by_signal_reason() -> None:
    done = ok(record(TaskState.RUNNING), Exited(137))
    assert done.state is TaskState.FAILED
    assert done.state_reason == "exited with code 137 (killed by signal 9)"


def test_timeout_reason_without_a_limit() -> None:
    rec = record(TaskState.RUNNING, config=TaskConfig())
    done = ok(rec, TimedOut())
    assert done.state is TaskState.FAILED
    assert done.state_reason == "TIMEOUT"


def test_name_and_terminal_flags() -> None:
    assert record().name == "t-abc"
    assert record(config=TaskConfig(name="train")).name == "train"
    assert {s for s in TaskState if s.is_terminal} == TERMINAL_STATES
    assert {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.PREEMPTED} == TERMINAL_STATES
    assert str(TaskState.RUNNING) == "RUNNING"
    assert record(TaskState.FAILED).is_terminal and not record(TaskState.RUNNING).is_terminal


def test_deadline() -> None:
    assert deadline_of(record(TaskState.PENDING)) is None  # not started
    running = ok(record(TaskState.PENDING), Started(), NOW)
    assert deadline_of(running) == NOW + 2.0 * 3600
    assert deadline_of(attrs.evolve(running, config=TaskConfig())) is None  # no limit
    assert deadline_of(attrs.evolve(running, config=TaskConfig(max_run_time_hours=0.5))) == NOW + 1800


# --- properties --------------------------------------------------------------------------------

_events = st.one_of(
    st.just(Provisioning()),
    st.just(Started()),
    st.builds(Exited, st.integers(-1, 300)),
    st.just(CancelRequested()),
    st.builds(TimedOut, st.none() | st.integers(0, 255)),
    st.builds(Preempted, st.text(max_size=5)),
    st.builds(LaunchFailed, st.text(max_size=5)),
    st.builds(Lost, st.text(max_size=5)),
)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(_events, st.floats(min_value=0, max_value=1e5, allow_nan=False)), max_size=12),
    st.none() | st.floats(min_value=0.001, max_value=100),
)
def test_any_event_sequence(steps: list[tuple[TaskEvent, float]], hours: float | None) -> None:
    rec = record(config=TaskConfig(max_run_time_hours=hours))
    now = T0
    was_terminal = False
    for event, dt in steps:
        now += dt  # the shell's clock never goes backwards
        result = apply(rec, event, now)
        if isinstance(result, Failure):
            assert result.failure().reason is ErrorReason.ILLEGAL_STATE
            continue
        new = result.unwrap()
        if was_terminal:
            assert new == rec  # a terminal record never changes again
        rec = new
        was_terminal = rec.state.is_terminal
        assert (rec.ended_at is not None) == rec.state.is_terminal
        if rec.started_at is not None and rec.ended_at is not None:
            assert rec.started_at <= rec.ended_at
        if rec.state is TaskState.RUNNING:
            assert rec.started_at is not None
        if rec.state is TaskState.COMPLETED:
            assert rec.exit_code == 0
        if rec.state is TaskState.FAILED and isinstance(event, TimedOut):
            assert rec.state_reason.startswith("TIMEOUT")
        if rec.state is TaskState.CANCELLED:
            assert isinstance(event, (CancelRequested, Exited, Lost))


# --- both spellings (the Mithril platform's SDK writes states in lower case) ------------------


@given(st.sampled_from(list(TaskState)), st.sampled_from([str.lower, str.upper, str.capitalize]))
def test_a_state_equals_its_name_in_any_case_and_prints_upper_case(state: TaskState, case: object) -> None:
    assert callable(case)
    spelled = case(state.value)
    assert state == spelled and spelled == state and (state != spelled) is False
    assert TaskState(spelled) is state
    assert str(state) == f"{state}" == state.value == state.value.upper()
    assert hash(state) == hash(state.value)  # sets and dicts keyed by states keep working
    others = [s for s in TaskState if s is not state]
    assert all(state != case(o.value) and state != o for o in others)


def test_what_still_differs_from_lower_case_states() -> None:
    assert TaskState.COMPLETED not in {"completed"}  # hashing follows the printed (upper-case) name
    assert TaskState.COMPLETED.value != "completed"
    assert TaskState.COMPLETED in {"COMPLETED"} and TaskState.COMPLETED in ("completed",)
    assert TaskState.COMPLETED != 1
    with pytest.raises(ValueError):
        TaskState("done")
