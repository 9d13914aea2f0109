"""gRPC servicers: decode the request, ask the engine, encode the answer. Nothing else.

Every failure leaves as a google.rpc.Status built by flow.wire.error_table; an unexpected
exception is logged here and reaches the client as a plain INTERNAL error, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from grpc_status import rpc_status
from returns.result import Failure, Result

from flow.domain.code.manifest import is_digest
from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.instances.matching import explain_no_match
from flow.domain.page_token import DEFAULT_PAGE_SIZE, page_size_of
from flow.domain.task.lifecycle import TaskRecord
from flow.domain.task.requests import MAX_WINDOW_SIZE, task_id_from_name
from flow.version import __version__
from flow.wire.error_table import domain_error_to_status
from flow.wire.function_codec import function_call_from_proto, result_to_proto
from flow.wire.instance_codec import offer_to_proto, requirements_from_proto
from flow.wire.task_codec import task_config_from_proto, task_record_to_proto, task_state_from_proto
from flowapi.v1 import (
    code_service_pb2,
    code_service_pb2_grpc,
    daemon_service_pb2,
    daemon_service_pb2_grpc,
    instance_service_pb2,
    instance_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)
from flowd.blobs import DEFAULT_MIN_AGE, BlobError, BlobStore, BlobWriter
from flowd.call_budget import CallBudget
from flowd.engine import TaskEngine, state_write_failure
from flowd.providers.base import ExecRequest, Provider
from flowd.request_decoding import UndecodableRequestError
from flowd.store import StateWriteError
from flowd.wakeups import Waiter

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BLOB_BYTES = 8 * 2**30
MAX_PAGE_BYTES = 3 * 2**20  # a ListTasks answer stays below gRPC clients' default 4 MB limit
INTERNAL = DomainError(
    reason=ErrorReason.INTERNAL,
    message="flowd hit an internal error; details are in its log ($FLOW_HOME/flowd.log)",
    suggestions=("retry the call", "report the error with the log lines around it"),
)


def provider_to_proto(provider: Provider[Any], is_default: bool) -> daemon_service_pb2.Provider:
    """A provider as ListProviders shows it, with what is wrong with it (if its health says)."""
    health = provider.capabilities.health
    problem = health.problem() if health is not None else None
    return daemon_service_pb2.Provider(
        name=f"providers/{provider.name}",
        kind=provider.kind,
        is_default=is_default,
        problem="" if problem is None else "\n".join([problem.message, *(f"fix: {s}" for s in problem.suggestions)]),
    )


def fail(context: grpc.ServicerContext, error: DomainError) -> None:
    status = rpc_status.to_status(domain_error_to_status(error))
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def _end_if_answered(context: grpc.ServicerContext) -> None:
    """Ends a call that was answered already without answering it again. gRPC answers a message
    it cannot parse (INTERNAL "Exception deserializing request!") while the handler of a
    client-streaming method still runs; a second answer then leaves the call unfinished for
    good (a worker lost, and the server never stops). Aborting ends it; the client keeps the
    first answer. Also right for a call the client cancelled: nobody is listening."""
    if not context.is_active():
        context.abort(grpc.StatusCode.CANCELLED, "the call had already ended")


def guarded(empty: Callable[[], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Catches what a handler did not expect: logged here, INTERNAL for the client."""

    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def unary(self: object, request: object, context: grpc.ServicerContext) -> Any:
            try:
                reply = handler(self, request, context)
            except UndecodableRequestError:  # answered by flowd.request_decoding, not an internal error
                raise
            except StateWriteError as exc:  # the disk is full or read-only: the message says so
                log.warning("%s failed: %s", handler.__name__, exc)
                fail(context, state_write_failure(exc))
                reply = empty()
            except Exception:
                log.exception("%s failed", handler.__name__)
                fail(context, INTERNAL)
                reply = empty()
            _end_if_answered(context)
            return reply

        return unary

    return wrap


def guarded_stream(handler: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    @functools.wraps(handler)
    def stream(self: object, request: object, context: grpc.ServicerContext) -> Iterator[T]:
        try:
            yield from handler(self, request, context)
        except UndecodableRequestError:  # answered by flowd.request_decoding, not an internal error
            raise
        except StateWriteError as exc:
            log.warning("%s failed: %s", handler.__name__, exc)
            fail(context, state_write_failure(exc))
        except Exception:
            log.exception("%s failed", handler.__name__)
            fail(context, INTERNAL)
        _end_if_answered(context)

    return stream


def _unwrap(result: Result[T, DomainError], context: grpc.ServicerContext) -> T | None:
    if isinstance(result, Failure):
        fail(context, result.failure())
        return None
    return result.unwrap()


def _waiter(context: grpc.ServicerContext) -> Waiter:
    """The call's own wake-up, released the moment its client goes away."""
    waiter = Waiter()
    if not context.add_callback(waiter.release):
        waiter.release()  # the call has ended already
    return waiter


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    """WaitTask, StreamTaskLogs and ExecTask are long-lived: they run within the CallBudget."""

    def __init__(self, engine: TaskEngine, budget: CallBudget) -> None:
        self._engine = engine
        self._budget = budget

    @guarded(task_service_pb2.CreateTaskResponse)
    def CreateTask(
        self, request: task_service_pb2.CreateTaskRequest, context: grpc.ServicerContext
    ) -> task_service_pb2.CreateTaskResponse:
        config = task_config_from_proto(request.spec)
        spec = request.spec
        record = _unwrap(
            self._engine.create(
                config,
                request.request_id,
                request.validate_only,
                request.provider,
                code_digest=spec.code_digest or None,
                secrets=dict(spec.secret_env),
                function_call=function_call_from_proto(spec.function_call) if spec.HasField("function_call") else None,
            ),
            context,
        )
        if record is None:
            return task_service_pb2.CreateTaskResponse()
        return task_service_pb2.CreateTaskResponse(task=task_record_to_proto(record))

    def _task_id(self, name: str, context: grpc.ServicerContext) -> str | None:
        return _unwrap(task_id_from_name(name), context)

    @guarded(task_service_pb2.GetTaskResponse)
    def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: grpc.ServicerContext
    ) -> task_service_pb2.GetTaskResponse:
        task_id = self._task_id(request.name, context)
        record = _unwrap(self._engine.get(task_id), context) if task_id else None
        if record is None:
            return task_service_pb2.GetTaskResponse()
        return task_service_pb2.GetTaskResponse(task=task_record_to_proto(record))

    @guarded(task_service_pb2.ListTasksResponse)
    def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: grpc.ServicerContext
    ) -> task_service_pb2.ListTasksResponse:
        states = tuple(task_state_from_proto(s) for s in request.states)
        known = tuple(s for s in states if s is not None)
        if len(known) != len(states):
            fail(
                context,
                validation_error(
                    [
                        violation(
                            "states",
                            list(request.states),
                            "holds an unknown task state",
                            "use TASK_STATE_PENDING ... TASK_STATE_PREEMPTED",
                        )
                    ],
                    subject="list request",
                ),
            )
            return task_service_pb2.ListTasksResponse()
        converted: dict[str, task_pb2.Task] = {}

        def size_of(record: TaskRecord) -> int:
            converted[record.task_id] = task_record_to_proto(record)
            return converted[record.task_id].ByteSize()

        page = _unwrap(
            self._engine.list(known, request.page_size, request.page_token, size_of, MAX_PAGE_BYTES), context
        )
        if page is None:
            return task_service_pb2.ListTasksResponse()
        records, token = page
        return task_service_pb2.ListTasksResponse(
            tasks=[converted.get(r.task_id) or task_record_to_proto(r) for r in records], next_page_token=token
        )

    @guarded(task_service_pb2.CancelTaskResponse)
    def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: grpc.ServicerContext
    ) -> task_service_pb2.CancelTaskResponse:
        task_id = self._task_id(request.name, context)
        record = _unwrap(self._engine.cancel(task_id), context) if task_id else None
        if record is None:
            return task_service_pb2.CancelTaskResponse()
        return task_service_pb2.CancelTaskResponse(task=task_record_to_proto(record))

    @guarded(task_service_pb2.WaitTaskResponse)
    def WaitTask(
        self, request: task_service_pb2.WaitTaskRequest, context: grpc.ServicerContext
    ) -> task_service_pb2.WaitTaskResponse:
        task_id = self._task_id(request.name, context)
        record = self._waited(task_id, request.timeout, context) if task_id is not None else None
        if record is None:
            return task_service_pb2.WaitTaskResponse()
        return task_service_pb2.WaitTaskResponse(task=task_record_to_proto(record))

    def _waited(self, task_id: str, wait: duration_pb2.Duration, context: grpc.ServicerContext) -> TaskRecord | None:
        """The task once finished, or as it stands when `wait` (at most 60 s, and never past the
        client's own deadline) runs out; None once the call has failed (a long call refused, an
        unknown task)."""
        timeout = wait.seconds + wait.nanos / 1e9
        remaining = context.time_remaining()
        if remaining is not None:  # answer before the client's own deadline passes
            timeout = min(timeout, max(0.0, remaining - 0.05))
        with self._budget.admitted() as admitted:
            if not admitted:
                fail(context, self._budget.refusal())
                return None
            return _unwrap(self._engine.wait(task_id, timeout, _waiter(context)), context)

    @guarded(task_service_pb2.GetTaskResultResponse)
    def GetTaskResult(
        self, request: task_service_pb2.GetTaskResultRequest, context: grpc.ServicerContext
    ) -> task_service_pb2.GetTaskResultResponse:
        task_id = self._task_id(request.name, context)
        if task_id is None:
            return task_service_pb2.GetTaskResultResponse()
        if request.HasField("wait") and self._waited(task_id, request.wait, context) is None:
            return task_service_pb2.GetTaskResultResponse()
        result = _unwrap(self._engine.result(task_id), context)
        record = _unwrap(self._engine.get(task_id), context) if result is not None else None
        if result is None or record is None:
            return task_service_pb2.GetTaskResultResponse()
        reply = result_to_proto(result)
        reply.task.CopyFrom(task_record_to_proto(record))
        return reply

    @guarded_stream
    def ExecTask(
        self, request_iterator: Iterator[task_service_pb2.ExecTaskRequest], context: grpc.ServicerContext
    ) -> Iterator[task_service_pb2.ExecTaskResponse]:
        with self._budget.admitted() as admitted:
            if not admitted:
                fail(context, self._budget.refusal())
                return
            yield from self._exec(request_iterator, context)

    def _exec(
        self, request_iterator: Iterator[task_service_pb2.ExecTaskRequest], context: grpc.ServicerContext
    ) -> Iterator[task_service_pb2.ExecTaskResponse]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "start":
            fail(
                context,
                validation_error(
                    [violation("start", "<missing>", "the first message must be start", "send ExecStart first")],
                    subject="exec request",
                ),
            )
            return
        start = first.start
        task_id = self._task_id(start.name, context)
        if task_id is None:
            return
        exec_request = ExecRequest(
            argv=tuple(start.command),
            tty=start.tty,
            rows=start.window.rows or 24,
            columns=start.window.columns or 80,
            term=start.term,
        )
        session = _unwrap(self._engine.exec(task_id, exec_request), context)
        if session is None:
            return
        context.add_callback(session.kill)  # the client went away: end what it started

        def forward_input() -> None:
            with contextlib.suppress(grpc.RpcError, ValueError):
                for request in request_iterator:
                    kind = request.WhichOneof("kind")
                    if kind == "stdin":
                        session.write(request.stdin)
                    elif kind == "resize":  # clamped: a terminal's size is 16-bit
                        rows, columns = request.resize.rows, request.resize.columns
                        session.resize(min(rows, MAX_WINDOW_SIZE), min(columns, MAX_WINDOW_SIZE))
                    elif kind == "stdin_closed":
                        session.close_stdin()
                session.close_stdin()  # the client half-closed: end of input too, as with ssh

        threading.Thread(target=forward_input, name="exec-input", daemon=True).start()
        while True:
            try:
                item = session.read(timeout=0.5)
            except queue.Empty:
                if context.is_active():
                    continue
                session.kill()  # the client is gone, or the daemon is stopping
                return
            if item is None:
                break
            stream, data = item
            if stream == "stderr":
                yield task_service_pb2.ExecTaskResponse(stderr=data)
            else:
                yield task_service_pb2.ExecTaskResponse(stdout=data)
        yield task_service_pb2.ExecTaskResponse(exit_code=session.wait())

    @guarded_stream
    def StreamTaskLogs(
        self, request: task_service_pb2.StreamTaskLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[task_service_pb2.StreamTaskLogsResponse]:
        task_id = self._task_id(request.name, context)
        if task_id is None:
            return
        with self._budget.admitted() as admitted:
            if not admitted:
                fail(context, self._budget.refusal())
                return
            chunks = _unwrap(
                self._engine.stream_logs(
                    task_id,
                    request.cursor,
                    request.follow,
                    request.tail_lines,
                    _waiter(context),
                    node=request.node if request.HasField("node") else None,
                ),
                context,
            )
            if chunks is None:
                return
            for chunk in chunks:
                yield task_service_pb2.StreamTaskLogsResponse(data=chunk.data, cursor=chunk.cursor)


class CodeServicer(code_service_pb2_grpc.CodeServiceServicer):
    """Content-addressed uploads into the daemon's blob store."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    @guarded(code_service_pb2.FindMissingBlobsResponse)
    def FindMissingBlobs(
        self, request: code_service_pb2.FindMissingBlobsRequest, context: grpc.ServicerContext
    ) -> code_service_pb2.FindMissingBlobsResponse:
        bad = [("digests", d) for d in request.digests if not is_digest(d)]
        bad += [("snapshots", d) for d in request.snapshots if not is_digest(d)]
        if bad:
            fail(
                context,
                validation_error(
                    [
                        violation(field, d, "is not a sha256 digest", "send 'sha256:' and 64 lower-case hex digits")
                        for field, d in bad[:10]
                    ],
                    subject="request",
                ),
            )
            return code_service_pb2.FindMissingBlobsResponse()
        missing = self._blobs.missing(request.digests) + self._blobs.missing_snapshots(request.snapshots)
        return code_service_pb2.FindMissingBlobsResponse(missing_digests=list(dict.fromkeys(missing)))

    @guarded(code_service_pb2.UploadBlobsResponse)
    def UploadBlobs(
        self, request_iterator: Iterator[code_service_pb2.UploadBlobsRequest], context: grpc.ServicerContext
    ) -> code_service_pb2.UploadBlobsResponse:
        stored: list[str] = []
        writer: BlobWriter | None = None
        digest = ""
        try:
            for request in request_iterator:
                for chunk in request.chunks:
                    if chunk.offset == 0:  # a new blob begins; the previous one must be whole
                        if writer is not None:
                            writer.commit()
                            stored.append(digest)
                        digest = chunk.digest
                        if not is_digest(digest) or not 0 <= chunk.size <= MAX_BLOB_BYTES:
                            raise BlobError(f"{digest!r} is not a sha256 digest with a size up to 8 GiB")
                        writer = self._blobs.writer(digest, chunk.size)
                    elif writer is None or chunk.digest != digest:
                        raise BlobError(f"a piece of {chunk.digest!r} at offset {chunk.offset} came before its start")
                    writer.write(chunk.data)
            if writer is not None:
                writer.commit()
                stored.append(digest)
        except BlobError as exc:
            if writer is not None:
                writer.abort()
            fail(
                context,
                validation_error([violation("chunks", digest, str(exc), "upload the blob again")], subject="upload"),
            )
            return code_service_pb2.UploadBlobsResponse()
        except StateWriteError as exc:  # the disk is full: what was written of this blob goes
            if writer is not None:
                writer.abort()
            fail(context, state_write_failure(exc))
            return code_service_pb2.UploadBlobsResponse()
        except BaseException:
            if writer is not None:  # a client gone mid-blob leaves no partial file behind
                writer.abort()
            raise
        return code_service_pb2.UploadBlobsResponse(stored_digests=stored)

    @guarded(code_service_pb2.CollectBlobsResponse)
    def CollectBlobs(
        self, request: code_service_pb2.CollectBlobsRequest, context: grpc.ServicerContext
    ) -> code_service_pb2.CollectBlobsResponse:
        min_age = request.min_age.ToTimedelta().total_seconds() if request.HasField("min_age") else DEFAULT_MIN_AGE
        done = self._blobs.collect(max(0.0, min_age))
        return code_service_pb2.CollectBlobsResponse(
            removed_blobs=done.removed_blobs,
            removed_bytes=done.removed_bytes,
            kept_blobs=done.kept_blobs,
            kept_bytes=done.kept_bytes,
        )


class InstanceServicer(instance_service_pb2_grpc.InstanceServiceServicer):
    def __init__(self, engine: TaskEngine) -> None:
        self._engine = engine

    @guarded(instance_service_pb2.FindInstancesResponse)
    def FindInstances(
        self, request: instance_service_pb2.FindInstancesRequest, context: grpc.ServicerContext
    ) -> instance_service_pb2.FindInstancesResponse:
        found = _unwrap(
            self._engine.find_instances(request.provider, requirements_from_proto(request), request.page_size),
            context,
        )
        if found is None:
            return instance_service_pb2.FindInstancesResponse()
        limit = page_size_of(request.page_size).value_or(DEFAULT_PAGE_SIZE)
        reply = instance_service_pb2.FindInstancesResponse(offers=[offer_to_proto(o) for o in found.matches[:limit]])
        if not found.matches:
            why = explain_no_match(found.requirements, found)
            reply.explanation = why.message
            reply.suggestions.extend(why.suggestions)
        return reply


class DaemonServicer(daemon_service_pb2_grpc.DaemonServiceServicer):
    def __init__(
        self,
        engine: TaskEngine,
        flow_home: str,
        addresses: list[str],
        shutdown: Callable[[], None],
        blobs: BlobStore | None = None,
    ) -> None:
        self._blobs = blobs
        self._engine = engine
        self._home = flow_home
        self._addresses = addresses
        self._shutdown = shutdown
        self._started = time.time()

    @guarded(daemon_service_pb2.GetDaemonInfoResponse)
    def GetDaemonInfo(
        self, request: daemon_service_pb2.GetDaemonInfoRequest, context: grpc.ServicerContext
    ) -> daemon_service_pb2.GetDaemonInfoResponse:
        info = daemon_service_pb2.GetDaemonInfoResponse(
            version=__version__,
            api_version="flowapi.v1",
            pid=os.getpid(),
            flow_home=self._home,
            addresses=self._addresses,
            default_provider=self._engine.default_provider,
        )
        info.start_time.FromNanoseconds(int(self._started * 1e9))
        if self._blobs is not None:
            info.blob_count, info.blob_store_bytes = self._blobs.usage()
        return info

    @guarded(daemon_service_pb2.ListProvidersResponse)
    def ListProviders(
        self, request: daemon_service_pb2.ListProvidersRequest, context: grpc.ServicerContext
    ) -> daemon_service_pb2.ListProvidersResponse:
        default = self._engine.default_provider
        providers = sorted(self._engine.providers.all().items())
        return daemon_service_pb2.ListProvidersResponse(
            providers=[provider_to_proto(p, name == default) for name, p in providers]
        )

    @guarded(daemon_service_pb2.ShutdownDaemonResponse)
    def ShutdownDaemon(
        self, request: daemon_service_pb2.ShutdownDaemonRequest, context: grpc.ServicerContext
    ) -> daemon_service_pb2.ShutdownDaemonResponse:
        # Answer first, then stop: the reply must reach the caller.
        threading.Timer(0.05, self._shutdown).start()
        return daemon_service_pb2.ShutdownDaemonResponse()
