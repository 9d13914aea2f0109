"""Dependencies held by flowd, in process: the engine and its DependencyHolds against providers
that implement the contract in memory (memory_provider.py), one of them scheduling dependencies
among its own tasks natively as Slurm does. Each condition, cascades, a diamond, a 100-task
chain, priority order, start_after, a restart with dependents pending, what a native provider
holds and what flowd holds for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from returns.result import Failure

from conftest import wait_until
from daemon.memory_provider import MemoryProvider, MemoryTask
from flow.domain.errors import DomainError, ErrorReason
from flow.domain.task.config import TaskConfig
from flow.domain.task.dependencies import Dependency
from flow.domain.task.lifecycle import TaskRecord, TaskState
from flow.home import FlowHome
from flowd.blobs import BlobStore
from flowd.engine import TaskEngine
from flowd.lifecycle import TaskLifecycle
from flowd.log_stream import LogStreams, LogWatch
from flowd.provider_registry import ProviderRegistry
from flowd.providers.base import Capabilities, Forgotten, Launched, Reporter
from flowd.store import Store
from flowd.wakeups import Wakeups

DEADLINE = 60.0


class NativeProvider(MemoryProvider):
    """Holds tasks on conditions among its own tasks itself, as Slurm does with --dependency."""

    kind = "native"

    def __init__(self, root: Path, reporter: Reporter, name: str = "native") -> None:
        super().__init__(root, reporter, name)
        self.capabilities = Capabilities(offers=self, results=self, dependencies=self)
        self.after: dict[str, list[tuple[Dependency, str]]] = {}
        self.forget_next = False

    def native_id(self, state: MemoryTask) -> str | None:
        return f"job-{state.task_id}"

    def launch_after(self, record: TaskRecord, after: Sequence[tuple[Dependency, str]]) -> Launched[Any] | Forgotten:
        if self.forget_next:
            self.forget_next = False
            return Forgotten()
        self.after[record.task_id] = list(after)
        return self.launch(record)


class Rig:
    def __init__(self, root: Path, without: str = "") -> None:
        self.root = root
        self.store = Store(root / "state.db")
        self.wakeups = Wakeups()
        self.lifecycle = TaskLifecycle(self.store, self.wakeups)
        blobs = BlobStore(root / "blobs")
        self.providers = ProviderRegistry(FlowHome(root=root), self.lifecycle.report, blobs, "memory")
        self.memory = MemoryProvider(root / "tasks", self.lifecycle.report)
        self.other = MemoryProvider(root / "tasks", self.lifecycle.report, name="other")
        self.native = NativeProvider(root / "tasks", self.lifecycle.report)
        for provider in (self.memory, self.other, self.native):
            if provider.name != without:  # a provider no longer configured (after a restart)
                self.providers.add(provider, None)
        self.watch = LogWatch(self.wakeups)
        streams = LogStreams(self.wakeups, self.watch, self.lifecycle.is_live)
        self.engine = TaskEngine(self.store, self.lifecycle, self.providers, blobs, streams, self.wakeups)

    def run(self, *after: object, provider: str = "", **config: Any) -> str:
        made = self.engine.create(TaskConfig(command=("true",), depends_on=list(after), **config), "", False, provider)
        return made.unwrap().task_id

    def get(self, task_id: str) -> TaskRecord:
        return self.engine.get(task_id).unwrap()

    def state(self, task_id: str) -> TaskState:
        return self.get(task_id).state

    def provider_of(self, task_id: str) -> MemoryProvider:
        return {"memory": self.memory, "other": self.other, "native": self.native}[self.get(task_id).provider]

    def complete(self, task_id: str, code: int = 0) -> None:
        provider = self.provider_of(task_id)
        provider.start(task_id)
        provider.end(task_id, code)

    def launched(self, task_id: str) -> bool:
        return task_id in self.provider_of(task_id).launched

    def wait_launched(self, task_id: str) -> None:
        wait_until(lambda: self.launched(task_id), DEADLINE)

    def wait_state(self, task_id: str, state: TaskState) -> TaskRecord:
        wait_until(lambda: self.state(task_id) is state, DEADLINE)
        return self.get(task_id)

    def close(self) -> None:
        self.engine.close()
        self.watch.close()
        self.store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.close()


# --- each condition -----------------------------------------------------------------------------


def test_afterok_waits_for_completion_and_says_so(rig: Rig) -> None:
    a = rig.run()
    b = rig.run(a)
    held = rig.get(b)
    assert held.state is TaskState.PENDING and not rig.launched(b)
    assert held.state_reason == f"waiting for {a} to complete (afterok)"
    rig.complete(a)
    rig.wait_launched(b)
    assert rig.get(b).state_reason == ""


def test_afterok_of_a_failed_task_cancels_the_dependent_naming_it(rig: Rig) -> None:
    a = rig.run()
    b = rig.run(a)
    rig.complete(a, 3)
    done = rig.wait_state(b, TaskState.CANCELLED)
    assert done.state_reason == f"dependency {a} ended FAILED (afterok)"
    assert not rig.launched(b)


def test_afterany_starts_after_any_end(rig: Rig) -> None:
    a = rig.run()
    b = rig.run(f"{a}:afterany")
    rig.complete(a, 1)
    rig.wait_launched(b)


def test_afternotok_starts_after_a_failure_and_is_cancelled_by_a_success(rig: Rig) -> None:
    a, x = rig.run(), rig.run()
    on_failure = rig.run(f"{a}:afternotok")
    never = rig.run(f"{x}:afternotok")
    rig.complete(a, 2)
    rig.complete(x, 0)
    rig.wait_launched(on_failure)
    assert rig.wait_state(never, TaskState.CANCELLED).state_reason == f"dependency {x} COMPLETED (afternotok)"


def test_after_starts_once_the_dependency_starts(rig: Rig) -> None:
    a = rig.run()
    b = rig.run(f"{a}:after")
    assert not rig.launched(b)
    rig.memory.start(a)
    rig.wait_launched(b)
    assert rig.state(a) is TaskState.RUNNING


def test_a_dependency_that_already_ended_decides_at_once(rig: Rig) -> None:
    a = rig.run()
    rig.complete(a)
    b = rig.run(a)
    assert rig.launched(b)  # launched before create returned
    f = rig.run()
    rig.complete(f, 1)
    c = rig.run(f)
    assert rig.get(c).state is TaskState.CANCELLED


def test_singleton_waits_for_the_earlier_tasks_of_its_name(rig: Rig) -> None:
    first = rig.run(name="nightly")
    other_name = rig.run("singleton", name="weekly")
    second = rig.run("singleton", name="nightly")
    assert rig.launched(other_name)
    held = rig.get(second)
    assert not rig.launched(second) and held.state_reason == f"waiting for {first} to end (singleton)"
    rig.complete(first, 1)  # any end
    rig.wait_launched(second)


# --- graphs ------------------------------------------------------------------------------------


def test_a_cascade_cancels_every_dependent_down_the_line(rig: Rig) -> None:
    a = rig.run()
    b = rig.run(a)
    c = rig.run(b)
    d = rig.run(f"{c}:afterany")  # afterany of a cancelled task: it runs (Slurm's meaning)
    rig.complete(a, 1)
    assert rig.wait_state(b, TaskState.CANCELLED).state_reason == f"dependency {a} ended FAILED (afterok)"
    reason = rig.wait_state(c, TaskState.CANCELLED).state_reason
    assert reason == f"dependency {b} was cancelled: dependency {a} ended FAILED (afterok)"
    rig.wait_launched(d)


def test_a_diamond_joins_only_when_both_sides_completed(rig: Rig) -> None:
    a = rig.run()
    b, c = rig.run(a), rig.run(a)
    d = rig.run(b, c)
    rig.complete(a)
    rig.wait_launched(b)
    rig.wait_launched(c)
    rig.complete(b)
    wait_until(lambda: rig.get(d).state_reason == f"waiting for {c} to complete (afterok)", DEADLINE)
    assert not rig.launched(d)
    rig.complete(c)
    rig.wait_launched(d)


def test_a_100_task_chain_runs_in_order(rig: Rig) -> None:
    chain = [rig.run()]
    for _ in range(99):
        chain.append(rig.run(chain[-1]))
    for i, task_id in enumerate(chain):
        rig.wait_launched(task_id)
        assert not any(rig.launched(t) for t in chain[i + 1 :])
        rig.complete(task_id)
    assert rig.engine.holds.held() == 0


def test_held_tasks_made_ready_together_start_by_priority_then_submission(rig: Rig) -> None:
    a = rig.run()
    low = rig.run(a, priority=-1)
    first_zero = rig.run(a)
    high = rig.run(a, priority=5)
    second_zero = rig.run(a)
    rig.complete(a)
    for task_id in (low, first_zero, high, second_zero):
        rig.wait_launched(task_id)
    order = [t for t in rig.memory.launched if t in (low, first_zero, high, second_zero)]
    assert order == [high, first_zero, second_zero, low]


def test_start_after_holds_a_task_until_its_instant(rig: Rig) -> None:
    at = time.time() + 1.0
    task_id = rig.run(start_after=at)
    assert not rig.launched(task_id) and "(start_after)" in rig.get(task_id).state_reason
    rig.wait_launched(task_id)
    assert time.time() >= at
    past = rig.run(start_after=time.time() - 10)
    assert rig.launched(past)


# --- what is refused, and what ends a held task ----------------------------------------------------


def test_unknown_dependencies_are_refused_by_position(rig: Rig) -> None:
    a = rig.run()
    refused = rig.engine.create(TaskConfig(command=("true",), depends_on=[a, "t-nosuchtask"]), "", False, "")
    assert isinstance(refused, Failure)
    error = refused.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert [(v.field, v.value) for v in error.violations] == [("depends_on[1]", "'t-nosuchtask'")]
    assert rig.engine.list((), 100, "").unwrap()[0] == [rig.get(a)]  # nothing was created


def test_a_held_task_its_provider_refuses_later_fails_and_its_dependents_are_cancelled(rig: Rig) -> None:
    a = rig.run()
    b = rig.run(a)
    c = rig.run(b)
    rig.memory.refusal = DomainError(ErrorReason.QUOTA_EXCEEDED, "quota exceeded for cpu", ("ask for more",))
    rig.complete(a)
    failed = rig.wait_state(b, TaskState.FAILED)
    assert "quota exceeded" in failed.state_reason  # it was listed while it waited: it stays, FAILED
    assert rig.wait_state(c, TaskState.CANCELLED).state_reason == f"dependency {b} ended FAILED (afterok)"


def test_cancelling_a_held_task_cancels_its_dependents(rig: Rig) -> None:
    a = rig.run()
    b = rig.run(a)
    c = rig.run(b)
    rig.engine.cancel(b)
    assert rig.state(b) is TaskState.CANCELLED
    assert rig.wait_state(c, TaskState.CANCELLED).state_reason == f"dependency {b} ended CANCELLED (afterok)"
    rig.complete(a)
    assert not rig.launched(b)
    wait_until(lambda: rig.engine.holds.held() == 0, DEADLINE)


def test_a_dependency_on_another_provider_is_held_by_flowd(rig: Rig) -> None:
    local = rig.run()
    remote = rig.run(local, provider="other")
    assert not rig.launched(remote)
    rig.complete(local)
    rig.wait_launched(remote)
    assert rig.get(remote).provider == "other"


# --- a provider that waits natively ------------------------------------------------------------------


def test_a_native_provider_gets_conditions_on_its_own_accepted_tasks(rig: Rig) -> None:
    a = rig.run(provider="native")
    b = rig.run(f"{a}:afterany", provider="native")
    assert rig.launched(b)  # handed over at once: the provider holds it
    assert rig.native.after[b] == [(Dependency(a, "afterany"), f"job-{a}")]  # type: ignore[arg-type]
    assert rig.get(b).state_reason == f"waiting for {a} to end (afterany), in native's queue"


def test_a_native_dependency_that_can_never_be_met_is_cancelled_by_flowd(rig: Rig) -> None:
    a = rig.run(provider="native")
    b = rig.run(a, provider="native")
    assert rig.launched(b)
    rig.complete(a, 1)
    done = rig.wait_state(b, TaskState.CANCELLED)
    assert done.state_reason == f"dependency {a} ended FAILED (afterok)"
    assert b in rig.native.cancelled  # the provider was told to drop it (Slurm: scancel)


def test_mixed_conditions_flowd_holds_the_cross_provider_part(rig: Rig) -> None:
    same = rig.run(provider="native")
    elsewhere = rig.run()
    b = rig.run(same, elsewhere, provider="native")
    assert not rig.launched(b) and rig.get(b).state_reason == f"waiting for {elsewhere} to complete (afterok)"
    rig.complete(elsewhere)
    rig.wait_launched(b)
    assert rig.native.after[b] == [(Dependency(same), f"job-{same}")]


def test_a_forgotten_dependency_is_decided_by_flowd_once_it_ends(rig: Rig) -> None:
    a = rig.run(provider="native")
    rig.native.forget_next = True
    b = rig.run(a, provider="native")
    assert not rig.launched(b)
    wait_until(lambda: rig.get(b).state_reason == f"waiting for {a} to complete (afterok)", DEADLINE)
    rig.complete(a)
    rig.wait_launched(b)
    assert b not in rig.native.after  # launched plainly: flowd saw it complete


# --- restart ---------------------------------------------------------------------------------------


def test_held_tasks_are_held_again_after_a_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    a = first.run()
    b = first.run(a)
    c = first.run(b, priority=3)
    first.engine.holds.close()  # as if flowd died: nothing more is decided
    first.close()
    again = Rig(tmp_path)
    try:
        again.engine.recover()
        assert again.state(b) is TaskState.PENDING and not again.launched(b)
        assert again.get(b).state_reason == f"waiting for {a} to complete (afterok)"
        again.memory.start(a)  # found again, queued: the provider reports as ever
        again.memory.end(a, 0)
        again.wait_launched(b)
        assert not again.launched(c)
        again.complete(b)
        again.wait_launched(c)
    finally:
        again.close()


def test_a_dependency_on_a_provider_no_longer_configured_is_refused_at_submit(tmp_path: Path) -> None:
    """Nothing could ever report how that task ends: waiting for it would wait forever."""
    first = Rig(tmp_path)
    elsewhere = first.run(provider="other")
    first.close()
    again = Rig(tmp_path, without="other")
    try:
        again.engine.recover()
        made = again.engine.create(TaskConfig(command=("true",), depends_on=[elsewhere]), "", False, "")
        assert isinstance(made, Failure)
        error = made.failure()
        assert error.reason is ErrorReason.VALIDATION_FAILED
        (problem,) = error.violations
        assert (problem.field, problem.value) == ("depends_on[0]", repr(elsewhere))
        assert "provider 'other', which is not configured" in problem.problem
        assert "configure other again in $FLOW_HOME/config.yaml, or cancel" in problem.fix
    finally:
        again.close()


def test_many_dependents_wake_at_once_without_losing_one(rig: Rig) -> None:
    roots = [rig.run() for _ in range(20)]
    dependents = [rig.run(*roots) for _ in range(50)]
    threads = [threading.Thread(target=rig.complete, args=(r,)) for r in roots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for task_id in dependents:
        rig.wait_launched(task_id)
