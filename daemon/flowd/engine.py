"""The task engine: flowd's imperative shell around the pure core.

For every request it gathers inputs (store, provider, clock, a new id), asks the core to decide
(validation, placement, the state machine), then acts (persist, launch, signal) and wakes
whoever waits. Providers report what they observe through `report`, which goes through the same
state machine, so a task's state has one writer path whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableSequence, Sequence
from pathlib import Path
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.code.manifest import Manifest, is_digest, parse_manifest
from flow.domain.daemon_config import check_provider_name
from flow.domain.errors import DomainError, ErrorReason, not_found, validation_error, violation
from flow.domain.instances.matching import MatchResult, match_offers, requirements_from_dict
from flow.domain.page_token import decode_page_token, encode_page_token, page_size_of
from flow.domain.task.config import TaskConfig, VolumeSpec, task_config_violations
from flow.domain.task.function_call import FunctionCall, FunctionResult, function_call_violations, parse_result
from flow.domain.task.lifecycle import (
    CancelRequested,
    LaunchFailed,
    Started,
    TaskEvent,
    TaskRecord,
    TaskState,
    apply,
)
from flow.domain.task.log_cursor import decode_cursor, emit_length, encode_cursor
from flow.domain.task.multinode import check_node, decode_merged_cursor, encode_merged_cursor, label_lines
from flowd import logs
from flowd.blobs import BlobStore
from flowd.exec_session import ExecSession
from flowd.providers.base import LaunchError, Provider, Runtime
from flowd.store import DuplicateRequestError, StateWriteError, Store
from flowd.volumes import VolumeManager

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS: Final = 60.0
MAX_REQUEST_ID: Final = 128
TASK_ID_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, no look-alikes
FOLLOW_POLL_MIN: Final = 0.002
FOLLOW_POLL_MAX: Final = 0.05
MAX_WINDOW_SIZE: Final = 65535  # a terminal's rows and columns are 16-bit (struct winsize)


def new_task_id() -> str:
    return "t-" + "".join(secrets.choice(TASK_ID_ALPHABET) for _ in range(10))


@frozen
class LogChunk:
    data: bytes
    cursor: str


def _bad_name(name: str) -> DomainError:
    return validation_error(
        [violation("name", name, "is not a task name", "give 'tasks/<task_id>', e.g. 'tasks/t-3kq9x2m4zr'")],
        subject="request",
    )


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


def task_id_from_name(name: str) -> Result[str, DomainError]:
    """'tasks/<id>' -> '<id>'."""
    prefix = "tasks/"
    task_id = name[len(prefix) :] if name.startswith(prefix) else ""
    if 0 < len(task_id) <= 64 and all(c.isalnum() or c in "-_" for c in task_id) and task_id.isascii():
        return Success(task_id)
    return Failure(_bad_name(name))


class TaskEngine:
    def __init__(
        self,
        store: Store,
        providers: dict[str, Provider],
        default_provider: str,
        blobs: BlobStore,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_task_id,
        volumes: VolumeManager | None = None,
    ) -> None:
        self._volumes = volumes
        self._store = store
        self._blobs = blobs
        self._providers = providers
        self.default_provider = default_provider
        self._clock = clock
        self._new_id = new_id
        self._changed = threading.Condition()
        self._live: dict[str, TaskRecord] = {}
        self._runtimes: dict[str, Runtime] = {}
        self._unsaved: dict[str, tuple[TaskRecord, Runtime | None]] = {}  # observed, not yet written
        self._closing = False

    @property
    def providers(self) -> dict[str, Provider]:
        return self._providers

    @property
    def volumes(self) -> VolumeManager | None:
        return self._volumes

    def live_volume_specs(self) -> dict[str, tuple[VolumeSpec, ...]]:
        """The flowd-managed volumes named by each live task (they hold them), oldest task first.
        Tasks of providers that own their volumes (Mithril's live in its API) hold none here."""
        with self._changed:
            return {
                t: r.config.volumes
                for t, r in self._live.items()
                if r.config.volumes and not getattr(self._providers.get(r.provider), "own_volumes", False)
            }

    # --- state changes: one path ------------------------------------------------------------

    def _commit(self, record: TaskRecord, runtime: Runtime | None = None, *, requested: bool = False) -> None:
        """Persists a record (and runtime) and wakes waiters. Callers hold self._changed.

        A change a user `requested` that cannot be saved (disk full, state read-only) raises
        StateWriteError and changes nothing. What a provider observed is applied even then (it
        is true whether saved or not): it is kept and written with the next write that succeeds,
        and a daemon restarted before that learns it again from the task."""
        if requested:
            self._save(record, runtime)
        else:
            self._save_observed(record, runtime)
        if runtime is not None:
            self._runtimes[record.task_id] = runtime
        if record.is_terminal:
            self._live.pop(record.task_id, None)
            self._runtimes.pop(record.task_id, None)
        else:
            self._live[record.task_id] = record
        self._changed.notify_all()

    def _save(self, record: TaskRecord, runtime: Runtime | None) -> None:
        """Writes a record (or raises StateWriteError), after those that could not be written
        before. Callers hold self._changed."""
        self._save_unsaved()
        stale = self._unsaved.get(record.task_id)
        self._store.update(record, runtime if runtime is not None or stale is None else stale[1])
        self._unsaved.pop(record.task_id, None)

    def _save_observed(self, record: TaskRecord, runtime: Runtime | None) -> None:
        try:
            self._save(record, runtime)
        except StateWriteError as exc:  # kept, and written with the next write that succeeds
            log.warning("task %s is %s, but flowd could not save that yet: %s", record.task_id, record.state, exc)
            stale = self._unsaved.get(record.task_id)
            kept = runtime if runtime is not None or stale is None else stale[1]
            self._unsaved[record.task_id] = (record, kept)

    def _save_unsaved(self) -> None:
        """Writes what could not be written before (the disk was full), oldest first, while it
        can. Callers hold self._changed."""
        for task_id, (record, runtime) in list(self._unsaved.items()):
            try:
                self._store.update(record, runtime)
            except StateWriteError:
                return
            del self._unsaved[task_id]

    def report(self, task_id: str, event: TaskEvent, runtime: Runtime | None = None) -> None:
        """What providers call when they observe something about a task."""
        with self._changed:
            record = self._live.get(task_id)
            if record is None:
                log.debug("ignoring %s for task %s: not live", type(event).__name__, task_id)
                return
            result = apply(record, event, self._clock())
            if isinstance(result, Failure):
                log.info("ignoring event for task %s: %s", task_id, result.failure().message)
                return
            self._commit(result.unwrap(), runtime)

    # --- requests ---------------------------------------------------------------------------

    def _provider(self, name: str) -> Result[Provider, DomainError]:
        if name and isinstance(malformed := check_provider_name(name), Failure):  # as every malformed id
            return Failure(malformed.failure())
        chosen = name or self.default_provider
        provider = self._providers.get(chosen)
        if provider is None:
            known = ", ".join(sorted(self._providers))
            return Failure(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_FOUND,
                    message=f"No provider named {chosen!r}",
                    suggestions=(f"use one of: {known}", "configure providers in $FLOW_HOME/config.yaml"),
                    metadata=(("provider", chosen),),
                )
            )
        return Success(provider)

    def _check_request_id(self, request_id: str) -> Result[None, DomainError]:
        if len(request_id) > MAX_REQUEST_ID or "\x00" in request_id:
            return Failure(
                validation_error(
                    [
                        violation(
                            "request_id",
                            request_id,
                            f"must be at most {MAX_REQUEST_ID} characters without NUL",
                            "use a UUID",
                        )
                    ],
                    subject="request",
                )
            )
        return Success(None)

    def _check_code(
        self, config: TaskConfig, code_digest: str | None, call: FunctionCall | None
    ) -> Result[None, DomainError]:
        """Config, code snapshot and function call, judged together: every problem at once."""
        problems = list(task_config_violations(config))
        manifest = None
        if code_digest is not None:
            loaded = self._manifest(code_digest)
            if isinstance(loaded, Failure):
                problems.extend(loaded.failure().violations)
            else:
                manifest = loaded.unwrap()
        if call is not None:
            problems.extend(function_call_violations(call, manifest, code_given=code_digest is not None))
            given = [n for n in ("command", "shell", "script") if getattr(config, n) is not None]
            if given:
                problems.append(
                    violation(
                        given[0],
                        getattr(config, given[0]),
                        "is given together with function_call",
                        "a task runs either a command or a function, not both",
                    )
                )
        if problems:
            return Failure(validation_error(problems, subject="task configuration"))
        return Success(None)

    def _manifest(self, digest: str) -> Result[Manifest, DomainError]:
        fix = "upload the code with CodeService (FindMissingBlobs, UploadBlobs) before CreateTask"
        if not is_digest(digest) or not self._blobs.has(digest):
            return Failure(validation_error([violation("code_digest", digest, "names no uploaded code snapshot", fix)]))
        parsed = parse_manifest(self._blobs.read(digest))
        if isinstance(parsed, Failure):
            return parsed
        manifest = parsed.unwrap()
        problems = self._blobs.manifest_violations(digest, manifest)  # files missing, sizes that lie
        return Failure(validation_error(problems)) if problems else Success(manifest)

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
        checked = self._check_request_id(request_id)
        if isinstance(checked, Failure):
            return Failure(checked.failure())
        secrets = dict(secrets or {})
        bad_secret = [
            violation(
                f"secret_env[{name!r}]",
                "<secret>",
                "has no value, or contains a NUL byte",
                f"set {name} when submitting",
            )
            for name in config.secret_env
            if isinstance(name, str) and (not secrets.get(name) or "\x00" in secrets[name])
        ]
        if bad_secret:
            return Failure(validation_error(bad_secret, subject="task configuration"))
        valid = self._check_code(config, code_digest, function_call)
        if isinstance(valid, Failure):
            return Failure(valid.failure())
        chosen = self._provider(provider_name)
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        provider = chosen.unwrap()
        if request_id:
            existing = self._store.by_request_id(request_id)
            if existing is not None:
                return self._same_request(existing.record, config, code_digest, function_call)
        placed = provider.place(config)
        if isinstance(placed, Failure):
            return Failure(placed.failure())
        placement = placed.unwrap()
        # Held until the task is live, so two tasks never both take one block volume.
        with self._volumes.claiming() if self._volumes is not None else contextlib.nullcontext():
            # A provider with its own volumes (mithril: /v2/volumes) resolves them itself.
            if self._volumes is not None and config.volumes and not getattr(provider, "own_volumes", False):
                attached = self._volumes.resolve(config, provider.name, create=not validate_only)
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
            if validate_only:
                return Success(record)
            try:
                self._store.insert(record)
            except StateWriteError as exc:
                return Failure(state_write_failure(exc))
            except DuplicateRequestError:
                again = self._store.by_request_id(request_id)
                assert again is not None
                return self._same_request(again.record, config, code_digest, function_call)
            with self._changed:
                self._live[record.task_id] = record
        return Success(self._launch(provider, record))

    def _same_request(
        self, existing: TaskRecord, config: TaskConfig, code_digest: str | None, call: FunctionCall | None
    ) -> Result[TaskRecord, DomainError]:
        if (existing.config, existing.code_digest, existing.function_call) == (config, code_digest, call):
            return Success(self.get(existing.task_id).value_or(existing))
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

    def _launch(self, provider: Provider, record: TaskRecord) -> TaskRecord:
        """Starts a PENDING task and records the outcome. Returns the record as it now stands."""
        try:
            runtime = provider.launch(record)
        except (LaunchError, OSError) as exc:
            with self._changed:
                current = self._live.get(record.task_id, record)
                failed = apply(current, LaunchFailed(reason=str(exc)), self._clock())
                if isinstance(failed, Failure):
                    return current
                self._commit(failed.unwrap())
                return failed.unwrap()
        if runtime.get("queued"):
            with self._changed:  # waits for resources; the provider reports Started later
                current = self._live.get(record.task_id, record)
                if not current.is_terminal and current.state is not TaskState.RUNNING:
                    # (a provider that starts it in the background may have reported Started already)
                    self._save_observed(current, runtime)
                    self._runtimes[record.task_id] = runtime
                stop = current.is_terminal
            if stop:  # cancelled while it was being queued
                provider.cancel(current, runtime)
            return current
        with self._changed:
            live = self._live.get(record.task_id)
            started = apply(live, Started(), self._clock()) if live is not None else None
            if started is not None and not isinstance(started, Failure):
                result, stop = started.unwrap(), False
                self._commit(result, runtime)
            else:  # cancelled while it was being launched: it must not keep running
                result, stop = self._store_get(record.task_id) or record, True
                self._save_observed(result, runtime)
            # Watched before the lock is released, so a cancel that follows finds it watched.
            provider.watch(result, runtime)
        if stop:
            provider.cancel(result, runtime)
        return result

    def _store_get(self, task_id: str) -> TaskRecord | None:
        stored = self._store.get(task_id)
        return stored.record if stored else None

    def _known(self, task_id: str) -> TaskRecord | None:
        """The record held in memory: live, or not yet written. Callers hold self._changed."""
        unsaved = self._unsaved.get(task_id)
        return self._live.get(task_id) or (unsaved[0] if unsaved else None)

    def get(self, task_id: str) -> Result[TaskRecord, DomainError]:
        with self._changed:
            live = self._known(task_id)
        if live is not None:
            return Success(live)
        record = self._store_get(task_id)
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
        with self._changed:
            self._save_unsaved()
        rows = self._store.page(states, before.unwrap(), limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        with self._changed:
            records = [self._known(r.record.task_id) or r.record for r in rows]
        if max_bytes:
            total = 0
            for kept, record in enumerate(records):
                total += size_of(record)
                if total > max_bytes and kept > 0:
                    records, rows, more = records[:kept], rows[:kept], True
                    break
        token = encode_page_token(rows[-1].seq) if more and rows else ""
        return Success((records, token))

    def cancel(self, task_id: str) -> Result[TaskRecord, DomainError]:
        found = self.get(task_id)
        if isinstance(found, Failure):
            return found
        with self._changed:
            record = self._live.get(task_id)
            if record is None:
                return found  # already terminal: cancelling is a no-op
            runtime = self._runtimes.get(task_id)  # before the commit, which forgets it if terminal
            updated = apply(record, CancelRequested(), self._clock()).unwrap()
            try:
                self._commit(updated, requested=True)
            except StateWriteError as exc:
                return Failure(state_write_failure(exc))
        if runtime is not None:  # running, or waiting in a provider's queue
            self._providers[record.provider].cancel(updated, runtime)
        return Success(updated)

    def wait(self, task_id: str, timeout: float) -> Result[TaskRecord, DomainError]:
        found = self.get(task_id)
        if isinstance(found, Failure):
            return found
        limit = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
        with self._changed:
            while task_id in self._live and not self._closing:
                left = limit - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        return self.get(task_id)

    def stream_logs(
        self,
        task_id: str,
        cursor: str,
        follow: bool,
        tail_lines: int,
        is_active: Callable[[], bool],
        node: int | None = None,
    ) -> Result[Iterator[LogChunk], DomainError]:
        """A task's output from `cursor` on. A multi-node task keeps one output per node: `node`
        selects one, None merges them all with a "[node K] " prefix on each line."""
        found = self.get(task_id)
        if isinstance(found, Failure):
            return Failure(found.failure())
        provider = self._providers[found.unwrap().provider]
        # Providers with one output file per node (local) have node_log_path; others one file.
        node_log_path: Callable[[str, int], Path] | None = getattr(provider, "node_log_path", None)
        num_nodes = found.unwrap().config.num_instances if node_log_path is not None else 1
        checked = check_node(node, max(1, num_nodes))
        if isinstance(checked, Failure):
            return Failure(checked.failure())
        paths = [provider.log_path(task_id)]
        if node_log_path is not None and num_nodes > 1:
            paths = [node_log_path(task_id, k) for k in range(num_nodes)]
        if len(paths) > 1 and node is None:
            return self._stream_merged(task_id, paths, cursor, follow, tail_lines, is_active)
        start = decode_cursor(cursor)
        if isinstance(start, Failure):
            return Failure(start.failure())
        if tail_lines < 0:
            return Failure(
                validation_error(
                    [
                        violation(
                            "tail_lines",
                            tail_lines,
                            "must not be negative",
                            "give 0 for everything, or N for the last N lines",
                        )
                    ],
                    subject="log request",
                )
            )
        path = paths[node or 0]
        offset = start.unwrap()
        if offset > logs.size_of(path):  # output only grows: no cursor of ours points past its end
            return Failure(
                validation_error(
                    [
                        violation(
                            "cursor",
                            cursor,
                            f"points past the end of the task's output ({logs.size_of(path)} bytes)",
                            "pass back the cursor of the last chunk you received, or '' to start over",
                        )
                    ],
                    subject="log request",
                )
            )
        if not cursor and tail_lines:
            offset = logs.tail_offset(path, tail_lines)
        return Success(self._chunks(task_id, path, offset, follow, is_active))

    def _stream_merged(
        self,
        task_id: str,
        paths: Sequence[Path],
        cursor: str,
        follow: bool,
        tail_lines: int,
        is_active: Callable[[], bool],
    ) -> Result[Iterator[LogChunk], DomainError]:
        decoded = decode_merged_cursor(cursor, len(paths))
        if isinstance(decoded, Failure):
            return Failure(decoded.failure())
        offsets = list(decoded.unwrap())
        past = [k for k, path in enumerate(paths) if offsets[k] > logs.size_of(path)]
        if past or tail_lines < 0:
            return Failure(
                validation_error(
                    [
                        violation(
                            "cursor",
                            cursor,
                            f"points past the end of node {past[0]}'s output",
                            "pass back the cursor of the last chunk you received, or '' to start over",
                        )
                        if past
                        else violation(
                            "tail_lines",
                            tail_lines,
                            "must not be negative",
                            "give 0 for everything, or N for the last N lines",
                        )
                    ],
                    subject="log request",
                )
            )
        if not cursor and tail_lines:  # the last N lines of every node
            offsets = [logs.tail_offset(path, tail_lines) for path in paths]
        return Success(self._merged_chunks(task_id, paths, offsets, follow, is_active))

    def _merged_chunks(
        self,
        task_id: str,
        paths: Sequence[Path],
        offsets: MutableSequence[int],
        follow: bool,
        is_active: Callable[[], bool],
    ) -> Iterator[LogChunk]:
        """Whole lines of every node, each labelled with its node, round-robin; one cursor holds
        every node's offset."""
        pause = FOLLOW_POLL_MIN
        while is_active() and not self._closing:
            with self._changed:
                final = task_id not in self._live or not follow
            sent = False
            for node, path in enumerate(paths):
                data = logs.read_at(path, offsets[node])
                take = emit_length(data, final and len(data) < logs.CHUNK_BYTES)
                if take:
                    offsets[node] += take
                    sent = True
                    yield LogChunk(data=label_lines(data[:take], node), cursor=encode_merged_cursor(offsets))
            if sent:
                pause = FOLLOW_POLL_MIN
                continue
            if final:
                return
            with self._changed:
                self._changed.wait(pause)
            pause = min(pause * 2, FOLLOW_POLL_MAX)

    def _chunks(
        self, task_id: str, path: Path, offset: int, follow: bool, is_active: Callable[[], bool]
    ) -> Iterator[LogChunk]:
        pause = FOLLOW_POLL_MIN
        settled = False
        while is_active() and not self._closing:
            # Terminal before the read means no byte can follow what this read returns.
            with self._changed:
                final = task_id not in self._live or not follow
            data = logs.read_at(path, offset)
            if logs.worth_settling(len(data), final, settled):  # fewer, larger messages
                settled = True
                with self._changed:
                    self._changed.wait(logs.SETTLE_SECONDS)
                continue
            settled = False
            take = emit_length(data, final and len(data) < logs.CHUNK_BYTES)
            if take:
                offset += take
                pause = FOLLOW_POLL_MIN
                yield LogChunk(data=data[:take], cursor=encode_cursor(offset))
                continue
            if final:
                return
            with self._changed:
                self._changed.wait(pause)
            pause = min(pause * 2, FOLLOW_POLL_MAX)

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
        data = self._providers[record.provider].read_result(task_id)
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

    def exec(
        self, task_id: str, argv: Sequence[str], tty: bool, rows: int, columns: int, term: str
    ) -> Result[ExecSession, DomainError]:
        """A command started inside a running task's environment (flow ssh)."""
        bad = [
            violation(f"command[{i}]", arg, "contains a NUL byte", "remove it")
            for i, arg in enumerate(argv)
            if "\x00" in arg
        ]
        if argv and not argv[0]:
            bad.append(violation("command[0]", "", "the program name is empty", "give a program, e.g. ['nvidia-smi']"))
        bad.extend(
            violation(f"window.{name}", size, f"must be at most {MAX_WINDOW_SIZE}", "give the terminal's real size")
            for name, size in (("rows", rows), ("columns", columns))
            if not 0 <= size <= MAX_WINDOW_SIZE
        )
        if bad or "\x00" in term:
            return Failure(
                validation_error(
                    bad or [violation("term", term, "contains a NUL byte", "remove it")], subject="exec request"
                )
            )
        found = self.get(task_id)
        if isinstance(found, Failure):
            return Failure(found.failure())
        record = found.unwrap()
        with self._changed:
            runtime = self._runtimes.get(task_id)
        if record.state is not TaskState.RUNNING or runtime is None or runtime.get("queued"):
            return Failure(
                DomainError(
                    reason=ErrorReason.ILLEGAL_STATE,
                    message=f"task {task_id} is {record.state}; commands run only in a RUNNING task",
                    suggestions=("wait until it is RUNNING (flow status)",) if not record.is_terminal else (),
                )
            )
        try:
            return Success(self._providers[record.provider].exec(record, runtime, argv, tty, rows, columns, term))
        except LaunchError as exc:
            return Failure(
                DomainError(
                    reason=ErrorReason.TASK_EXECUTION_FAILED, message=str(exc), suggestions=("check the command",)
                )
            )

    def find_instances(
        self, provider_name: str, requirements: dict[str, object], page_size: int
    ) -> Result[MatchResult, DomainError]:
        """The provider's offers that meet the requirements, ranked (rejections on demand)."""
        chosen = self._provider(provider_name)
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        size = page_size_of(page_size)
        if isinstance(size, Failure):
            return Failure(size.failure())
        parsed = requirements_from_dict(requirements)
        if isinstance(parsed, Failure):
            return Failure(parsed.failure())
        return Success(match_offers(parsed.unwrap(), chosen.unwrap().offers()))

    # --- life of the daemon -----------------------------------------------------------------

    def recover(self) -> None:
        """After a (re)start: find every unfinished task again, or learn how it ended."""
        for stored in self._store.live():
            record = stored.record
            with self._changed:
                self._live[record.task_id] = record
            provider = self._providers.get(record.provider)
            if provider is None:
                log.warning("task %s uses provider %r, which is not configured", record.task_id, record.provider)
                continue
            try:
                runtime = provider.recover(record, stored.runtime)
            except (LaunchError, OSError) as exc:
                self.report(record.task_id, LaunchFailed(reason=str(exc)))
                continue
            if runtime is None:
                continue
            if runtime.get("queued"):
                with self._changed:
                    current = self._live.get(record.task_id)
                    if current is not None and current.state is not TaskState.RUNNING:  # (see _launch)
                        self._runtimes[record.task_id] = runtime
                continue
            with self._changed:
                current = self._live.get(record.task_id)
                if current is None:
                    continue
                if current.state is not TaskState.RUNNING:
                    started = apply(current, Started(), self._clock())
                    current = started.value_or(current)
                self._commit(current, runtime)
                provider.watch(current, runtime)
            if current.cancel_requested:
                provider.cancel(current, runtime)
        for provider in self._providers.values():
            provider.recovered()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._save_unsaved()
            self._changed.notify_all()
        for provider in self._providers.values():
            provider.close()
        if self._volumes is not None:
            self._volumes.close()  # host mounts only: running tasks keep theirs
