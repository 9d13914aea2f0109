"""The CLI's read-only calls to the local flowd without importing grpcio (`flow status`).

Importing grpcio costs 110-200 ms on a small machine, more than a cold `flow status` may take in
all (150 ms). So `flow status` first asks the local daemon over its Unix socket through the
minimal HTTP/2 unary client in flow.wire.http2_unary. Every function here either answers exactly
what the grpcio path would (the same messages; the same SDK exception, built by the one error
table, for a failed call) or raises `FastPathUnusableError`, and the caller then does the same
work through the grpcio path (flow.client.Flow), which also starts a daemon that is not running.
grpcio remains the transport for everything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from flow.home import FlowHome, UnsafeHomeError, check_ownership
from flow.wire.http2_unary import CallFailedError, FastPathUnusableError, unary_call
from flow.wire.task_state_codec import task_resource_name
from flowapi.v1 import task_pb2, task_service_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from flow.connection import DaemonConnection
    from flow.errors import FlowError

FASTPATH_ENV: Final = "FLOW_CLI_FASTPATH"  # "0" turns the fast path off (tests compare both paths)
CALL_TIMEOUT: Final = 30.0  # as the grpcio path's GetTask/ListTasks
PAGE_MAX: Final = 1000  # as Flow.list_tasks
_UNAVAILABLE: Final = 14  # google.rpc.Code.UNAVAILABLE
_SERVICE: Final = "/flowapi.v1.TaskService/"

M = TypeVar("M", bound="Message")


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Only for the local daemon on its Unix socket: never for FLOW_DAEMON_ADDRESS (TCP/TLS)."""
    source = os.environ if env is None else env
    return not source.get("FLOW_DAEMON_ADDRESS") and source.get(FASTPATH_ENV, "1") != "0"


def _failure(failed: CallFailedError) -> FlowError:
    """What DaemonConnection.translate makes of the same status, or FastPathUnusableError where
    the grpcio path would restart the daemon and retry (UNAVAILABLE without details)."""
    if failed.code == _UNAVAILABLE and failed.details is None:
        raise FastPathUnusableError("daemon unavailable")
    from google.rpc import status_pb2

    from flow.wire.error_table import exception_from_status

    status: status_pb2.Status | None = None
    if failed.details is not None:
        status = status_pb2.Status()
        try:
            status.ParseFromString(failed.details)
        except Exception:  # noqa: BLE001 - a DecodeError; let grpcio's path deal with it
            raise FastPathUnusableError("undecodable grpc-status-details-bin") from None
        # as grpc_status.rpc_status.from_call: a status that disagrees with the call is ignored
        if status.code != failed.code or status.message != failed.message:
            status = None
    return exception_from_status(failed.code, failed.message, status)


def _call(home: FlowHome, method: str, request: Message, reply: M) -> M:
    try:
        check_ownership(home)
    except UnsafeHomeError:
        raise FastPathUnusableError("another user controls FLOW_HOME: the grpcio path says so") from None
    try:
        raw = unary_call(str(home.socket), _SERVICE + method, request.SerializeToString(), CALL_TIMEOUT)
    except CallFailedError as failed:
        raise _failure(failed) from None
    except FastPathUnusableError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever went wrong here, grpcio gets its turn
        raise FastPathUnusableError(f"unexpected: {exc!r}") from None
    try:
        reply.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - a DecodeError
        raise FastPathUnusableError(f"undecodable {method} response") from None
    return reply


def get_task(home: FlowHome, task_id: str) -> task_pb2.Task:
    request = task_service_pb2.GetTaskRequest(name=task_resource_name(task_id))
    return _call(home, "GetTask", request, task_service_pb2.GetTaskResponse()).task


def list_tasks(home: FlowHome, limit: int) -> list[task_pb2.Task]:
    """Tasks, newest first, paged exactly as Flow.list_tasks pages them."""
    found: list[task_pb2.Task] = []
    token = ""
    while len(found) < limit:
        request = task_service_pb2.ListTasksRequest(page_size=min(limit - len(found), PAGE_MAX), page_token=token)
        reply = _call(home, "ListTasks", request, task_service_pb2.ListTasksResponse())
        found.extend(reply.tasks)
        token = reply.next_page_token
        if not token:
            break
    return found


class DeferredConnection:
    """Stands in for a DaemonConnection in the Task handles this path returns: the real (grpcio)
    connection is opened only if a handle is used for a call."""

    def __init__(self, home: FlowHome) -> None:
        self._home = home
        self._real: DaemonConnection | None = None

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            from flow.connection import DaemonConnection

            self._real = DaemonConnection(self._home)
        return getattr(self._real, name)


__all__ = ["FASTPATH_ENV", "DeferredConnection", "FastPathUnusableError", "enabled", "get_task", "list_tasks"]
