"""The daemon's verdict is authoritative: any client, in any language, gets the same structured
errors over plain gRPC (google.rpc.Status with ErrorInfo, BadRequest and suggestions)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import Daemon
from flow import Flow
from flow.errors import TaskNotFoundError, ValidationError
from flow.transport.grpc_channel import translate
from flowapi.v1 import error_reason_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc


@pytest.fixture
def stub(shared_daemon: Daemon) -> task_service_pb2_grpc.TaskServiceStub:
    channel = grpc.insecure_channel(shared_daemon.home.address)
    return task_service_pb2_grpc.TaskServiceStub(channel)


def _details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list[str], list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    info, fields, tips = error_details_pb2.ErrorInfo(), [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
        elif detail.Is(error_reason_pb2.ErrorSuggestions.DESCRIPTOR):
            found = error_reason_pb2.ErrorSuggestions()
            detail.Unpack(found)
            tips = list(found.suggestions)
    return info, fields, tips


def test_five_mistakes_come_back_as_one_error_listing_all_five(
    shared_daemon: Daemon, stub: task_service_pb2_grpc.TaskServiceStub
) -> None:
    spec = task_pb2.TaskSpec(
        name="bad name!",  # 1
        instance_type="a1000",  # 2: unknown model
        command=["python", "train.py"],
        shell="python train.py",  # 3: two program forms
        env={"1BAD": "x"},  # 4: env name
        volumes=[task_pb2.VolumeSpec(name="data", size_gb=10, mount_path="relative/path")],  # 5
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields, tips = _details(error)
    assert (info.reason, info.domain) == ("VALIDATION_FAILED", "flow")
    assert fields == ["name", "instance_type", "shell", "env['1BAD']", "volumes[0].mount_path"]
    assert any("did you mean 'a100'" in tip for tip in tips)
    # The SDK's mapping of the very same status.
    sdk_error = translate(error, str(shared_daemon.home.socket))
    assert isinstance(sdk_error, ValidationError)
    assert [v.field for v in sdk_error.violations] == fields
    assert sdk_error.error_code == "VALIDATION_FAILED"
    assert "5 problems" in sdk_error.message


def test_nothing_is_created_by_a_refused_request(
    shared_daemon: Daemon, stub: task_service_pb2_grpc.TaskServiceStub
) -> None:
    client: Flow = shared_daemon.client()
    before = {t.task_id for t in client.list_tasks(limit=1000)}
    for spec in (
        task_pb2.TaskSpec(num_instances=-1),
        task_pb2.TaskSpec(env={"A": "x\x00y"}),
        task_pb2.TaskSpec(region="BAD REGION"),
    ):
        with pytest.raises(grpc.RpcError):
            stub.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=10)
    assert {t.task_id for t in client.list_tasks(limit=1000)} == before


def test_not_found_and_bad_names(stub: task_service_pb2_grpc.TaskServiceStub, shared_daemon: Daemon) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetTask(task_service_pb2.GetTaskRequest(name="tasks/t-missing"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert _details(missing.value)[0].reason == "TASK_NOT_FOUND"
    assert isinstance(translate(missing.value, str(shared_daemon.home.socket)), TaskNotFoundError)
    for name in ("t-missing", "tasks/", "tasks/../../etc/passwd", "tasks/" + "x" * 500, ""):
        with pytest.raises(grpc.RpcError) as bad:
            stub.GetTask(task_service_pb2.GetTaskRequest(name=name), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _details(bad.value)[1] == ["name"]


def test_request_id_makes_create_idempotent(stub: task_service_pb2_grpc.TaskServiceStub) -> None:
    request = task_service_pb2.CreateTaskRequest(spec=task_pb2.TaskSpec(command=["true"]), request_id="req-123")
    first = stub.CreateTask(request, timeout=10).task
    second = stub.CreateTask(request, timeout=10).task
    assert first.task_id == second.task_id
    changed = task_service_pb2.CreateTaskRequest(spec=task_pb2.TaskSpec(command=["false"]), request_id="req-123")
    with pytest.raises(grpc.RpcError) as reused:
        stub.CreateTask(changed, timeout=10)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.task_id in reused.value.details()


def test_list_rejects_foreign_tokens_and_unknown_states(stub: task_service_pb2_grpc.TaskServiceStub) -> None:
    for request in (
        task_service_pb2.ListTasksRequest(page_token="garbage"),
        task_service_pb2.ListTasksRequest(page_size=-5),
        task_service_pb2.ListTasksRequest(states=[99]),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListTasks(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_wait_returns_within_its_timeout_for_a_running_task(stub: task_service_pb2_grpc.TaskServiceStub) -> None:
    task = stub.CreateTask(
        task_service_pb2.CreateTaskRequest(spec=task_pb2.TaskSpec(command=["sleep", "600"])), timeout=10
    ).task
    reply = stub.WaitTask(task_service_pb2.WaitTaskRequest(name=task.name, timeout={"nanos": 200_000_000}), timeout=10)
    assert reply.task.state == task_pb2.TASK_STATE_RUNNING
    stub.CancelTask(task_service_pb2.CancelTaskRequest(name=task.name), timeout=10)
    done = stub.WaitTask(task_service_pb2.WaitTaskRequest(name=task.name, timeout={"seconds": 30}), timeout=40)
    assert done.task.state == task_pb2.TASK_STATE_CANCELLED


MALFORMED_IDS = ("", "../../etc/passwd", "/etc/passwd", "a/b", "x" * 500, "a\x00b", " ", "ok\n")


def test_every_rpc_answers_a_malformed_id_alike(shared_daemon: Daemon) -> None:
    """A malformed id is INVALID_ARGUMENT naming its field, whichever call carries it (a well-
    formed id of nothing is NOT_FOUND): the task calls, the volume calls and the provider fields."""
    from flowapi.v1 import instance_service_pb2, instance_service_pb2_grpc, volume_pb2, volume_pb2_grpc

    channel = grpc.insecure_channel(shared_daemon.home.address)
    tasks = task_service_pb2_grpc.TaskServiceStub(channel)
    volumes = volume_pb2_grpc.VolumeServiceStub(channel)
    instances = instance_service_pb2_grpc.InstanceServiceStub(channel)
    calls = {
        "GetTask": (lambda v: tasks.GetTask(task_service_pb2.GetTaskRequest(name=v), timeout=10), "name", "tasks/"),
        "CancelTask": (
            lambda v: tasks.CancelTask(task_service_pb2.CancelTaskRequest(name=v), timeout=10),
            "name",
            "tasks/",
        ),
        "GetVolume": (
            lambda v: volumes.GetVolume(volume_pb2.GetVolumeRequest(volume_id=v), timeout=10),
            "volume_id",
            "",
        ),
        "DeleteVolume": (
            lambda v: volumes.DeleteVolume(volume_pb2.DeleteVolumeRequest(volume_id=v), timeout=10),
            "volume_id",
            "",
        ),
        "CreateTask.provider": (
            lambda v: tasks.CreateTask(
                task_service_pb2.CreateTaskRequest(spec=task_pb2.TaskSpec(command=["true"]), provider=v), timeout=10
            ),
            "provider",
            "",
        ),
        "FindInstances.provider": (
            lambda v: instances.FindInstances(instance_service_pb2.FindInstancesRequest(provider=v), timeout=10),
            "provider",
            "",
        ),
        "CreateVolume.provider": (
            lambda v: volumes.CreateVolume(volume_pb2.CreateVolumeRequest(name="v", size_gb=1, provider=v), timeout=10),
            "provider",
            "",
        ),
    }
    for call, (send, field, prefix) in calls.items():
        for value in MALFORMED_IDS:
            if field == "provider" and value == "":
                continue  # no provider: the daemon's default
            with pytest.raises(grpc.RpcError) as bad:
                send(prefix + value)
            code = bad.value.code()  # type: ignore[attr-defined]
            assert (call, value, code) == (call, value, grpc.StatusCode.INVALID_ARGUMENT)
            assert (call, value, _details(bad.value)[1]) == (call, value, [field])
    for call, (send, field, prefix) in calls.items():
        if call.startswith(("CreateTask", "CreateVolume")):
            continue
        with pytest.raises(grpc.RpcError) as missing:
            send(
                prefix + ("nosuch" if field == "provider" else "vol-missing0" if field == "volume_id" else "t-missing")
            )
        assert (call, missing.value.code()) == (call, grpc.StatusCode.NOT_FOUND)  # type: ignore[attr-defined]
    channel.close()
