"""The one writer of task state.

Every change of a task goes through here: a request (create, cancel), a provider's answer to
`launch`, and what providers report later (`report`, the Reporter every provider is given). Each
is applied through the pure state machine (flow.domain.task.lifecycle), persisted with the
provider's runtime state (one cattrs converter: flowd.providers.runtime_state) and announced to
whoever waits for that task (flowd.wakeups).

A reported end that is not the task's end (preempted, or asking to run again, while
TaskConfig.max_retries allows: flow.domain.task.lifecycle.run_again) makes the task PENDING
again, its ended run kept in its history (TaskRecord.attempts), and hands it to `relaunch` (the
engine's: launch it anew on the same provider).

A change a user requested that cannot be saved (disk full, state read-only) raises
StateWriteError and changes nothing. What a provider observed is applied even then (it is true
whether saved or not): it is kept and written with the next write that succeeds, and a daemon
restarted before that learns it again from the task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from returns.result import Failure

from flow.domain.task.config import VolumeSpec
from flow.domain.task.lifecycle import (
    CancelRequested,
    LaunchFailed,
    Started,
    TaskEvent,
    TaskRecord,
    TaskState,
    Unsatisfiable,
    apply,
    run_again,
)
from flowd.providers.base import Queued, Running
from flowd.providers.runtime_state import dump_state
from flowd.store import StateWriteError, Store
from flowd.wakeups import Wakeups

log = logging.getLogger(__name__)


class TaskLifecycle:
    def __init__(self, store: Store, wakeups: Wakeups, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._wakeups = wakeups
        self._clock = clock
        self._lock = threading.RLock()
        self._live: dict[str, TaskRecord] = {}
        self._states: dict[str, object] = {}  # the provider's runtime state of each accepted live task
        self._holding: dict[str, tuple[VolumeSpec, ...]] = {}  # flowd volumes each live task names
        self._unsaved: dict[str, tuple[TaskRecord, object | None]] = {}  # observed, not yet written
        # Who launches a task that runs again (the engine sets it); called under the lock, so it
        # must only hand the work on.
        self.relaunch: Callable[[TaskRecord], None] = lambda record: None
        self._listeners: list[Callable[[TaskRecord], None]] = []

    def listen(self, listener: Callable[[TaskRecord], None]) -> None:
        """`listener` sees every change as it is committed, under this lifecycle's lock: it must
        only take note (flowd.dependency_holds queues it), never call back in or block."""
        self._listeners.append(listener)

    # --- reading ------------------------------------------------------------------------------

    def known(self, task_id: str) -> TaskRecord | None:
        """The record held in memory: live, or observed and not yet written."""
        with self._lock:
            unsaved = self._unsaved.get(task_id)
            return self._live.get(task_id) or (unsaved[0] if unsaved else None)

    def get(self, task_id: str) -> TaskRecord | None:
        known = self.known(task_id)
        if known is not None:
            return known
        stored = self._store.get(task_id)
        return stored.record if stored is not None else None

    def is_live(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._live

    def state_of(self, task_id: str) -> object | None:
        with self._lock:
            return self._states.get(task_id)

    def live_named_before(self, task_id: str, name: str) -> list[str]:
        """The live tasks named `name` submitted before `task_id` (for singleton)."""
        with self._lock:
            found: list[str] = []
            for other, record in self._live.items():  # in submission order
                if other == task_id:
                    break
                if record.name == name:
                    found.append(other)
            return found

    def live_volume_specs(self) -> dict[str, tuple[VolumeSpec, ...]]:
        """The flowd-managed volumes named by each live task (they hold them), oldest first."""
        with self._lock:
            return {t: self._holding[t] for t in self._live if t in self._holding}

    # --- writing ------------------------------------------------------------------------------

    def _commit(self, record: TaskRecord, state: object | None = None, *, requested: bool = False) -> None:
        """Persists a record (and state), keeps memory in step and wakes its waiters. Callers
        hold the lock."""
        if requested:
            self._save(record, state)
        else:
            try:
                self._save(record, state)
            except StateWriteError as exc:  # kept, and written with the next write that succeeds
                log.warning("task %s is %s, but flowd could not save that yet: %s", record.task_id, record.state, exc)
                stale = self._unsaved.get(record.task_id)
                kept = state if state is not None or stale is None else stale[1]
                self._unsaved[record.task_id] = (record, kept)
        if state is not None:
            self._states[record.task_id] = state
        if record.is_terminal:
            self._live.pop(record.task_id, None)
            self._states.pop(record.task_id, None)
            self._holding.pop(record.task_id, None)
        else:
            self._live[record.task_id] = record
        for listener in self._listeners:
            listener(record)
        self._wakeups.fire(record.task_id)

    def _save(self, record: TaskRecord, state: object | None) -> None:
        """Writes a record (or raises StateWriteError), after those that could not be written
        before. Callers hold the lock."""
        self.save_unsaved()
        stale = self._unsaved.get(record.task_id)
        kept = state if state is not None or stale is None else stale[1]
        self._store.update(record, dump_state(kept))
        self._unsaved.pop(record.task_id, None)

    def save_unsaved(self) -> None:
        """Writes what could not be written before (the disk was full), oldest first, while it can."""
        with self._lock:
            for task_id, (record, state) in list(self._unsaved.items()):
                try:
                    self._store.update(record, dump_state(state))
                except StateWriteError:
                    return
                del self._unsaved[task_id]

    def insert(self, record: TaskRecord, holds: tuple[VolumeSpec, ...]) -> None:
        """A new task, PENDING, before its provider is asked (raises StateWriteError,
        DuplicateRequestError). `holds`: the flowd volumes it names."""
        self._store.insert(record)
        with self._lock:
            self._live[record.task_id] = record
            if holds:
                self._holding[record.task_id] = holds

    def discard(self, task_id: str, why: str) -> None:
        """A task its provider refused: it never existed (its record goes, like a job sbatch gave
        no id). If the record cannot be deleted (disk full), it ends FAILED with `why` instead,
        so that no restart ever launches it."""
        with self._lock:
            try:
                self._store.delete(task_id)
            except StateWriteError:
                self.report(task_id, LaunchFailed(reason=why))
                return
            self._live.pop(task_id, None)
            self._states.pop(task_id, None)
            self._holding.pop(task_id, None)
            self._unsaved.pop(task_id, None)
            self._wakeups.fire(task_id)

    def adopt(self, record: TaskRecord, holds: tuple[VolumeSpec, ...]) -> None:
        """An unfinished task found in the store after a restart."""
        with self._lock:
            self._live[record.task_id] = record
            if holds:
                self._holding[record.task_id] = holds

    def accepted(self, task_id: str, outcome: Running[object] | Queued[object]) -> tuple[TaskRecord | None, bool]:
        """The provider accepted the task (launched, or found again after a restart): RUNNING
        for `Running`, still PENDING for `Queued`. Returns the record as it now stands and
        whether it was cancelled meanwhile (then the provider must stop it)."""
        with self._lock:
            live = self._live.get(task_id)
            if live is None:  # cancelled (terminal) while the provider was starting it
                stored = self._store.get(task_id)
                current = self._unsaved.get(task_id, (None, None))[0] or (stored.record if stored else None)
                if current is not None:
                    self._commit(current, outcome.state)
                return current, True
            if isinstance(outcome, Running) and live.state is not TaskState.RUNNING:
                started = apply(live, Started(), self._clock())
                live = started.value_or(live)
            if isinstance(outcome, Queued) and live.state is TaskState.RUNNING:
                return live, False  # the provider reported Started already, with its state
            self._commit(live, outcome.state)
            return live, live.cancel_requested

    def report(self, task_id: str, event: TaskEvent, state: object | None = None) -> None:
        """What providers call when they observe something about a task."""
        with self._lock:
            record = self._live.get(task_id)
            if record is None:
                log.debug("ignoring %s for task %s: not live", type(event).__name__, task_id)
                return
            result = apply(record, event, self._clock())
            if isinstance(result, Failure):
                log.info("ignoring event for task %s: %s", task_id, result.failure().message)
                return
            ended = result.unwrap()
            again = run_again(record, ended)
            if again is None:
                self._commit(ended, state)
                return
            log.info("task %s: %s", task_id, again.state_reason)
            self._states.pop(task_id, None)  # the ended run's; the next run brings its own
            stale = self._unsaved.get(task_id)
            if stale is not None:
                self._unsaved[task_id] = (stale[0], None)
            self._commit(again)
            self.relaunch(again)

    def request_cancel(self, task_id: str) -> tuple[TaskRecord, object | None] | None:
        """Applies the user's cancel; returns the record and the provider state to stop (None
        when the provider has not accepted the task yet), or None for a task not live."""
        with self._lock:
            record = self._live.get(task_id)
            if record is None:
                return None
            state = self._states.get(task_id)  # before the commit, which forgets it if terminal
            updated = apply(record, CancelRequested(), self._clock()).unwrap()
            self._commit(updated, requested=True)
            return updated, state

    def doom(self, task_id: str, reason: str) -> tuple[TaskRecord, object | None] | None:
        """A dependency can never be met: the task ends CANCELLED with `reason`. Returns it and
        the provider state to stop (None: never handed to its provider), or None when it is not
        live or has started (a condition on a running task changes nothing)."""
        with self._lock:
            record = self._live.get(task_id)
            ended = apply(record, Unsatisfiable(reason), self._clock()) if record is not None else None
            if ended is None or isinstance(ended, Failure):
                return None
            state = self._states.get(task_id)  # before the commit, which forgets it
            self._commit(ended.unwrap())
            return ended.unwrap(), state

    def close(self) -> None:
        self.save_unsaved()
        self._wakeups.close()
