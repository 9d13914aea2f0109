"""A task that runs again (TaskConfig.max_retries): preempted, or asking to with exit status 75,
it is launched anew by the engine under the same task id, its earlier runs kept in its history,
until its retries are spent; a cancel or a refusal ends it for good."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from daemon.memory_provider import MemoryProvider
from daemon.test_engine import QUOTA, Rig
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import REQUEUE_EXIT_STATUS, TaskState
from flowd.store import Store


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.close()


def _submit(rig: Rig, retries: int) -> str:
    created = rig.engine.create(TaskConfig(command=("true",), max_retries=retries), "", False, "")
    task_id = created.unwrap().task_id
    rig.provider.start(task_id)
    return task_id


def _launches(provider: MemoryProvider, task_id: str) -> int:
    return provider.launched.count(task_id)


def _run_again(rig: Rig, task_id: str, launches: int) -> None:
    """Waits for the engine's new launch of the task, then starts it."""
    wait_until(lambda: _launches(rig.provider, task_id) == launches, 30)
    wait_until(lambda: rig.engine.get(task_id).unwrap().state is TaskState.PENDING, 30)
    rig.provider.start(task_id)


def test_a_preempted_task_runs_again_under_its_id_until_its_retries_are_spent(rig: Rig) -> None:
    task_id = _submit(rig, retries=2)
    rig.provider.preempt(task_id, "spot capacity reclaimed")
    _run_again(rig, task_id, 2)
    record = rig.engine.get(task_id).unwrap()
    assert record.state is TaskState.RUNNING
    assert [(a.state, a.state_reason) for a in record.attempts] == [(TaskState.PREEMPTED, "spot capacity reclaimed")]
    rig.provider.preempt(task_id)
    _run_again(rig, task_id, 3)
    rig.provider.preempt(task_id, "third time")
    final = rig.engine.get(task_id).unwrap()
    assert final.state is TaskState.PREEMPTED and final.state_reason == "third time"
    assert [a.state for a in final.attempts] == [TaskState.PREEMPTED, TaskState.PREEMPTED]
    assert _launches(rig.provider, task_id) == 3
    stored = Store(rig.root / "state.db").get(task_id)  # the history is saved, not only in memory
    assert stored is not None and stored.record.attempts == final.attempts


def test_a_command_asks_to_run_again_with_exit_status_75(rig: Rig) -> None:
    task_id = _submit(rig, retries=1)
    rig.provider.end(task_id, REQUEUE_EXIT_STATUS)
    _run_again(rig, task_id, 2)
    rig.provider.end(task_id, 0)
    final = rig.engine.get(task_id).unwrap()
    assert final.state is TaskState.COMPLETED and final.exit_code == 0
    (attempt,) = final.attempts
    assert (attempt.state, attempt.exit_code) == (TaskState.FAILED, REQUEUE_EXIT_STATUS)
    assert attempt.started_at is not None and attempt.started_at <= attempt.ended_at


def test_without_retries_a_preemption_or_75_is_the_end(rig: Rig) -> None:
    preempted = _submit(rig, retries=0)
    rig.provider.preempt(preempted)
    asked = _submit(rig, retries=0)
    rig.provider.end(asked, REQUEUE_EXIT_STATUS)
    assert rig.engine.get(preempted).unwrap().state is TaskState.PREEMPTED
    assert rig.engine.get(asked).unwrap().state is TaskState.FAILED
    assert _launches(rig.provider, preempted) == _launches(rig.provider, asked) == 1


def test_other_ends_never_run_again(rig: Rig) -> None:
    task_id = _submit(rig, retries=3)
    rig.provider.end(task_id, 1)
    record = rig.engine.get(task_id).unwrap()
    assert (record.state, record.attempts) == (TaskState.FAILED, ())


def test_a_cancelled_task_does_not_run_again(rig: Rig) -> None:
    task_id = _submit(rig, retries=3)
    rig.engine.cancel(task_id)  # the memory provider reports the end (Lost) of a cancelled run
    assert rig.engine.get(task_id).unwrap().state is TaskState.CANCELLED
    again = _submit(rig, retries=3)
    rig.provider.preempt(again)
    wait_until(lambda: _launches(rig.provider, again) == 2, 30)
    assert rig.engine.cancel(again).unwrap().state is TaskState.CANCELLED  # while PENDING to run again
    assert rig.engine.get(again).unwrap().attempts[0].state is TaskState.PREEMPTED


def test_a_refused_new_run_ends_the_task_failed_with_the_refusal(rig: Rig) -> None:
    task_id = _submit(rig, retries=1)
    rig.provider.refusal = QUOTA
    rig.provider.preempt(task_id)
    wait_until(lambda: rig.engine.get(task_id).unwrap().is_terminal, 30)
    record = rig.engine.get(task_id).unwrap()
    assert record.state is TaskState.FAILED and QUOTA.message in record.state_reason
    assert [a.state for a in record.attempts] == [TaskState.PREEMPTED]
