"""No input crashes flowd. Hypothesis sends every RPC hostile requests (huge strings, NUL bytes,
path traversal, unknown enum numbers, negative and enormous numbers, deeply nested JSON, Structs
with huge keys), then raw bytes no client library would send (invalid UTF-8 in string fields,
corrupt wire format) and garbage on the socket itself. Every call gets a clean gRPC answer (a
refusal with a status code that says why, never UNKNOWN, never a traceback), flowd stays alive
and healthy after each one, and what it refuses changes nothing (the task list stays the same).

ShutdownDaemon is left out on purpose: any request it can parse stops the daemon, by design."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import (
    channel,
    clean_failure,
    healthy,
    length_delimited,
    raw_unary,
    tag,
    varint,
    varint_field,
)

from conftest import Daemon, pid_alive, wait_until
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

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Target:
    """The daemon under fire, a running and a finished task, and the tasks that must exist."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.channel = channel(daemon)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.code = code_service_pb2_grpc.CodeServiceStub(self.channel)
        self.instances = instance_service_pb2_grpc.InstanceServiceStub(self.channel)
        self.daemon_service = daemon_service_pb2_grpc.DaemonServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        create = self.tasks.CreateTask
        running = task_pb2.TaskSpec(command=["sleep", "600"], upload_code=False)
        finished = task_pb2.TaskSpec(command=["sh", "-c", "echo done; exit 3"], upload_code=False)
        self.running = create(task_service_pb2.CreateTaskRequest(spec=running), timeout=30).task.name
        self.finished = create(task_service_pb2.CreateTaskRequest(spec=finished), timeout=30).task.name
        wait = task_service_pb2.WaitTaskRequest(name=self.finished)
        wait.timeout.seconds = 30
        assert self.tasks.WaitTask(wait, timeout=40).task.state == task_pb2.TASK_STATE_FAILED
        self.expected = self.listed()
        self.calls = 0  # hostile calls answered so far (printed at the end)

    def listed(self) -> dict[str, int]:
        reply = self.tasks.ListTasks(task_service_pb2.ListTasksRequest(page_size=1000), timeout=30)
        return {t.name: t.state for t in reply.tasks}

    def check(self, call: Callable[[], Any], also: tuple[grpc.StatusCode, ...] = ()) -> tuple[grpc.StatusCode, Any]:
        """Makes the call; asserts a clean answer, a live and healthy daemon, an unchanged task list."""
        self.calls += 1
        try:
            result, code, details = call(), grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            result, code, details = None, exc.code(), exc.details() or ""
        if code not in also:
            problem = clean_failure(code, details)
            assert problem is None, problem
        assert healthy(self.daemon), "flowd died or stopped answering"
        assert self.listed() == self.expected, "a refused request changed the task list"
        return code, result


@pytest.fixture(scope="module")
def target(shared_daemon: Daemon) -> Iterator[Target]:
    target = Target(shared_daemon)
    yield target
    target.channel.close()


# --- strategies ---------------------------------------------------------------------------------

INTERESTING = (
    "",
    "tasks/",
    "tasks/../../etc",
    "tasks/t-0/../../etc",
    "../../etc/passwd",
    "/../../etc",
    "/etc/../..",
    "tasks/\x00",
    "a\x00b",
    "\x00",
    "$(touch /tmp/flow-hostile-canary)",
    "`id`",
    "'\"\\",
    "\n\r\t",
    "tasks/\u202egnp",
    "😀",
    "tasks/" + "a" * 65,
    "tasks/t-zzzzzzzzzz",
    "c1.-1",
    "c1." + "9" * 29,
    "c1." + str(2**63 - 1),
    "p1." + "9" * 29,
    "p1.-5",
    "sha256:" + "0" * 64,
    "sha256:" + "g" * 64,
    "%s%n%x",
    "providers/local",
    "local",
    "a100",
    "8xh100",
    "-1",
    "NaN",
)
HUGE_SIZES = (1000, 70_000, 1_000_000, 3_000_000)


def hostile_text() -> st.SearchStrategy[str]:
    huge = st.builds(
        lambda piece, n: piece * (n // len(piece)),
        st.sampled_from(["a", "é", "😀", "\x00", "../"]),
        st.sampled_from(HUGE_SIZES),
    )
    return st.one_of(st.text(max_size=40), st.text(max_size=40), st.sampled_from(INTERESTING), huge)


def small_text() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=20), st.sampled_from(INTERESTING))


INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 1, 2**31 - 1, -(2**31)]))
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**63 - 1, -(2**63)]))
UINT32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 65535, 65536, 2**32 - 1]))
DOUBLES = st.floats(allow_nan=True, allow_infinity=True)
ENUMS = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 9))


def deep_value(depth: int) -> struct_pb2.Value:
    top = struct_pb2.Value()
    node = top
    for _ in range(depth):
        node = node.list_value.values.add()
    node.string_value = "bottom"
    return top


@st.composite
def json_values(draw: st.DrawFn) -> struct_pb2.Value:
    kind = draw(st.sampled_from(["scalar", "deep", "struct", "list"]))
    value = struct_pb2.Value()
    if kind == "deep":
        return deep_value(draw(st.sampled_from([10, 30, 45])))  # deeper: the raw-bytes tests
    if kind == "struct":
        for key in draw(st.lists(hostile_text(), max_size=3)):
            value.struct_value.fields[key].number_value = draw(DOUBLES)
        return value
    if kind == "list":
        for item in draw(st.lists(small_text(), max_size=5)):
            value.list_value.values.add().string_value = item
        return value
    scalar = draw(st.one_of(DOUBLES, small_text(), st.booleans(), st.none()))
    if scalar is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(scalar, bool):
        value.bool_value = scalar
    elif isinstance(scalar, float):
        value.number_value = scalar
    else:
        value.string_value = scalar
    return value


@st.composite
def function_calls(draw: st.DrawFn) -> task_pb2.FunctionCall:
    call = task_pb2.FunctionCall(
        path=draw(small_text()),
        module=draw(st.sampled_from(["", "os", "json", "a..b", "../x"])),
        function=draw(small_text()),
        encoding=draw(ENUMS),
        pickled_arguments=draw(st.binary(max_size=64)),
        python=draw(small_text()),
    )
    for value in draw(st.lists(json_values(), max_size=3)):
        call.args.values.add().CopyFrom(value)
    for key in draw(st.lists(hostile_text(), max_size=2)):
        call.kwargs.fields[key].CopyFrom(draw(json_values()))
    return call


@st.composite
def task_specs(draw: st.DrawFn) -> task_pb2.TaskSpec:
    maybe = st.booleans()
    spec = task_pb2.TaskSpec()
    for name in ("name", "instance_type", "image", "working_dir", "region", "code_root", "code_digest"):
        if draw(maybe):
            setattr(spec, name, draw(hostile_text()))
    for name in ("min_gpu_memory_gb", "num_instances", "memory_mb"):
        if draw(maybe):
            setattr(spec, name, draw(INT32))
    if draw(maybe):
        spec.max_price_per_hour_micros = draw(INT64)
    if draw(maybe):
        spec.max_run_time_hours = draw(DOUBLES)
    program = draw(st.sampled_from(["none", "command", "shell", "script", "two"]))
    if program in ("command", "two"):
        spec.command.extend(draw(st.lists(hostile_text(), max_size=3)))
    if program in ("shell", "two"):
        spec.shell = draw(hostile_text())
    if program == "script":
        spec.script = draw(hostile_text())
    for key, value in draw(st.dictionaries(small_text(), hostile_text(), max_size=3)).items():
        spec.env[key] = value
    for _ in range(draw(st.integers(0, 2))):
        spec.volumes.add(
            name=draw(small_text()),
            size_gb=draw(INT32),
            mount_path=draw(st.sampled_from(["/../../etc", "/data", "relative", "/", "//", "/a/../b"]) | small_text()),
            interface=draw(small_text()),
            iops=draw(INT32),
            volume_id=draw(small_text()),
        )
    for _ in range(draw(st.integers(0, 2))):
        spec.data_mounts.add(source=draw(small_text()), target=draw(small_text()))
    spec.ssh_keys.extend(draw(st.lists(small_text(), max_size=2)))
    spec.upload_code = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        spec.function_call.CopyFrom(draw(function_calls()))
    return spec


# --- every RPC ----------------------------------------------------------------------------------


@FUZZ
@given(spec=task_specs(), request_id=small_text(), validate_only=st.booleans(), provider=small_text())
def test_create_task(
    target: Target, spec: task_pb2.TaskSpec, request_id: str, validate_only: bool, provider: str
) -> None:
    if not validate_only:  # a request that could be accepted runs something harmless
        spec.ClearField("shell")
        spec.ClearField("script")
        spec.ClearField("function_call")
        del spec.command[:]
        spec.command.append("true")
        request_id = f"{request_id[:60]}-{uuid.uuid4()}"  # never the same as an earlier example's
    request = task_service_pb2.CreateTaskRequest(
        spec=spec, request_id=request_id, validate_only=validate_only, provider=provider
    )
    try:
        created = target.tasks.CreateTask(request, timeout=60)
    except grpc.RpcError as exc:
        problem = clean_failure(exc.code(), exc.details() or "")
        assert problem is None, problem
    else:
        if not validate_only:  # accepted: a new task, and nothing else
            assert created.task.name not in target.expected
            target.expected[created.task.name] = created.task.state
            wait = task_service_pb2.WaitTaskRequest(name=created.task.name)
            wait.timeout.seconds = 30
            target.expected[created.task.name] = target.tasks.WaitTask(wait, timeout=40).task.state
    target.check(lambda: None)


@FUZZ
@given(data=st.data())
def test_get_cancel_and_result_by_name(target: Target, data: st.DataObject) -> None:
    # Never the running task for CancelTask: cancelling it would be a legitimate change.
    name = data.draw(st.one_of(hostile_text(), st.sampled_from([target.finished, "tasks/t-0000000000"])))
    target.check(lambda: target.tasks.GetTask(task_service_pb2.GetTaskRequest(name=name), timeout=30))
    target.check(lambda: target.tasks.CancelTask(task_service_pb2.CancelTaskRequest(name=name), timeout=30))
    for which in (name, target.running):
        request = task_service_pb2.GetTaskResultRequest(name=which)
        target.check(lambda request=request: target.tasks.GetTaskResult(request, timeout=30))
        request.wait.seconds, request.wait.nanos = data.draw(INT64), data.draw(INT32)
        # A long wait on the running task ends at the client's deadline: flowd answers just before it.
        target.check(
            lambda request=request: target.tasks.GetTaskResult(request, timeout=1.0),
            also=(grpc.StatusCode.DEADLINE_EXCEEDED,),
        )


@FUZZ
@given(page_size=INT32, page_token=hostile_text(), states=st.lists(ENUMS, max_size=4))
def test_list_tasks(target: Target, page_size: int, page_token: str, states: list[int]) -> None:
    request = task_service_pb2.ListTasksRequest(page_size=page_size, page_token=page_token)
    request.states.extend(states)  # unknown numbers too: proto3 enums are open
    target.check(lambda: target.tasks.ListTasks(request, timeout=30))


@FUZZ
@given(data=st.data(), seconds=INT64, nanos=INT32)
def test_wait_task(target: Target, data: st.DataObject, seconds: int, nanos: int) -> None:
    name = data.draw(st.one_of(hostile_text(), st.sampled_from([target.running, target.finished])))
    request = task_service_pb2.WaitTaskRequest(name=name)
    request.timeout.seconds, request.timeout.nanos = seconds, nanos
    # A long wait on the running task ends at the client's deadline: flowd answers just before it.
    target.check(lambda: target.tasks.WaitTask(request, timeout=1.0), also=(grpc.StatusCode.DEADLINE_EXCEEDED,))


@FUZZ
@given(data=st.data(), cursor=hostile_text(), follow=st.booleans(), tail_lines=INT32)
def test_stream_task_logs(target: Target, data: st.DataObject, cursor: str, follow: bool, tail_lines: int) -> None:
    name = data.draw(st.one_of(hostile_text(), st.sampled_from([target.running, target.finished])))
    if name == target.running:
        follow = False  # it prints nothing and never ends
    request = task_service_pb2.StreamTaskLogsRequest(name=name, cursor=cursor, follow=follow, tail_lines=tail_lines)
    target.check(lambda: list(target.tasks.StreamTaskLogs(request, timeout=30)))


@st.composite
def exec_messages(draw: st.DrawFn, running: str) -> list[task_service_pb2.ExecTaskRequest]:
    argument = draw(small_text())
    command = draw(
        st.sampled_from(
            [
                ["true"],
                ["echo", argument],
                ["cat"],
                ["sh", "-c", "exit 3"],
                [],
                ["/nonexistent-dir/" + argument],
                ["echo", "a\x00b"],
                [""],
            ]
        )
    )
    start = task_service_pb2.ExecStart(
        name=draw(st.one_of(st.just(running), hostile_text())),
        command=command,
        # An interactive shell on a terminal may discard a ^D typed before it is ready, and then
        # waits for a person: not what this test is about. Without a terminal, EOF ends it.
        tty=draw(st.booleans()) and command != [],
        window=task_service_pb2.WindowSize(rows=draw(UINT32), columns=draw(UINT32)),
        term=draw(small_text()),
    )
    first = draw(st.sampled_from(["start", "start", "start", "stdin", "resize", "nothing"]))
    messages = []
    if first == "start":
        messages.append(task_service_pb2.ExecTaskRequest(start=start))
    elif first == "stdin":
        messages.append(task_service_pb2.ExecTaskRequest(stdin=b"hello\n"))
    elif first == "resize":
        messages.append(task_service_pb2.ExecTaskRequest(resize=task_service_pb2.WindowSize(rows=1, columns=1)))
    for kind in draw(st.lists(st.sampled_from(["stdin", "resize", "start"]), max_size=3)):
        if kind == "stdin" and command == ["cat"]:  # input only for cat: nothing interprets it
            typed = draw(st.binary(max_size=100))  # no control characters: ^Z would stop cat
            messages.append(task_service_pb2.ExecTaskRequest(stdin=bytes(c for c in typed if c >= 0x20) + b"\n"))
        elif kind == "resize":
            size = task_service_pb2.WindowSize(rows=draw(UINT32), columns=draw(UINT32))
            messages.append(task_service_pb2.ExecTaskRequest(resize=size))
        else:
            messages.append(task_service_pb2.ExecTaskRequest(start=start))
    messages.append(task_service_pb2.ExecTaskRequest(stdin_closed=True))
    return messages


@FUZZ
@given(data=st.data())
def test_exec_task(target: Target, data: st.DataObject) -> None:
    messages = data.draw(exec_messages(target.running))
    target.check(lambda: list(target.tasks.ExecTask(iter(messages), timeout=30)))


@FUZZ
@given(
    provider=small_text(),
    gpu_memory_gb=st.none() | INT32,
    max_price_micros=st.none() | INT64,
    region=hostile_text(),
    gpu_type=hostile_text(),
    min_gpu_count=st.none() | INT32,
    instance_type=hostile_text(),
    page_size=INT32,
)
def test_find_instances(
    target: Target,
    provider: str,
    gpu_memory_gb: int | None,
    max_price_micros: int | None,
    region: str,
    gpu_type: str,
    min_gpu_count: int | None,
    instance_type: str,
    page_size: int,
) -> None:
    request = instance_service_pb2.FindInstancesRequest(
        provider=provider,
        region=region,
        gpu_type=gpu_type,
        instance_type=instance_type,
        page_size=page_size,
        gpu_memory_gb=gpu_memory_gb,
        max_price_micros=max_price_micros,
        min_gpu_count=min_gpu_count,
    )
    target.check(lambda: target.instances.FindInstances(request, timeout=30))


@FUZZ
@given(
    digests=st.lists(
        st.one_of(hostile_text(), st.builds(lambda b: "sha256:" + hashlib.sha256(b).hexdigest(), st.binary())),
        max_size=20,
    ),
    many=st.booleans(),
)
def test_find_missing_blobs(target: Target, digests: list[str], many: bool) -> None:
    if many:
        digests = digests + [f"sha256:{i:064x}" for i in range(10_000)]
    request = code_service_pb2.FindMissingBlobsRequest(digests=digests)
    target.check(lambda: target.code.FindMissingBlobs(request, timeout=30))


@st.composite
def blob_chunks(draw: st.DrawFn) -> list[code_service_pb2.UploadBlobsRequest]:
    requests = []
    for _ in range(draw(st.integers(0, 3))):
        request = code_service_pb2.UploadBlobsRequest()
        for _ in range(draw(st.integers(0, 3))):
            data = draw(st.binary(max_size=64))
            honest = draw(st.booleans())
            request.chunks.add(
                digest=("sha256:" + hashlib.sha256(data).hexdigest()) if honest else draw(hostile_text()),
                size=len(data) if honest and draw(st.booleans()) else draw(INT64),
                offset=0 if honest else draw(INT64),
                data=data,
            )
        requests.append(request)
    return requests


@FUZZ
@given(requests=blob_chunks())
def test_upload_blobs(target: Target, requests: list[code_service_pb2.UploadBlobsRequest]) -> None:
    target.check(lambda: target.code.UploadBlobs(iter(requests), timeout=30))
    incoming = target.daemon.home.root / "blobs" / "incoming"
    assert list(incoming.iterdir()) == []  # refused uploads leave no partial files behind


@FUZZ
@given(junk=st.binary(max_size=200), service=hostile_text())
def test_daemon_service_and_health(target: Target, junk: bytes, service: str) -> None:
    target.check(lambda: target.daemon_service.GetDaemonInfo(daemon_service_pb2.GetDaemonInfoRequest(), timeout=30))
    target.check(lambda: target.daemon_service.ListProviders(daemon_service_pb2.ListProvidersRequest(), timeout=30))
    for method in ("GetDaemonInfo", "ListProviders"):  # unknown fields and garbage appended
        call = raw_unary(target.channel, f"/flowapi.v1.DaemonService/{method}")
        target.check(lambda call=call: call(junk, timeout=30))
    request = health_pb2.HealthCheckRequest(service=service)
    target.check(lambda: target.health.Check(request, timeout=30))


# --- raw bytes ----------------------------------------------------------------------------------

BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"tasks/\xfe", b"a\x00\xff")
UNARY_METHODS = (
    "/flowapi.v1.TaskService/CreateTask",
    "/flowapi.v1.TaskService/GetTask",
    "/flowapi.v1.TaskService/ListTasks",
    "/flowapi.v1.TaskService/CancelTask",
    "/flowapi.v1.TaskService/WaitTask",
    "/flowapi.v1.TaskService/GetTaskResult",
    "/flowapi.v1.InstanceService/FindInstances",
    "/flowapi.v1.CodeService/FindMissingBlobs",
    "/flowapi.v1.DaemonService/GetDaemonInfo",
    "/flowapi.v1.DaemonService/ListProviders",
)


@st.composite
def raw_fields(draw: st.DrawFn, depth: int = 0) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        number = draw(st.one_of(st.integers(1, 25), st.sampled_from([0, 19000, 2**29 - 1])))
        wire = draw(st.sampled_from([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7]))
        if wire == 0:
            parts.append(tag(number, 0) + varint(draw(INT64)))
        elif wire == 1:
            parts.append(tag(number, 1) + draw(st.binary(min_size=8, max_size=8)))
        elif wire == 5:
            parts.append(tag(number, 5) + draw(st.binary(min_size=4, max_size=4)))
        elif wire == 2:
            payload = draw(
                st.one_of(
                    st.sampled_from(BAD_UTF8),
                    st.binary(max_size=50),
                    raw_fields(depth + 1) if depth < 3 else st.just(b""),
                )
            )
            encoded = length_delimited(number, payload)
            if draw(st.integers(0, 9)) == 0:
                encoded = encoded[: draw(st.integers(0, len(encoded)))]  # cut short
            parts.append(encoded)
        else:
            parts.append(tag(number, wire))
    return b"".join(parts)


def nested_args(depth: int) -> bytes:
    """CreateTaskRequest{spec{function_call{args: ListValue nested `depth` deep}}, validate_only}."""
    inner = b""
    for _ in range(depth):
        inner = length_delimited(6, length_delimited(1, inner))  # Value.list_value{values: ...}
    call = length_delimited(3, b"f") + length_delimited(1, b"a.py") + length_delimited(4, length_delimited(1, inner))
    return length_delimited(1, length_delimited(20, call)) + varint_field(3, 1)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(UNARY_METHODS), body=raw_fields(), utf8=st.sampled_from(BAD_UTF8))
def test_raw_bytes_on_every_method(target: Target, method: str, body: bytes, utf8: bytes) -> None:
    if method.endswith("/CreateTask"):
        body += varint_field(3, 1)  # validate_only (the last value wins): nothing may launch
    call = raw_unary(target.channel, method)
    target.check(lambda: call(body, timeout=30))
    target.check(lambda: call(length_delimited(1, utf8), timeout=30))  # a string field that is not UTF-8


def test_raw_bytes_on_the_streaming_methods(target: Target) -> None:
    rng = random.Random(9)
    stream = target.channel.unary_stream("/flowapi.v1.TaskService/StreamTaskLogs")
    upload = target.channel.stream_unary("/flowapi.v1.CodeService/UploadBlobs")
    exec_ = target.channel.stream_stream("/flowapi.v1.TaskService/ExecTask")
    for _ in range(30):
        junk = rng.randbytes(rng.randint(0, 64))
        bad = length_delimited(1, rng.choice(BAD_UTF8))
        target.check(lambda junk=junk: list(stream(junk, timeout=30)))
        target.check(lambda bad=bad: list(stream(bad, timeout=30)))
        target.check(lambda junk=junk, bad=bad: upload(iter([junk, bad]), timeout=30))
        target.check(lambda junk=junk, bad=bad: list(exec_(iter([junk, bad]), timeout=30)))


@pytest.mark.parametrize("depth", [10, 49, 50, 200, 10_000])
def test_deeply_nested_function_arguments(target: Target, depth: int) -> None:
    call = raw_unary(target.channel, "/flowapi.v1.TaskService/CreateTask")
    target.check(lambda: call(nested_args(depth), timeout=30))


def test_a_struct_with_huge_keys_is_refused_cleanly(target: Target) -> None:
    spec = task_pb2.TaskSpec(function_call=task_pb2.FunctionCall(module="json", function="dumps"))
    spec.function_call.kwargs.fields["k" * 2_000_000].string_value = "v"
    spec.function_call.kwargs.fields["é" * 500_000].number_value = float("nan")
    request = task_service_pb2.CreateTaskRequest(spec=spec, validate_only=True)
    code, _ = target.check(lambda: target.tasks.CreateTask(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


# --- the socket itself --------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def send_raw(daemon: Daemon, data: bytes, read: bool = True) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        sock.connect(str(daemon.home.socket))
        try:
            sock.sendall(data)
            if read:
                sock.recv(65536)
        except OSError:
            pass  # flowd hung up on us: fine


def frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


SOCKET_GARBAGE = (
    b"",
    b"\x00" * 1000,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    PREFACE[:10],
    PREFACE,
    PREFACE + b"\xff" * 100,
    PREFACE + frame(4, 0, 0, b""),  # SETTINGS, then nothing
    PREFACE + frame(4, 0, 0, b"\x00" * 5),  # a SETTINGS frame of a length no setting has
    PREFACE + frame(4, 0, 0, b"", length=2**24 - 1),  # a frame announcing 16 MB
    PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, b"\xff\xff\xff\xff"),  # HEADERS: garbage HPACK
    PREFACE + frame(4, 0, 0, b"") + frame(0, 1, 1, b"x" * 100),  # DATA on a stream never opened
    PREFACE + frame(4, 0, 0, b"") + frame(8, 0, 0, (2**31 - 1).to_bytes(4, "big")),  # WINDOW_UPDATE max
    PREFACE + frame(4, 0, 0, b"") + frame(7, 0, 0, b"\x00" * 8),  # GOAWAY
    PREFACE + frame(4, 0, 0, b"") + frame(9, 0, 1, b"x"),  # CONTINUATION without HEADERS
    PREFACE + frame(4, 0, 0, b"") + frame(0xFF, 0xFF, 0x7FFFFFFF, b"y" * 10),  # an unknown frame type
)


@pytest.mark.parametrize("data", SOCKET_GARBAGE, ids=range(len(SOCKET_GARBAGE)))
def test_garbage_on_the_socket(target: Target, data: bytes) -> None:
    send_raw(target.daemon, data)
    target.check(lambda: None)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=2048), preface=st.booleans())
def test_random_bytes_on_the_socket(target: Target, data: bytes, preface: bool) -> None:
    send_raw(target.daemon, (PREFACE if preface else b"") + data, read=False)
    target.check(lambda: None)


def test_idle_and_half_open_connections_do_not_starve_others(target: Target) -> None:
    held = []
    try:
        for i in range(200):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(target.daemon.home.socket))
            if i % 2:
                sock.sendall(PREFACE[: i % len(PREFACE)])
            held.append(sock)
        target.check(lambda: target.tasks.GetTask(task_service_pb2.GetTaskRequest(name=target.finished), timeout=30))
    finally:
        for sock in held:
            sock.close()
    target.check(lambda: None)


# --- path traversal -----------------------------------------------------------------------------


def upload(target: Target, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    chunk = code_service_pb2.BlobChunk(digest=digest, size=len(data), offset=0, data=data)
    target.code.UploadBlobs(iter([code_service_pb2.UploadBlobsRequest(chunks=[chunk])]), timeout=30)
    return digest


@pytest.mark.parametrize(
    "path",
    [
        "../../../../../tmp/{canary}",
        "/tmp/{canary}",
        "a/../../../../tmp/{canary}",
        "./{canary}",
        "a//{canary}",
        "a/./../../{canary}",
    ],
)
def test_code_manifest_paths_cannot_escape_the_snapshot(target: Target, path: str) -> None:
    canary = f"flow-traversal-{uuid.uuid4().hex}"
    content = upload(target, b"pwned\n")
    entry = {"path": path.format(canary=canary), "digest": content, "size": 6, "executable": False}
    manifest = json.dumps({"version": 1, "files": [entry]}, separators=(",", ":"), sort_keys=True).encode()
    spec = task_pb2.TaskSpec(command=["true"], code_digest=upload(target, manifest))
    code, _ = target.check(lambda: target.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert not Path("/tmp", canary).exists()
    assert not any(p.name == canary for p in target.daemon.home.root.rglob("*"))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (task_pb2.TaskSpec(command=["true"], name="../../etc"), "name"),
        (
            task_pb2.TaskSpec(
                command=["true"], volumes=[task_pb2.VolumeSpec(name="v", size_gb=1, mount_path="/../../etc")]
            ),
            "volumes[0].mount_path",
        ),
        (
            task_pb2.TaskSpec(
                command=["true"], data_mounts=[task_pb2.MountSpec(source="/data", target="/x/../../etc")]
            ),
            "data_mounts[0].target",
        ),
    ],
)
def test_traversal_in_names_and_mount_paths_is_refused(target: Target, spec: task_pb2.TaskSpec, field: str) -> None:
    try:
        target.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=30)
    except grpc.RpcError as exc:
        status = rpc_status.from_call(exc)
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert status is not None
        bad = error_details_pb2.BadRequest()
        next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
        assert [v.field for v in bad.field_violations] == [field]
    else:
        pytest.fail("accepted")
    for name in ("tasks/../../etc", "tasks/..", "tasks/t-0/../../x"):
        code, _ = target.check(
            lambda name=name: target.tasks.GetTask(task_service_pb2.GetTaskRequest(name=name), timeout=30)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT


# --- the bugs these found -------------------------------------------------------------------------


def status_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, Any]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", rpc_status.from_call(exc)
    return grpc.StatusCode.OK, "", None


def test_errors_about_huge_values_reach_the_client_whole(target: Target) -> None:
    """A refusal that quotes a huge value used to exceed gRPC's ~8 KB metadata limit: the client
    then saw RESOURCE_EXHAUSTED "received metadata size exceeds limit" instead of flowd's error."""
    cases = [
        (
            task_service_pb2.CreateTaskRequest(provider="😀" * 500_000, spec=task_pb2.TaskSpec(command=["true"])),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            task_service_pb2.CreateTaskRequest(spec=task_pb2.TaskSpec(command=["true"], env={"1" * 1_000_000: "v"})),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            task_service_pb2.CreateTaskRequest(
                spec=task_pb2.TaskSpec(command=["true"], env={f"{i}x": "v" for i in range(4000)})
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            task_service_pb2.CreateTaskRequest(provider="x" * 3000, spec=task_pb2.TaskSpec(command=["true"])),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, expected in cases:
        for _ in range(5):  # gRPC refuses metadata between its soft and hard limits only sometimes
            code, details, status = status_of(lambda request=request: target.tasks.CreateTask(request, timeout=30))
            assert code == expected, details
            assert status is not None and status.details, "the status lost its details"
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info) and info.domain == "flow"
    code, details, _ = status_of(lambda: target.tasks.CreateTask(cases[2][0], timeout=30))
    assert details.startswith("Invalid task configuration: 4000 problems")


def test_nan_and_infinity_in_function_arguments_are_named_not_crashed_on(target: Target) -> None:
    """json_format refuses NaN in a Value with a ValueError, which reached the client as INTERNAL."""
    for number in (float("nan"), float("inf"), float("-inf")):
        spec = task_pb2.TaskSpec(function_call=task_pb2.FunctionCall(module="json", function="dumps"))
        spec.function_call.args.values.add().number_value = number
        spec.function_call.kwargs.fields["x"].list_value.values.add().number_value = number
        request = task_service_pb2.CreateTaskRequest(spec=spec, validate_only=True)
        code, details, _ = status_of(lambda request=request: target.tasks.CreateTask(request, timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "NaN or infinity" in details


def test_a_page_token_past_every_task_lists_from_the_newest(target: Target) -> None:
    """ "p1." and 29 digits used to overflow SQLite's integers: INTERNAL."""
    request = task_service_pb2.ListTasksRequest(page_token="p1." + "9" * 29, page_size=1000)
    code, reply = target.check(lambda: target.tasks.ListTasks(request, timeout=30))
    assert code == grpc.StatusCode.OK
    assert {t.name for t in reply.tasks} == set(target.expected)


@pytest.mark.parametrize("offset", [7, 2**63 - 1, 10**28])
def test_a_log_cursor_past_the_end_of_the_output_is_refused(target: Target, offset: int) -> None:
    """A cursor past the end used to reach pread: EINVAL or OverflowError, then INTERNAL (and a
    follow on such a cursor would have waited for bytes that never come)."""
    request = task_service_pb2.StreamTaskLogsRequest(name=target.finished, cursor=f"c1.{offset}")
    code, _ = target.check(lambda: list(target.tasks.StreamTaskLogs(request, timeout=30)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    at_end = task_service_pb2.StreamTaskLogsRequest(name=target.finished, cursor="c1.5")  # "done\n"
    code, chunks = target.check(lambda: list(target.tasks.StreamTaskLogs(at_end, timeout=30)))
    assert (code, chunks) == (grpc.StatusCode.OK, [])


def test_exec_window_sizes_beyond_a_terminals_are_refused_or_clamped(target: Target) -> None:
    """A window of 2**32-1 rows used to raise struct.error in flowd: INTERNAL, and a pty leaked;
    a resize that large killed the input thread, so later input and resizes were lost."""
    start = task_service_pb2.ExecStart(
        name=target.running, command=["true"], tty=True, window=task_service_pb2.WindowSize(rows=2**32 - 1, columns=80)
    )
    code, _ = target.check(
        lambda: list(target.tasks.ExecTask(iter([task_service_pb2.ExecTaskRequest(start=start)]), timeout=30))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    def session() -> Iterator[task_service_pb2.ExecTaskRequest]:
        yield task_service_pb2.ExecTaskRequest(
            start=task_service_pb2.ExecStart(name=target.running, command=["sh", "-c", "read x; stty size"], tty=True)
        )
        yield task_service_pb2.ExecTaskRequest(resize=task_service_pb2.WindowSize(rows=70_000, columns=2**32 - 1))
        # One stream, one reader in flowd: the resizes are applied before the input arrives.
        yield task_service_pb2.ExecTaskRequest(resize=task_service_pb2.WindowSize(rows=30, columns=100))
        yield task_service_pb2.ExecTaskRequest(stdin=b"go\n")

    code, replies = target.check(lambda: list(target.tasks.ExecTask(session(), timeout=30)))
    assert code == grpc.StatusCode.OK
    output = b"".join(r.stdout for r in replies)
    assert output.endswith(b"30 100\r\n"), output
    assert replies[-1].exit_code == 0


def test_the_daemon_still_serves_after_all_this(target: Target) -> None:
    print(f"{target.calls} hostile calls answered cleanly by one flowd, pid {target.daemon.pid}")
    assert os.path.exists(target.daemon.home.socket)
    target.check(lambda: target.tasks.GetTask(task_service_pb2.GetTaskRequest(name=target.running), timeout=30))


def test_flowd_still_stops_after_unreadable_messages_on_client_streams(daemon: Daemon) -> None:
    """gRPC answers a client-streaming call whose message it cannot parse itself; flowd's handler
    then answered it a second time, which left the call unfinished for good: SIGTERM (and `flow
    daemon stop`) waited forever for it."""
    with channel(daemon) as chan:
        upload = chan.stream_unary("/flowapi.v1.CodeService/UploadBlobs")
        exec_ = chan.stream_stream("/flowapi.v1.TaskService/ExecTask")
        for call in (
            lambda: upload(iter([length_delimited(1, b"\xff")]), timeout=30),
            lambda: list(exec_(iter([b"\xff\xff"]), timeout=30)),
        ) * 10:  # the second answer races with the first: several tries make it certain
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert clean_failure(caught.value.code(), caught.value.details()) is None
        assert healthy(daemon)
    pid = daemon.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 60)  # flowd stops on SIGTERM
    daemon.pid = None


def test_tasks_with_megabytes_of_arguments_do_not_break_listing(daemon: Daemon) -> None:
    """Two accepted tasks of 2.5 MB each made every ListTasks answer larger than the 4 MB a gRPC
    client accepts by default: listing failed for good with RESOURCE_EXHAUSTED. Pages now end
    before 3 MB (with a next_page_token), so a default client pages through everything."""
    with grpc.insecure_channel(daemon.home.address) as chan:  # default limits, as any client has
        tasks = task_service_pb2_grpc.TaskServiceStub(chan)
        names = set()
        for _ in range(6):  # 6 x 0.9 MB: more than the 4 MB a default client accepts in one reply
            spec = task_pb2.TaskSpec(script="print('big')\n# " + "x" * 900_000, upload_code=False)
            names.add(tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=60).task.name)
        listed: list[str] = []
        token = ""
        while True:
            page = tasks.ListTasks(task_service_pb2.ListTasksRequest(page_token=token), timeout=60)
            assert page.tasks, "a page must hold at least one task"
            listed.extend(t.name for t in page.tasks)
            token = page.next_page_token
            if not token:
                break
        assert sorted(listed) == sorted(names) and len(listed) == 6
