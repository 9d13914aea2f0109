"""TaskConfig <-> TaskSpec, TaskRecord -> Task and the CreateTask call: the one converter at the
task boundary. (What reading a Task needs alone, for `flow status`, is in task_snapshot_codec.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

from flow.domain.identity_memo import IdentityMemo
from flow.domain.money import micros_to_dollars
from flow.domain.task.config import MountSpec, TaskConfig, VolumeSpec
from flow.domain.task.dependencies import Condition, Dependency
from flow.domain.task.function_call import FunctionCall
from flow.domain.task.lifecycle import TaskRecord
from flow.wire.calls import Call
from flow.wire.function_codec import function_call_to_proto
from flow.wire.task_snapshot_codec import TaskSnapshot, task_resource_name
from flow.wire.task_spec_codec import CREATE_TASK as CREATE_TASK
from flow.wire.task_spec_codec import DEPENDENCY_CONDITIONS, create_task_call_from_spec, task_spec_from_fields
from flow.wire.task_spec_codec import volume_spec_to_proto as volume_spec_to_proto
from flow.wire.task_state_codec import task_state_from_proto as task_state_from_proto  # flowd imports it from here
from flow.wire.task_state_codec import task_state_to_proto
from flow.wire.timestamps import seconds_from_proto, seconds_to_proto
from flowapi.v1 import task_pb2


def volume_spec_from_proto(msg: task_pb2.VolumeSpec) -> VolumeSpec:
    return VolumeSpec(
        name=msg.name or None,
        size_gb=msg.size_gb or None,
        mount_path=msg.mount_path or None,
        interface=msg.interface or "block",
        iops=msg.iops or None,
        volume_id=msg.volume_id or None,
    )


_CONDITIONS: Final = {Condition(name): number for name, number in DEPENDENCY_CONDITIONS.items()}
_CONDITIONS_BACK: Final = {v: k for k, v in _CONDITIONS.items()} | {
    task_pb2.DEPENDENCY_CONDITION_UNSPECIFIED: Condition.AFTER_OK
}


def dependency_to_proto(dep: Dependency) -> task_pb2.Dependency:
    return task_pb2.Dependency(task_id=dep.task_id, condition=_CONDITIONS[dep.condition])


def dependency_from_proto(msg: task_pb2.Dependency) -> Dependency:
    """An unknown condition number is kept as it came, for validation to name."""
    condition = _CONDITIONS_BACK.get(msg.condition, msg.condition)
    return Dependency(task_id=msg.task_id, condition=condition)  # type: ignore[arg-type]  # judged by validation


def task_config_to_proto(cfg: TaskConfig, secrets: Mapping[str, str] | None = None) -> task_pb2.TaskSpec:
    """The wire form of a valid config (flow.wire.task_spec_codec reads its fields)."""
    return task_spec_from_fields(attrs.asdict(cfg, recurse=False), secrets)


def task_config_from_proto(spec: task_pb2.TaskSpec) -> TaskConfig:
    """Any TaskSpec becomes a TaskConfig (unvalidated: the caller validates)."""
    return TaskConfig(
        name=spec.name or None,
        instance_type=spec.instance_type or None,
        min_gpu_memory_gb=spec.min_gpu_memory_gb if spec.HasField("min_gpu_memory_gb") else None,
        command=tuple(spec.command) if spec.command else None,
        shell=spec.shell if spec.HasField("shell") else None,
        script=spec.script if spec.HasField("script") else None,
        image=spec.image or None,
        env=dict(spec.env),
        working_dir=spec.working_dir or None,
        volumes=tuple(volume_spec_from_proto(v) for v in spec.volumes),
        max_price_per_hour=(
            micros_to_dollars(spec.max_price_per_hour_micros) if spec.HasField("max_price_per_hour_micros") else None
        ),
        max_run_time_hours=spec.max_run_time_hours if spec.HasField("max_run_time_hours") else None,
        region=spec.region or None,
        num_instances=spec.num_instances or 1,
        ssh_keys=tuple(spec.ssh_keys),
        upload_code=spec.upload_code,
        data_mounts=tuple(MountSpec(source=m.source, target=m.target) for m in spec.data_mounts),
        code_root=spec.code_root or None,
        memory_mb=spec.memory_mb if spec.HasField("memory_mb") else None,
        secret_env=tuple(sorted(spec.secret_env)),
        depends_on=tuple(dependency_from_proto(d) for d in spec.depends_on),
        start_after=seconds_from_proto(spec.start_after) if spec.HasField("start_after") else None,
        priority=spec.priority,
        max_retries=spec.max_retries,
    )


# A task's config is sent at every state change: converted once (the Task constructor copies it).
_spec_of: Final = IdentityMemo[TaskConfig, task_pb2.TaskSpec](task_config_to_proto)


def task_record_to_proto(record: TaskRecord) -> task_pb2.Task:
    """The Task resource. A function call is shown without its arguments (they can be large)."""
    msg = task_pb2.Task(
        name=task_resource_name(record.task_id),
        task_id=record.task_id,
        spec=_spec_of(record.config),
        state=task_state_to_proto(record.state),
        state_reason=record.state_reason,
        create_time=seconds_to_proto(record.created_at),
        start_time=seconds_to_proto(record.started_at),
        end_time=seconds_to_proto(record.ended_at),
        provider=record.provider,
        instance_type=record.instance_type,
        cost_per_hour_micros=record.cost_per_hour_micros,
    )
    if record.code_digest:
        msg.spec.code_digest = record.code_digest
    if record.function_call is not None:
        msg.spec.function_call.CopyFrom(function_call_to_proto(record.function_call, with_arguments=False))
    if record.exit_code is not None:
        msg.exit_code = record.exit_code
    for attempt in record.attempts:
        msg.attempts.add(
            state=task_state_to_proto(attempt.state),
            state_reason=attempt.state_reason,
            exit_code=attempt.exit_code,
            start_time=seconds_to_proto(attempt.started_at),
            end_time=seconds_to_proto(attempt.ended_at),
        )
    return msg


def task_config_from_spec(spec: bytes) -> TaskConfig:
    """The config of a TaskSnapshot (whose spec stays encoded until someone asks)."""
    return task_config_from_proto(task_pb2.TaskSpec.FromString(spec))


def create_task_call(
    config: TaskConfig,
    secrets: Mapping[str, str],
    *,
    code_digest: str | None,
    function_call: FunctionCall | None,
    request_id: str,
    validate_only: bool,
    provider: str,
) -> Call[TaskSnapshot]:
    return create_task_call_from_spec(
        task_config_to_proto(config, secrets),
        code_digest=code_digest,
        request_id=request_id,
        provider=provider,
        validate_only=validate_only,
        function_call=None if function_call is None else function_call_to_proto(function_call),
    )


__all__ = [
    "create_task_call",
    "task_config_from_proto",
    "task_config_from_spec",
    "task_config_to_proto",
    "task_record_to_proto",
]
