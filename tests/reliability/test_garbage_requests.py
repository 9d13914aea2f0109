"""Bytes that are not a valid message of a method's request type get INVALID_ARGUMENT from flowd
itself (ValidationError in the SDK's terms), naming the method and the type and saying how to
fix it, on every method of every service: unary, server-streaming, client-streaming (UploadBlobs)
and bidirectional (ExecTask). The methods are read from the contract's descriptors, so a method
added later is covered without touching this file. flowd keeps serving after each call, and a
refused upload leaves nothing behind."""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import channel, healthy

import flowapi.v1
from conftest import Daemon
from flow.errors import ValidationError
from flow.wire.error_table import exception_from_status
from flowapi.v1 import code_service_pb2, code_service_pb2_grpc, task_pb2, task_service_pb2, task_service_pb2_grpc


def _methods() -> list[tuple[str, str, bool, bool]]:
    """(path, request type, client streams, server streams) of every method flowd serves: every
    service in the contract's package, and grpc.health.v1."""
    services = [health_pb2.DESCRIPTOR.services_by_name["Health"]]
    for module in pkgutil.iter_modules(flowapi.v1.__path__):
        if module.name.endswith("_pb2"):
            services += importlib.import_module(f"flowapi.v1.{module.name}").DESCRIPTOR.services_by_name.values()
    return sorted(
        (f"/{s.full_name}/{m.name}", m.input_type.full_name, m.client_streaming, m.server_streaming)
        for s in services
        for m in s.methods
    )


METHODS = _methods()
FLOW_METHODS = [m for m in METHODS if m[0].startswith("/flowapi.v1.")]


def _parses(type_name: str, body: bytes) -> bool:
    cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(type_name))
    try:
        cls.FromString(body)
    except Exception:  # noqa: BLE001  # DecodeError, invalid UTF-8, nesting too deep: all "does not parse"
        return False
    return True


def unparseable(type_name: str, raw: bytes) -> bytes:
    """`raw`, made sure not to parse: a message that parses ends between fields, where a lone
    0xff is a tag whose varint never ends."""
    body = raw if not _parses(type_name, raw) else raw + b"\xff"
    assert not _parses(type_name, body)
    return body


def call(chan: grpc.Channel, method: tuple[str, str, bool, bool], messages: list[bytes]) -> grpc.RpcError:
    """Sends `messages` as raw bytes to `method`; returns the error it must end with."""
    path, _, client_streams, server_streams = method
    raw: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}
    try:
        if client_streams and server_streams:
            list(chan.stream_stream(path, **raw)(iter(messages), timeout=30))
        elif client_streams:
            chan.stream_unary(path, **raw)(iter(messages), timeout=30)
        elif server_streams:
            list(chan.unary_stream(path, **raw)(messages[0], timeout=30))
        else:
            chan.unary_unary(path, **raw)(messages[0], timeout=30)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{path} accepted bytes that are not a valid message")


def assert_refused(error: grpc.RpcError, path: str, type_name: str) -> None:
    code, details = error.code(), error.details() or ""
    assert code is grpc.StatusCode.INVALID_ARGUMENT, (path, code, details)
    assert path in details, details
    assert f"the request to {path} is not a valid {type_name} message" in details, details
    assert "regenerate your client from proto/flowapi/v1" in details, details
    assert "Traceback" not in details
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
    assert info.domain == "flow"
    assert [v.field for v in bad.field_violations] == ["request"]
    assert type_name in bad.field_violations[0].description
    # What the SDK raises for it: the seed's ValidationError, with the fix among the suggestions.
    raised = exception_from_status(status.code, status.message, status)
    assert isinstance(raised, ValidationError), type(raised)
    assert any("regenerate your client" in s for s in raised.suggestions)


@pytest.fixture(scope="module")
def chan(shared_daemon: Daemon) -> Iterator[grpc.Channel]:
    with channel(shared_daemon) as opened:
        yield opened


def test_the_descriptors_list_every_service_flowd_serves() -> None:
    services = {path.split("/")[1] for path, *_ in METHODS}
    assert {
        "flowapi.v1.TaskService",
        "flowapi.v1.DaemonService",
        "flowapi.v1.InstanceService",
        "flowapi.v1.CodeService",
        "flowapi.v1.VolumeService",
        "flowapi.v1.ProviderService",
        "grpc.health.v1.Health",
    } <= services
    kinds = {(m[2], m[3]) for m in METHODS}
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}  # all four shapes


@pytest.mark.parametrize("method", METHODS, ids=[m[0] for m in METHODS])
def test_every_method_refuses_a_corrupt_message_by_name(
    shared_daemon: Daemon, chan: grpc.Channel, method: tuple[str, str, bool, bool]
) -> None:
    path, type_name = method[0], method[1]
    # A varint that never ends, a field shorter than its length, invalid UTF-8 in field 1 (made
    # unparseable where field 1 is not a string).
    for body in (b"\xff", b"\x0a\x05ab", unparseable(type_name, b"\x0a\x02\xc3\x28")):
        assert_refused(call(chan, method, [body]), path, type_name)
    assert healthy(shared_daemon)


SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=80, deadline=None, suppress_health_check=SLOW_OK)
@given(method=st.sampled_from(FLOW_METHODS), raw=st.binary(max_size=300))
def test_random_bytes_on_every_method(
    shared_daemon: Daemon, chan: grpc.Channel, method: tuple[str, str, bool, bool], raw: bytes
) -> None:
    body = unparseable(method[1], raw)
    assert_refused(call(chan, method, [body]), method[0], method[1])
    assert healthy(shared_daemon), "flowd died or stopped answering"


def test_a_corrupt_message_after_good_ones_on_a_client_stream(shared_daemon: Daemon, chan: grpc.Channel) -> None:
    """UploadBlobs: the blob begun by the good messages is not kept, and the call is refused by name."""
    data = b"x" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    first = code_service_pb2.UploadBlobsRequest(
        chunks=[code_service_pb2.BlobChunk(digest=digest, size=len(data), offset=0, data=data[:400])]
    ).SerializeToString()
    method = next(m for m in METHODS if m[0] == "/flowapi.v1.CodeService/UploadBlobs")
    assert_refused(call(chan, method, [first, b"\xff"]), method[0], method[1])
    missing = code_service_pb2_grpc.CodeServiceStub(chan).FindMissingBlobs(
        code_service_pb2.FindMissingBlobsRequest(digests=[digest]), timeout=30
    )
    assert list(missing.missing_digests) == [digest]
    assert healthy(shared_daemon)


def test_flowd_serves_tasks_after_garbage(shared_daemon: Daemon, chan: grpc.Channel) -> None:
    for method in METHODS:
        call(chan, method, [b"\xff"])
    tasks = task_service_pb2_grpc.TaskServiceStub(chan)
    spec = task_pb2.TaskSpec(command=["sh", "-c", "exit 4"], upload_code=False)
    name = tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=30).task.name
    wait = task_service_pb2.WaitTaskRequest(name=name)
    wait.timeout.seconds = 30
    done = tasks.WaitTask(wait, timeout=40).task
    assert (done.state, done.exit_code) == (task_pb2.TASK_STATE_FAILED, 4)
    log = (shared_daemon.home.root / "flowd.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_a_corrupt_message_after_exec_start_ends_the_exec_refused(shared_daemon: Daemon, chan: grpc.Channel) -> None:
    """ExecTask: the session started by a good `start` ends with the refusal (at its next output)."""
    tasks = task_service_pb2_grpc.TaskServiceStub(chan)
    spec = task_pb2.TaskSpec(command=["sleep", "600"], upload_code=False)
    name = tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=30).task.name
    start = task_service_pb2.ExecTaskRequest()
    start.start.name = name
    start.start.command.extend(["sh", "-c", "while :; do echo tick; sleep 0.1; done"])
    method = next(m for m in METHODS if m[0] == "/flowapi.v1.TaskService/ExecTask")
    assert_refused(call(chan, method, [start.SerializeToString(), b"\xff"]), method[0], method[1])
    tasks.CancelTask(task_service_pb2.CancelTaskRequest(name=name), timeout=30)
    assert healthy(shared_daemon)
