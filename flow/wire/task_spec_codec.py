"""A task's configuration -> TaskSpec, and the CreateTask call: the one encoder of what a user
configured, read from plain field values by TaskConfig's field names.

Field values, not a TaskConfig: `flow run` with plain options encodes them straight from its
command line (building a TaskConfig means importing the core, which costs more than the whole
command may take), and flowd validates the spec as it validates every client's. TaskConfig goes
through the same function with all its fields (flow.wire.task_codec.task_config_to_proto). A
field that is absent or None travels unset, which the decoder reads as TaskConfig's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from flow.domain.money import price_to_micros
from flow.wire.calls import Call, method_path
from flow.wire.task_snapshot_codec import TaskSnapshot, task_snapshot_from_proto
from flow.wire.timestamps import seconds_to_proto
from flowapi.v1 import task_pb2, task_service_pb2

CREATE_TASK: Final = method_path(task_service_pb2.DESCRIPTOR.services_by_name["TaskService"], "CreateTask")
# A dependency's condition by the core's name for it (flow.domain.task.dependencies.Condition, a
# StrEnum: its members are these strings).
DEPENDENCY_CONDITIONS: Final[Mapping[str, task_pb2.DependencyCondition.ValueType]] = {
    "afterok": task_pb2.DEPENDENCY_CONDITION_AFTER_OK,
    "afterany": task_pb2.DEPENDENCY_CONDITION_AFTER_ANY,
    "afternotok": task_pb2.DEPENDENCY_CONDITION_AFTER_NOT_OK,
    "after": task_pb2.DEPENDENCY_CONDITION_AFTER,
    "singleton": task_pb2.DEPENDENCY_CONDITION_SINGLETON,
}


def volume_spec_to_proto(vol: Any) -> task_pb2.VolumeSpec:
    """A VolumeSpec (anything with its fields)."""
    return task_pb2.VolumeSpec(
        name=vol.name or "",
        size_gb=vol.size_gb or 0,
        mount_path=vol.mount_path or "",
        interface=vol.interface,
        iops=vol.iops or 0,
        volume_id=vol.volume_id or "",
    )


def task_spec_from_fields(fields: Mapping[str, Any], secrets: Mapping[str, str] | None = None) -> task_pb2.TaskSpec:
    """The wire form of a config given as TaskConfig's fields. A string `command` travels as
    `shell`. The values of `secret_env` travel only when given (submitting); otherwise the names
    alone, with empty values (every answer flowd sends)."""

    def given(name: str) -> Any:
        return fields.get(name)

    spec = task_pb2.TaskSpec(
        name=given("name") or "",
        instance_type=given("instance_type") or "",
        image=given("image") or "",
        env=given("env") or {},
        working_dir=given("working_dir") or "",
        volumes=[volume_spec_to_proto(v) for v in given("volumes") or ()],
        region=given("region") or "",
        num_instances=given("num_instances") or 0,
        ssh_keys=list(given("ssh_keys") or ()),
        upload_code=bool(given("upload_code")),
        data_mounts=[task_pb2.MountSpec(source=m.source, target=m.target) for m in given("data_mounts") or ()],
        code_root=given("code_root") or "",
    )
    if given("min_gpu_memory_gb") is not None:
        spec.min_gpu_memory_gb = fields["min_gpu_memory_gb"]
    command = given("command")
    if isinstance(command, (tuple, list)):
        spec.command.extend(command)
    elif isinstance(command, str):
        spec.shell = command
    if given("shell") is not None:
        spec.shell = fields["shell"]
    if given("script") is not None:
        spec.script = fields["script"]
    if given("max_price_per_hour") is not None:
        spec.max_price_per_hour_micros = price_to_micros(fields["max_price_per_hour"])
    if given("max_run_time_hours") is not None:
        spec.max_run_time_hours = fields["max_run_time_hours"]
    if given("memory_mb") is not None:
        spec.memory_mb = fields["memory_mb"]
    for name in given("secret_env") or ():
        spec.secret_env[name] = (secrets or {}).get(name, "")
    for dep in given("depends_on") or ():
        spec.depends_on.append(task_pb2.Dependency(task_id=dep.task_id, condition=DEPENDENCY_CONDITIONS[dep.condition]))
    begin = seconds_to_proto(given("start_after"))
    if begin is not None:
        spec.start_after.CopyFrom(begin)
    if given("priority") is not None:
        spec.priority = fields["priority"]
    if given("max_retries") is not None:
        spec.max_retries = fields["max_retries"]
    return spec


def create_task_call_from_spec(
    spec: task_pb2.TaskSpec,
    *,
    code_digest: str | None,
    request_id: str,
    provider: str,
    validate_only: bool = False,
    function_call: task_pb2.FunctionCall | None = None,
) -> Call[TaskSnapshot]:
    """CreateTask for `spec` (taken over: the digest and the function call are set in it)."""
    if code_digest:
        spec.code_digest = code_digest
    if function_call is not None:
        spec.function_call.CopyFrom(function_call)
    request = task_service_pb2.CreateTaskRequest(
        spec=spec, request_id=request_id, validate_only=validate_only, provider=provider
    )
    return Call(
        CREATE_TASK,
        request.SerializeToString(),
        lambda raw: task_snapshot_from_proto(task_service_pb2.CreateTaskResponse.FromString(raw).task),
    )


__all__ = ["CREATE_TASK", "create_task_call_from_spec", "task_spec_from_fields", "volume_spec_to_proto"]
