"""Holding tasks until their dependencies let them start; the core decides, this acts
(flow.domain.task.dependencies: conditions, readiness, cascades, start order).

A task with `depends_on` or `start_after` is admitted here instead of being launched at once.
What its provider can enforce itself (a provider with NativeDependencies: Slurm's --dependency
among jobs of its own cluster, --begin, --nice) goes to the provider with the launch; the rest
flowd holds: the task stays PENDING, its state_reason naming what it waits for ("waiting for
t-abc to complete (afterok)"), and is launched once every condition holds. A condition that can
never hold any more ends the task CANCELLED with a reason naming the dependency, whether flowd
or the provider held it (Slurm would leave it pending as DependencyNeverSatisfied); its own
dependents follow, as that end is itself an event.

Event-driven: the lifecycle shows every committed change of a task that someone waits for (or
that is held here) to `_changed`, which only queues it; one worker thread takes the queue and
decides again just the dependents of what changed, O(dependents) per event, launching those now
ready in the core's start order (priority, then submission). A start_after flowd holds is a
timer on that thread, not a poll.

Durable: nothing here is the only record of anything. A held task is a PENDING task in the store
without runtime state and with a held reason (dependencies.is_held_reason); the reason is cleared
before a launch, so after a kill -9 TaskEngine.recover gives back exactly the tasks never handed
to their provider (`readmit`), and `recovered` decides them all again.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from attrs import define, field
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, not_found, validation_error, violation
from flow.domain.task.config import TaskConfig
from flow.domain.task.dependencies import (
    Condition,
    Dependency,
    Doomed,
    Node,
    Observed,
    Readiness,
    Ready,
    Waiting,
    cycle_error,
    find_cycle,
    is_held_reason,
    readiness,
    split_native,
    start_order,
    unknown_dependencies,
)
from flow.domain.task.lifecycle import LaunchFailed, Preparing, TaskRecord, TaskState
from flowd.lifecycle import TaskLifecycle
from flowd.providers.base import Forgotten, Launched, Provider, Queued, Refused, Running

if TYPE_CHECKING:
    from flowd.provider_registry import ProviderRegistry

log = logging.getLogger(__name__)

LaunchFn = Callable[[Provider[Any], TaskRecord, Sequence[tuple[Dependency, str]]], "Launched[Any] | Forgotten"]
AcceptFn = Callable[[Provider[Any], TaskRecord, "Running[Any] | Queued[Any]"], TaskRecord]
NEW_TASK: Final = "(this task)"


def constrains(config: TaskConfig) -> bool:
    """Whether a task goes through the holds (else it is launched at once, as ever)."""
    return bool(config.depends_on) or config.start_after is not None


def _observed(record: TaskRecord) -> Observed:
    started = record.started_at is not None
    return Observed(record.task_id, record.state, started, record.name, record.state_reason)


@define
class _Entry:
    """A task this holds or, once handed to a provider that waits natively, watches for a doom."""

    task_id: str
    provider: str
    name: str
    deps: tuple[Dependency, ...]
    start_after: float | None  # None where the provider honours it itself
    priority: int
    seq: float  # submission time: the core's tie-break after priority
    launched: bool = False
    launching: bool = False  # a launch is under way (outside the lock): nobody else decides it
    timer: bool = False  # its start_after is on the timer heap
    watching: set[str] = field(factory=set)
    distrust: set[str] = field(factory=set)  # tasks the provider forgot: flowd decides on them


class DependencyHolds:
    def __init__(
        self,
        lifecycle: TaskLifecycle,
        providers: ProviderRegistry,
        launch: LaunchFn,
        accept: AcceptFn,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifecycle = lifecycle
        self._providers = providers
        self._launch = launch
        self._accept = accept
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._waiters: dict[str, set[str]] = {}  # task id -> the entries that wait for it
        self._timers: list[tuple[float, str]] = []  # heap of (start_after, task id)
        self._events: queue.SimpleQueue[tuple[str, bool] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        lifecycle.listen(self._changed)

    # --- at submission -------------------------------------------------------------------------

    def check(self, config: TaskConfig, provider: str) -> Result[None, DomainError]:
        """What only flowd can check: every task named exists, its provider is configured (else
        nothing would ever tell how it ends), and no wait goes round in a circle."""
        known: dict[str, TaskRecord] = {}
        for dep in config.depends_on:
            if isinstance(dep, Dependency) and dep.condition is not Condition.SINGLETON:
                found = self._lifecycle.get(dep.task_id)
                if found is not None:
                    known[dep.task_id] = found
        problems = list(unknown_dependencies(config.depends_on, known.__contains__))
        for i, dep in enumerate(config.depends_on):
            other = known.get(dep.task_id)
            if other is not None and not other.is_terminal and self._providers.get(other.provider) is None:
                problems.append(
                    violation(
                        f"depends_on[{i}]",
                        dep.task_id,
                        f"runs on provider {other.provider!r}, which is not configured, so it can never be seen to end",
                        f"configure {other.provider} again in $FLOW_HOME/config.yaml, or cancel {dep.task_id}",
                    )
                )
        if problems:
            return Failure(validation_error(problems, subject="task configuration"))
        cycle = self._cycle(config, provider)
        return Failure(cycle_error(cycle)) if cycle is not None else Success(None)

    def _cycle(self, config: TaskConfig, provider: str) -> tuple[str, ...] | None:
        """A circle of waits through the new task. Task ids are flowd's and a task can name
        only tasks that exist, so waits point back in time and no circle can form today; the
        core's check still guards the held graph against any path that would let one in."""
        nodes = [Node(NEW_TASK, config.name or NEW_TASK, seq=2**62, depends_on=config.depends_on)]
        frontier = [d.task_id for d in config.depends_on if d.condition is not Condition.SINGLETON]
        seen: set[str] = set()
        with self._lock:
            while frontier:
                task_id = frontier.pop()
                entry = self._entries.get(task_id)
                if task_id in seen or entry is None:
                    continue
                seen.add(task_id)
                nodes.append(Node(task_id, entry.name, seq=int(entry.seq * 1e6), depends_on=entry.deps))
                frontier += [d.task_id for d in entry.deps if d.condition is not Condition.SINGLETON]
        return find_cycle(nodes)

    def admit(self, provider: Provider[Any], record: TaskRecord) -> Result[TaskRecord, DomainError]:
        """A new task (inserted, PENDING): launched now when its conditions already allow it (a
        refusal is then the answer, as for any task), else held; CANCELLED at once when one can
        never hold."""
        entry = self._entry(provider, record)
        with self._lock:
            entry.launching = True  # decided below, on this thread
            self._register(entry)
        self._start()
        return self._decide_and_act(entry, provider, at_submit=True)

    def _entry(self, provider: Provider[Any], record: TaskRecord) -> _Entry:
        native = provider.capabilities.dependencies is not None
        return _Entry(
            task_id=record.task_id,
            provider=provider.name,
            name=record.name,
            deps=record.config.depends_on,
            start_after=None if native else record.config.start_after,
            priority=record.config.priority,
            seq=record.created_at,
        )

    # --- after a restart -----------------------------------------------------------------------

    def readmit(self, provider: Provider[Any], record: TaskRecord, runtime: Mapping[str, Any]) -> bool:
        """An unfinished task found in the store at start-up (with the runtime state stored for
        it): whether it is held again, never handed to its provider (then the engine leaves it
        here), rather than recovered from its provider (then, if it has dependencies, watched
        for a doom). A held task has a held reason and no state; one whose provider waits
        natively is given back too, as its launch may have been cut short (Slurm's submission
        is idempotent). Decided in `recovered`."""
        if not constrains(record.config):
            return False
        held = not runtime and (is_held_reason(record.state_reason) or provider.capabilities.dependencies is not None)
        entry = self._entry(provider, record)
        entry.launched = not held
        with self._lock:
            self._register(entry)
        return held

    def recovered(self) -> None:
        """Every task is known again: decide each readmitted one, in start order."""
        with self._lock:
            for entry in self._entries.values():
                self._events.put((entry.task_id, False))
        self._start()

    # --- events ----------------------------------------------------------------------------------

    def _changed(self, record: TaskRecord) -> None:
        """The lifecycle's listener (under its lock): takes note, nothing more."""
        if record.task_id in self._waiters or (record.is_terminal and record.task_id in self._entries):
            self._events.put((record.task_id, record.is_terminal))

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="dependency-holds", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                due = self._timers[0][0] - self._clock() if self._timers else None
            try:
                item = self._events.get(timeout=max(0.0, due) if due is not None else None)
            except queue.Empty:
                item = ("", False)  # a timer is due
            batch = [item]
            while True:  # everything that happened meanwhile, decided as one batch
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            if any(i is None for i in batch):
                return
            try:
                self._handle([i for i in batch if i is not None])
            except Exception:  # a bug here must not stop every later dependent
                log.exception("deciding dependents failed")

    def _handle(self, batch: list[tuple[str, bool]]) -> None:
        now = self._clock()
        with self._lock:
            todo: set[str] = set()
            while self._timers and self._timers[0][0] <= now:
                due = self._entries.get(heapq.heappop(self._timers)[1])
                if due is not None:
                    due.timer = False
                    todo.add(due.task_id)
            for task_id, _ in batch:
                todo |= self._waiters.get(task_id, set())
                if task_id in self._entries:
                    todo.add(task_id)
            ordered = start_order([(t, e.priority, int(e.seq * 1e6)) for t in todo if (e := self._entries.get(t))])
        for task_id in ordered:
            entry = self._entries.get(task_id)
            provider = self._providers.get(entry.provider) if entry is not None else None
            if entry is None or provider is None:
                continue
            with self._lock:
                if entry.launching or self._entries.get(task_id) is not entry:
                    continue
                entry.launching = True
            self._decide_and_act(entry, provider, at_submit=False)
        with self._lock:
            for task_id, ended in batch:
                if ended:  # it never changes again: nobody waits for it any more
                    for waiting in self._waiters.pop(task_id, set()):
                        found = self._entries.get(waiting)
                        if found is not None:
                            found.watching.discard(task_id)
                    if task_id in self._entries:
                        self._forget(self._entries[task_id])

    # --- deciding --------------------------------------------------------------------------------

    def _verdict(self, entry: _Entry, provider: Provider[Any]) -> tuple[Readiness, tuple[tuple[Dependency, str], ...]]:
        """What the core says of the entry now, and the conditions its provider would take."""
        native = provider.capabilities.dependencies
        observed: dict[str, Observed] = {}
        native_ids: dict[str, str] = {}
        for dep in entry.deps:
            if dep.condition is Condition.SINGLETON:
                continue
            record = self._lifecycle.get(dep.task_id)
            if record is None:
                continue  # vanished: the core counts it ended without completing
            observed[dep.task_id] = _observed(record)
            if native is not None and not record.is_terminal and record.provider == entry.provider:
                state = self._lifecycle.state_of(dep.task_id)
                found = native.native_id(state) if state is not None else None
                if found and dep.task_id not in entry.distrust:
                    native_ids[dep.task_id] = found
        now = self._clock()
        explicit = [d for d in entry.deps if d.condition is not Condition.SINGLETON]
        if entry.launched:  # its provider holds it: only a doom is flowd's to act on
            return readiness(explicit, observed, [], None, now), ()
        held, after = split_native(entry.deps, native_ids)
        singleton = any(d.condition is Condition.SINGLETON for d in entry.deps)
        earlier = self._lifecycle.live_named_before(entry.task_id, entry.name) if singleton else []
        entry.watching.update(earlier)
        for other in earlier:
            self._waiters.setdefault(other, set()).add(entry.task_id)
        return readiness(held, observed, earlier, entry.start_after, now), after

    def _decide_and_act(
        self, entry: _Entry, provider: Provider[Any], at_submit: bool
    ) -> Result[TaskRecord, DomainError]:
        """Decides the entry (marked launching by the caller) and acts: launch, hold, or doom."""
        record = self._lifecycle.get(entry.task_id)
        with self._lock:
            if record is None or record.is_terminal:  # cancelled meanwhile (or gone)
                entry.launching = False
                self._forget(entry)
                return Success(record) if record is not None else Failure(not_found("task", entry.task_id))
            decided, after = self._verdict(entry, provider)
            if isinstance(decided, Doomed) or (isinstance(decided, Ready) and entry.launched):
                entry.launching = False
                self._forget(entry)  # doomed, or every condition its provider held now holds
            elif isinstance(decided, Waiting):
                entry.launching = False
                if entry.start_after is not None and entry.start_after > self._clock() and not entry.timer:
                    entry.timer = True
                    heapq.heappush(self._timers, (entry.start_after, entry.task_id))
                    self._events.put(("", False))  # the worker may sleep past it: it looks again
        if isinstance(decided, Doomed):
            return Success(self._doom(provider, record, decided.reason))
        if isinstance(decided, Waiting) or entry.launched:
            if isinstance(decided, Waiting) and not entry.launched and record.state_reason != decided.reason:
                self._lifecycle.report(entry.task_id, Preparing(reason=decided.reason))
            return Success(self._lifecycle.get(entry.task_id) or record)
        return self._start_task(entry, provider, record, after, at_submit)

    def _doom(self, provider: Provider[Any], record: TaskRecord, reason: str) -> TaskRecord:
        ended = self._lifecycle.doom(record.task_id, reason)
        if ended is not None:
            log.info("task %s cancelled: %s", record.task_id, reason)
            current, state = ended
            if state is not None:  # its provider holds it (a Slurm job pending on a dependency)
                provider.cancel(current, state)
        return self._lifecycle.get(record.task_id) or record

    def _start_task(
        self,
        entry: _Entry,
        provider: Provider[Any],
        record: TaskRecord,
        after: tuple[tuple[Dependency, str], ...],
        at_submit: bool,
    ) -> Result[TaskRecord, DomainError]:
        """Launches a task whose conditions hold (those in `after` left to its provider)."""
        if record.state_reason:  # saved first: a restart then never takes it for a held task
            self._lifecycle.report(entry.task_id, Preparing(reason=""))
            record = self._lifecycle.get(entry.task_id) or record
        outcome = self._launch(provider, record, after)
        if isinstance(outcome, Forgotten):  # flowd decides on those itself, once it learns their end
            with self._lock:
                entry.distrust.update(dep.task_id for dep, _ in after)
                entry.launching = False
            self._events.put((entry.task_id, False))
            return Success(self._lifecycle.get(entry.task_id) or record)
        if isinstance(outcome, Refused):
            with self._lock:
                entry.launching = False
                self._forget(entry)
            if at_submit:  # as for any task: it never existed, and the refusal is the answer
                self._lifecycle.discard(entry.task_id, outcome.error.message)
                return Failure(outcome.error)
            # It was listed while it waited: it ends FAILED, and its dependents follow.
            self._lifecycle.report(entry.task_id, LaunchFailed(reason=outcome.error.message))
            return Success(self._lifecycle.get(entry.task_id) or record)
        current = self._accept(provider, record, outcome)
        with self._lock:
            entry.launching = False
            entry.launched = True
            if not after:
                self._forget(entry)
        if after:  # its provider holds it now; say so, and look again for what happened meanwhile
            live = {dep.task_id: Observed(dep.task_id, TaskState.PENDING, False) for dep, _ in after}
            waiting = readiness([dep for dep, _ in after], live, [], None, 0.0)
            if isinstance(outcome, Queued) and isinstance(waiting, Waiting):
                self._lifecycle.report(entry.task_id, Preparing(reason=f"{waiting.reason}, in {provider.kind}'s queue"))
            self._events.put((entry.task_id, False))
        return Success(self._lifecycle.get(entry.task_id) or current)

    # --- bookkeeping (callers hold the lock) -------------------------------------------------------

    def _register(self, entry: _Entry) -> None:
        self._entries[entry.task_id] = entry
        for dep in entry.deps:
            if dep.condition is not Condition.SINGLETON:
                entry.watching.add(dep.task_id)
                self._waiters.setdefault(dep.task_id, set()).add(entry.task_id)

    def _forget(self, entry: _Entry) -> None:
        if self._entries.get(entry.task_id) is entry:
            del self._entries[entry.task_id]
        for other in entry.watching:
            waiting = self._waiters.get(other)
            if waiting is not None:
                waiting.discard(entry.task_id)
                if not waiting:
                    del self._waiters[other]
        entry.watching.clear()

    def held(self) -> int:
        """How many tasks are held or watched (for tests and benchmarks)."""
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._events.put(None)
        if thread is not None:
            thread.join(timeout=5)
