"""The task engine: flowd's imperative shell around the pure core, one method per request.

For every request it gathers inputs (store, provider, clock, a new id), asks the core to decide
(request checks, placement), then acts through the provider and records the outcome through the
lifecycle (flowd.lifecycle: the one writer of task state). Log streams are flowd.log_stream's.

CreateTask returns once the provider has accepted the task (see flowd.providers.base): its
record is written first (a crash during launch finds it again), and a refusal deletes it.

A task that runs again (preempted, or asking to: TaskConfig.max_retries, see flowd.lifecycle) is
launched anew by `_relaunch`, on a thread of its own (the provider reported the end from its
own thread, which must not wait for a launch): same task id, config, code snapshot and provider.
A provider that refuses the new run ends the task FAILED with the refusal (it existed before).
"""

from __future__ import annotations

import contextlib
import logging
import secrets as token
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from returns.result import Failure, Result, Success

from flow.domain.code.manifest import Manifest
from flow.domain.daemon_config import check_provider_name
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, not_found, validation_error, violation
from flow.domain.instances.matching import MatchResult, match_offers, requirements_from_dict
from flow.domain.page_token import decode_page_token, encode_page_token, page_size_of
from flow.domain.task.config import TaskConfig
from flow.domain.task.dependencies import Dependency
from flow.domain.task.function_call import FunctionCall, FunctionResult, parse_result
from flow.domain.task.lifecycle import LaunchFailed, TaskRecord, TaskState
from flow.domain.task.multinode import check_node
from flow.domain.task.requests import create_violations, exec_violations
from flowd.blobs import BlobStore
from flowd.dependency_holds import DependencyHolds, constrains
from flowd.exec_session import ExecChannel
from flowd.lifecycle import TaskLifecycle
from flowd.log_stream import LogChunk, LogStreams
from flowd.providers.base import (
    Ended,
    ExecRequest,
    Forgotten,
    Launched,
    LaunchError,
    Provider,
    Queued,
    Refused,
    Running,
)
from flowd.providers.runtime_state import StateFormatError, load_state
from flowd.store import DuplicateRequestError, StateWriteError, Store
from flowd.volumes import VolumeManager
from flowd.wakeups import Waiter, Wakeups

if TYPE_CHECKING:  # the registry reads config.yaml; the engine only looks providers up in it
    from flowd.provider_registry import ProviderRegistry

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS: Final = 60.0
TASK_ID_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, no look-alikes


def new_task_id() -> str:
    """t- and ten characters of TASK_ID_ALPHABET: 50 random bits, drawn from the OS at once."""
    bits = token.randbits(50)
    return "t-" + "".join(TASK_ID_ALPHABET[(bits >> shift) & 31] for shift in range(0, 50, 5))


def state_write_failure(exc: StateWriteError) -> DomainError:
    """What the caller of a request that could not be saved is told (exc's message says why)."""
    return DomainError(
        reason=ErrorReason.QUOTA_EXCEEDED if exc.full else ErrorReason.ILLEGAL_STATE,
        message=str(exc),
        suggestions=(
            "free space on the disk that holds $FLOW_HOME" if exc.full else "make $FLOW_HOME writable again",
            "or stop flowd and set FLOW_HOME to a directory on another disk",
            "then retry: tasks and logs saved so far are intact",
        ),
    )


def _cannot(provider: str, what: str, fix: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.ILLEGAL_STATE,
        message=f"Provider {provider} cannot {what}",
        suggestions=(fix,),
        metadata=(("provider", provider),),
    )


class TaskEngine:
    def __init__(
        self,
        store: Store,
        lifecycle: TaskLifecycle,
        providers: ProviderRegistry,
        blobs: BlobStore,
        streams: LogStreams,
        wakeups: Wakeups,
        volumes: VolumeManager | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_task_id,
    ) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self.providers = providers
        self._blobs = blobs
        self._streams = streams
        self._wakeups = wakeups
        self.volumes = volumes
        self._clock = clock
        self._new_id = new_id
        self.holds = DependencyHolds(lifecycle, providers, _launched, self._accept, clock)
        lifecycle.relaunch = self._relaunch_soon

    @property
    def default_provider(self) -> str:
        return self.providers.default

    def _provider(self, name: str) -> Result[Provider[Any], DomainError]:
        if name and isinstance(malformed := check_provider_name(name), Failure):  # as every malformed id
            return Failure(malformed.failure())
        chosen = name or self.providers.default
        provider = self.providers.get(chosen)
        if provider is None:
            known = ", ".join(sorted(self.providers.all()))
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_FOUND,
                    message=f"No provider named {chosen!r}",
                    suggestions=(f"use one of: {known}", "configure providers in $FLOW_HOME/config.yaml"),
                    metadata=(("provider", chosen),),
                )
            )
        return Success(provider)

    def _holds(self, provider: Provider[Any], config: TaskConfig) -> tuple[Any, ...]:
        """The flowd volumes a task of this provider names (none where the provider keeps its own)."""
        return config.volumes if self.volumes is not None and provider.capabilities.volumes is None else ()

    # --- creating ----------------------------------------------------------------------------

    def _manifest(self, digest: str | None) -> tuple[Manifest | None, list[FieldViolation]]:
        return (None, []) if digest is None else self._blobs.checked_manifest(digest)

    def create(
        self,
        config: TaskConfig,
        request_id: str,
        validate_only: bool,
        provider_name: str,
        code_digest: str | None = None,
        function_call: FunctionCall | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> Result[TaskRecord, DomainError]:
        secrets = dict(secrets or {})
        manifest, problems = self._manifest(code_digest)
        checked = create_violations(config, request_id, secrets, code_digest, manifest, problems, function_call)
        if isinstance(checked, Failure):
            return Failure(checked.failure())
        chosen = self._provider(provider_name)
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        provider = chosen.unwrap()
        if config.depends_on:
            dependencies = self.holds.check(config, provider.name)
            if isinstance(dependencies, Failure):
                return Failure(dependencies.failure())
        if request_id:
            existing = self._store.by_request_id(request_id)
            if existing is not None:
                return self._same_request(existing.record, config, code_digest, function_call)
        placed = provider.place(config)
        if isinstance(placed, Failure):
            return Failure(placed.failure())
        placement = placed.unwrap()
        holds = self._holds(provider, config)
        # Held until the task is live, so two tasks never both take one block volume.
        with self.volumes.claiming() if self.volumes is not None else contextlib.nullcontext():
            if holds and self.volumes is not None:
                attached = self.volumes.resolve(config, provider.name, create=not validate_only)
                if isinstance(attached, Failure):
                    return Failure(attached.failure())
            record = TaskRecord(
                task_id="" if validate_only else self._new_id(),
                config=config,
                provider=provider.name,
                created_at=self._clock(),
                instance_type=placement.instance_type,
                cost_per_hour_micros=placement.cost_per_hour_micros,
                request_id=request_id or None,
                code_digest=code_digest,
                function_call=function_call,
                secrets={name: secrets[name] for name in config.secret_env},
            )
            if not validate_only:
                try:
                    self._lifecycle.insert(record, holds)
                except StateWriteError as exc:
                    return Failure(state_write_failure(exc))
                except DuplicateRequestError:
                    again = self._store.by_request_id(request_id)
                    assert again is not None
                    return self._same_request(again.record, config, code_digest, function_call)
        if validate_only:  # a provider that can asks its platform too (outside the volume claim)
            checker = provider.capabilities.dry_run
            there = checker.dry_run(record) if checker is not None else Success(None)
            return Failure(there.failure()) if isinstance(there, Failure) else Success(record)
        if constrains(config):  # launched when its dependencies and start_after allow
            return self.holds.admit(provider, record)
        return self._launch(provider, record)

    def _same_request(
        self, existing: TaskRecord, config: TaskConfig, code_digest: str | None, call: FunctionCall | None
    ) -> Result[TaskRecord, DomainError]:
        if (existing.config, existing.code_digest, existing.function_call) == (config, code_digest, call):
            return Success(self._lifecycle.get(existing.task_id) or existing)
        return Failure(
            DomainError(
                reason=ErrorReason.ALREADY_EXISTS,
                message=(
                    f"request_id {existing.request_id!r} was already used for task "
                    f"{existing.task_id} with a different spec"
                ),
                suggestions=("use a new request_id for a different task",),
                metadata=(("task_id", existing.task_id),),
            )
        )

    def _launch(self, provider: Provider[Any], record: TaskRecord) -> Result[TaskRecord, DomainError]:
        """Asks the provider to take the PENDING task: accepted (running or queued) -> the record
        as it now stands; refused -> the task never existed, and the refusal is the answer."""
        outcome = _launched(provider, record)
        assert not isinstance(outcome, Forgotten)  # only launch_after forgets
        if isinstance(outcome, Refused):
            self._lifecycle.discard(record.task_id, outcome.error.message)
            return Failure(outcome.error)
        return Success(self._accept(provider, record, outcome))

    def _accept(self, provider: Provider[Any], record: TaskRecord, outcome: Running[Any] | Queued[Any]) -> TaskRecord:
        current, cancelled = self._lifecycle.accepted(record.task_id, outcome)
        provider.watch(current or record, outcome.state)
        if cancelled:  # cancelled while it was being launched: it must not keep running
            provider.cancel(current or record, outcome.state)
        return current or record

    def _relaunch_soon(self, record: TaskRecord) -> None:
        threading.Thread(target=self._relaunch, args=(record,), name=f"relaunch-{record.task_id}", daemon=True).start()

    def _relaunch(self, record: TaskRecord) -> None:
        """Launches a task that runs again (see the module docstring)."""
        if not self._lifecycle.is_live(record.task_id):
            return  # cancelled meanwhile
        provider = self.providers.get(record.provider)
        if provider is None:
            why = f"provider {record.provider} is no longer configured"
            self._lifecycle.report(record.task_id, LaunchFailed(reason=why))
            return
        outcome = _launched(provider, record)  # its dependencies held once: they are not asked again
        assert not isinstance(outcome, Forgotten)  # only launch_after forgets
        if isinstance(outcome, Refused):
            self._lifecycle.report(record.task_id, LaunchFailed(reason=outcome.error.message))
            return
        self._accept(provider, record, outcome)

    # --- reading -------------------------------------------------------------------------------

    def get(self, task_id: str) -> Result[TaskRecord, DomainError]:
        record = self._lifecycle.get(task_id)
        if record is None:
            return Failure(not_found("task", task_id, ("list tasks with `flow status`",)))
        return Success(record)

    def list(
        self,
        states: tuple[TaskState, ...],
        page_size: int,
        page_token: str,
        size_of: Callable[[TaskRecord], int] = lambda _: 0,
        max_bytes: int = 0,
    ) -> Result[tuple[list[TaskRecord], str], DomainError]:
        """A page of tasks, newest first. With `max_bytes`, the page also ends before the tasks'
        `size_of` adds up to more (a task can hold megabytes of arguments; gRPC clients refuse
        answers above 4 MB by default); it always holds at least one task."""
        size = page_size_of(page_size)
        if isinstance(size, Failure):
            return Failure(size.failure())
        before = decode_page_token(page_token)
        if isinstance(before, Failure):
            return Failure(before.failure())
        limit = size.unwrap()
        self._lifecycle.save_unsaved()
        rows = self._store.page(states, before.unwrap(), limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        records = [self._lifecycle.known(r.record.task_id) or r.record for r in rows]
        if max_bytes:
            total = 0
            for kept, record in enumerate(records):
                total += size_of(record)
                if total > max_bytes and kept > 0:
                    records, rows, more = records[:kept], rows[:kept], True
                    break
        token_text = encode_page_token(rows[-1].seq) if more and rows else ""
        return Success((records, token_text))

    def cancel(self, task_id: str) -> Result[TaskRecord, DomainError]:
        found = self.get(task_id)
        if isinstance(found, Failure):
            return found
        try:
            requested = self._lifecycle.request_cancel(task_id)
        except StateWriteError as exc:
            return Failure(state_write_failure(exc))
        if requested is None:
            return found  # already terminal: cancelling is a no-op
        updated, state = requested
        if state is not None:  # running, or waiting in a provider's queue
            provider = self.providers.get(updated.provider)
            if provider is not None:
                provider.cancel(updated, state)
        return Success(updated)

    def wait(self, task_id: str, timeout: float, waiter: Waiter) -> Result[TaskRecord, DomainError]:
        """The task once terminal, or as it stands after `timeout` (at most MAX_WAIT_SECONDS), or
        at once when the waiter is released (the client went away)."""
        found = self.get(task_id)
        if isinstance(found, Failure):
            return found
        limit = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
        with self._wakeups.waiting(waiter.event, [task_id]):
            while not waiter.released and not self._wakeups.closed:
                waiter.event.clear()
                left = limit - time.monotonic()
                if left <= 0 or not self._lifecycle.is_live(task_id):
                    break
                waiter.event.wait(left)
        return self.get(task_id)

    def stream_logs(
        self,
        task_id: str,
        cursor: str,
        follow: bool,
        tail_lines: int,
        waiter: Waiter,
        node: int | None = None,
    ) -> Result[Iterator[LogChunk], DomainError]:
        """A task's output from `cursor` on. A provider with per-node logs keeps one output per
        node: `node` selects one, None merges them all with a "[node K] " prefix on each line."""
        found = self.get(task_id)
        if isinstance(found, Failure):
            return Failure(found.failure())
        record = found.unwrap()
        provider = self.providers.get(record.provider)
        if provider is None:
            return Failure(_cannot(record.provider, "be reached: it is not configured", "configure it again"))
        files = list(provider.log_files(record))
        if not provider.capabilities.node_logs and node not in (None, 0) and record.config.num_instances > 1:
            fix = "leave node out: this provider keeps one output for all the task's nodes"
            return Failure(
                validation_error([violation("node", node, "cannot be read alone", fix)], subject="log request")
            )
        checked = check_node(node, max(1, len(files)))
        if isinstance(checked, Failure):
            return Failure(checked.failure())
        if node is not None:
            files = [files[node]] if len(files) > 1 else files
        return self._streams.open(task_id, files, len(files) > 1, cursor, follow, tail_lines, waiter)

    def result(self, task_id: str) -> Result[FunctionResult, DomainError]:
        """What a finished function-call task returned or raised."""
        found = self.get(task_id)
        if isinstance(found, Failure):
            return Failure(found.failure())
        record = found.unwrap()
        if record.function_call is None:
            return Failure(
                DomainError(
                    reason=ErrorReason.ILLEGAL_STATE,
                    message=f"task {task_id} runs a command, not a function: it has no result",
                    suggestions=(f"read its output with `flow logs {task_id}`",),
                )
            )
        if not record.is_terminal:
            return Failure(
                DomainError(
                    reason=ErrorReason.ILLEGAL_STATE,
                    message=f"task {task_id} is {record.state}; its result exists once it has finished",
                    suggestions=("wait for the task first (task.wait() or WaitTask)",),
                )
            )
        provider = self.providers.get(record.provider)
        results = provider.capabilities.results if provider is not None else None
        if results is None:
            return Failure(_cannot(record.provider, "return function results", "run functions on another provider"))
        data = results.read_result(task_id)
        if data is None:
            return Failure(
                DomainError(
                    reason=ErrorReason.TASK_EXECUTION_FAILED,
                    message=f"task {task_id} ended {record.state} ({record.state_reason}) without returning a result",
                    suggestions=(f"see what happened with `flow logs {task_id}`",),
                    metadata=(("task_id", task_id), ("state", str(record.state))),
                )
            )
        return parse_result(data, record.function_call.encoding)

    def exec(self, task_id: str, request: ExecRequest) -> Result[ExecChannel, DomainError]:
        """A command started inside a running task's environment (flow ssh)."""
        checked = exec_violations(request.argv, request.rows, request.columns, request.term)
        if isinstance(checked, Failure):
            return Failure(checked.failure())
        found = self.get(task_id)
        if isinstance(found, Failure):
            return Failure(found.failure())
        record = found.unwrap()
        state = self._lifecycle.state_of(task_id)
        if record.state is not TaskState.RUNNING or state is None:
            return Failure(
                DomainError(
                    reason=ErrorReason.ILLEGAL_STATE,
                    message=f"task {task_id} is {record.state}; commands run only in a RUNNING task",
                    suggestions=("wait until it is RUNNING (flow status)",) if not record.is_terminal else (),
                )
            )
        provider = self.providers.get(record.provider)
        runner = provider.capabilities.exec if provider is not None else None
        if runner is None:
            return Failure(_cannot(record.provider, "run commands in its tasks", "print what you need from the task"))
        try:
            return Success(runner.exec(record, state, request))
        except LaunchError as exc:
            return Failure(
                DomainError(
                    reason=ErrorReason.TASK_EXECUTION_FAILED, message=str(exc), suggestions=("check the command",)
                )
            )

    def find_instances(
        self, provider_name: str, requirements: dict[str, object], page_size: int
    ) -> Result[MatchResult, DomainError]:
        """The provider's offers that meet the requirements, ranked (rejections on demand). A
        provider that cannot be asked now answers its error, never an empty list."""
        chosen = self._provider(provider_name)
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        size = page_size_of(page_size)
        if isinstance(size, Failure):
            return Failure(size.failure())
        parsed = requirements_from_dict(requirements)
        if isinstance(parsed, Failure):
            return Failure(parsed.failure())
        provider = chosen.unwrap()
        offers = provider.capabilities.offers
        if offers is None:
            return Failure(_cannot(provider.name, "list its offers", "run the task and read the refusal"))
        listed = offers.offers()
        if isinstance(listed, Failure):
            return Failure(listed.failure())
        return Success(match_offers(parsed.unwrap(), listed.unwrap()))

    # --- life of the daemon -----------------------------------------------------------------

    def recover(self) -> None:
        """After a (re)start: find every unfinished task again, or learn how it ended."""
        for stored in self._store.live():
            record = stored.record
            provider = self.providers.get(record.provider)
            if provider is None:
                self._lifecycle.adopt(record, ())
                log.warning("task %s uses provider %r, which is not configured", record.task_id, record.provider)
                continue
            self._lifecycle.adopt(record, self._holds(provider, record.config))
            if self.holds.readmit(provider, record, stored.runtime):
                continue  # never handed to its provider: the holds decide it again
            try:
                state = load_state(stored.runtime, provider.state_type)
                outcome = provider.recover(record, state)
            except (LaunchError, OSError, StateFormatError) as exc:
                self._lifecycle.report(record.task_id, LaunchFailed(reason=str(exc)))
                continue
            if isinstance(outcome, Refused):  # it was visible (listed) before: it ends FAILED
                self._lifecycle.report(record.task_id, LaunchFailed(reason=outcome.error.message))
            elif not isinstance(outcome, Ended):
                self._accept(provider, record, outcome)
        for provider in self.providers.all().values():
            provider.recovered()
        self.holds.recovered()

    def close(self) -> None:
        self.holds.close()
        self._lifecycle.close()
        self.providers.close()
        if self.volumes is not None:
            self.volumes.close()  # host mounts only: running tasks keep theirs


def _launched(
    provider: Provider[Any], record: TaskRecord, after: Sequence[tuple[Dependency, str]] = ()
) -> Launched[Any] | Forgotten:
    """The provider's answer (with conditions on its own tasks it enforces itself, `after`); an
    exception (a provider's bug, a vanished file) is a refusal."""
    native = provider.capabilities.dependencies
    try:
        return native.launch_after(record, after) if after and native is not None else provider.launch(record)
    except Exception as exc:
        log.exception("provider %s: launching task %s failed", provider.name, record.task_id)
        return Refused(
            DomainError(
                reason=ErrorReason.PROVIDER_ERROR,
                message=f"Provider {provider.name} failed to start the task: {type(exc).__name__}: {exc}",
                suggestions=("run the task again", "details are in flowd's log ($FLOW_HOME/flowd.log)"),
                metadata=(("provider", provider.name),),
            )
        )
