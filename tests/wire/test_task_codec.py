"""TaskConfig <-> TaskSpec and TaskRecord -> Task: nothing a user configured is lost on the wire."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flow_strategies as fs
from flow.domain.task.config import MountSpec, TaskConfig, VolumeSpec, validate_task_config
from flow.domain.task.lifecycle import TaskRecord, TaskState
from flow.wire.task_codec import (
    task_config_from_proto,
    task_config_from_spec,
    task_config_to_proto,
    task_record_to_proto,
)
from flow.wire.task_snapshot_codec import task_snapshot_from_proto
from flow.wire.task_state_codec import task_state_from_proto, task_state_to_proto
from flow.wire.timestamps import seconds_from_proto
from flowapi.v1 import task_pb2

HALF_MICRO = 0.5e-6


def wire_normal_form(cfg: TaskConfig) -> TaskConfig:
    """What a config means on the wire, where
    - a string `command` travels as `shell` (the contract's `command` is an argument vector), and
    - an empty `code_root` travels as unset (both mean: the current directory)."""
    if isinstance(cfg.command, str):
        cfg = attrs.evolve(cfg, command=None, shell=cfg.command)
    if cfg.code_root == "":
        cfg = attrs.evolve(cfg, code_root=None)
    return cfg


def assert_same_on_the_wire(got: TaskConfig, sent: TaskConfig) -> None:
    # Prices travel as integer micro-dollars: they come back to the nearest micro-dollar (give or
    # take the float arithmetic of the conversion, far below a micro-dollar).
    if sent.max_price_per_hour is None:
        assert got.max_price_per_hour is None
    else:
        assert got.max_price_per_hour is not None
        assert abs(got.max_price_per_hour - sent.max_price_per_hour) <= HALF_MICRO + 1e-10
    assert got == attrs.evolve(wire_normal_form(sent), max_price_per_hour=got.max_price_per_hour)
    # A second trip changes nothing: the wire form is stable.
    assert task_config_to_proto(task_config_from_proto(task_config_to_proto(got))) == task_config_to_proto(got)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs())
def test_config_round_trip(cfg: TaskConfig) -> None:
    spec = task_config_to_proto(cfg)
    got = task_config_from_proto(spec)
    assert_same_on_the_wire(got, cfg)
    # The daemon validates what it receives: a valid config stays valid across the wire.
    assert validate_task_config(got).unwrap() == got
    assert task_config_to_proto(got) == spec


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs())
def test_config_round_trip_through_bytes(cfg: TaskConfig) -> None:
    data = task_config_to_proto(cfg).SerializeToString()
    got = task_config_from_proto(task_pb2.TaskSpec.FromString(data))
    assert_same_on_the_wire(got, cfg)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs(), st.floats(min_value=0, max_value=200_000, exclude_min=True))
def test_any_price_the_core_accepts_stays_valid_on_the_wire(cfg: TaskConfig, price: float) -> None:
    """The daemon re-validates what arrives; a price must not round to $0 on the way."""
    cfg = attrs.evolve(cfg, max_price_per_hour=price)
    if validate_task_config(cfg).value_or(None) is None:
        return
    got = task_config_from_proto(task_config_to_proto(cfg))
    assert validate_task_config(got).value_or(None) == got


def test_program_forms_on_the_wire() -> None:
    argv = task_config_to_proto(TaskConfig(command=["python", "t.py", ""]))
    assert list(argv.command) == ["python", "t.py", ""]
    assert not argv.HasField("shell") and not argv.HasField("script")
    shell = task_config_to_proto(TaskConfig(command="python t.py"))
    assert list(shell.command) == [] and shell.shell == "python t.py"
    script = task_config_to_proto(TaskConfig(script="print(1)"))
    assert script.script == "print(1)" and not script.HasField("shell")
    none = task_config_to_proto(TaskConfig())
    assert not none.command and not none.HasField("shell") and not none.HasField("script")
    assert task_config_from_proto(none) == TaskConfig()


def test_optional_numbers_keep_presence() -> None:
    spec = task_config_to_proto(TaskConfig(min_gpu_memory_gb=40, max_price_per_hour=10.5, max_run_time_hours=0.25))
    assert spec.min_gpu_memory_gb == 40
    assert spec.max_price_per_hour_micros == 10_500_000
    assert spec.max_run_time_hours == 0.25
    bare = task_config_to_proto(TaskConfig())
    for name in ("min_gpu_memory_gb", "max_price_per_hour_micros", "max_run_time_hours"):
        assert not bare.HasField(name)


def test_volumes_and_mounts_on_the_wire() -> None:
    cfg = TaskConfig(
        volumes=[
            VolumeSpec(name="data", size_gb=500, interface="file", iops=3000),
            VolumeSpec(volume_id="vol-abc123", mount_path="/checkpoints"),
        ],
        data_mounts=[MountSpec("s3://bucket/train", "/train")],
    )
    spec = task_config_to_proto(cfg)
    assert spec.volumes[0] == task_pb2.VolumeSpec(name="data", size_gb=500, interface="file", iops=3000)
    assert spec.volumes[1] == task_pb2.VolumeSpec(volume_id="vol-abc123", mount_path="/checkpoints", interface="block")
    assert spec.data_mounts[0] == task_pb2.MountSpec(source="s3://bucket/train", target="/train")
    assert task_config_from_proto(spec) == cfg


def test_other_language_defaults() -> None:
    """A TaskSpec from another client that leaves num_instances and interface unset."""
    spec = task_pb2.TaskSpec(instance_type="a100", volumes=[task_pb2.VolumeSpec(name="d", size_gb=1)])
    cfg = task_config_from_proto(spec)
    assert cfg.num_instances == 1
    assert cfg.volumes[0].interface == "block"
    assert cfg.upload_code is False  # proto3 bool default: other clients opt in explicitly


# --- states and records ------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(TaskState))
def test_state_round_trip(state: TaskState) -> None:
    value = task_state_to_proto(state)
    assert task_pb2.TaskState.Name(value) == f"TASK_STATE_{state.value}"
    assert task_state_from_proto(value) is state


def test_unknown_states_decode_to_none() -> None:
    assert task_state_from_proto(task_pb2.TASK_STATE_UNSPECIFIED) is None
    assert task_state_from_proto(99) is None


def test_every_contract_state_is_known() -> None:
    names = {n for n in (v.name for v in task_pb2.TaskState.DESCRIPTOR.values) if n != "TASK_STATE_UNSPECIFIED"}
    assert names == {f"TASK_STATE_{s.value}" for s in TaskState}


times = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)  # up to the year 2100


def _assert_time(stamp: object, seconds: float) -> None:
    assert 0 <= stamp.nanos < 1_000_000_000
    assert abs(seconds_from_proto(stamp) - seconds) < 1e-6


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    fs.valid_task_configs(),
    st.sampled_from(list(TaskState)),
    st.none() | st.integers(-(2**31), 2**31 - 1),
    times,
    st.none() | times,
    st.none() | times,
    st.integers(0, 2**63 - 1),
    st.text(max_size=20),
)
def test_record_to_proto_keeps_every_field(
    cfg: TaskConfig,
    state: TaskState,
    exit_code: int | None,
    created: float,
    started: float | None,
    ended: float | None,
    cost: int,
    reason: str,
) -> None:
    rec = TaskRecord(
        task_id="t-3kq9x2m4zr",
        config=cfg,
        provider="local",
        created_at=created,
        state=state,
        instance_type="a100-80gb.sxm.4x",
        cost_per_hour_micros=cost,
        exit_code=exit_code,
        state_reason=reason,
        started_at=started,
        ended_at=ended,
    )
    msg = task_pb2.Task.FromString(task_record_to_proto(rec).SerializeToString())
    assert msg.name == "tasks/t-3kq9x2m4zr"
    assert msg.task_id == "t-3kq9x2m4zr"
    assert task_state_from_proto(msg.state) is state
    assert msg.HasField("exit_code") == (exit_code is not None)
    if exit_code is not None:
        assert msg.exit_code == exit_code
    assert msg.state_reason == reason
    assert (msg.provider, msg.instance_type, msg.cost_per_hour_micros) == ("local", "a100-80gb.sxm.4x", cost)
    _assert_time(msg.create_time, created)
    for field, value in (("start_time", started), ("end_time", ended)):
        assert msg.HasField(field) == (value is not None)
        if value is not None:
            _assert_time(getattr(msg, field), value)
    assert msg.spec == task_config_to_proto(cfg)
    # What the SDK reads back from the same message (flow.Task shows a TaskSnapshot).
    seen = task_snapshot_from_proto(msg)
    assert (seen.task_id, seen.name, seen.state, seen.exit_code, seen.state_reason) == (
        rec.task_id,
        cfg.name or rec.task_id,
        state,
        exit_code,
        reason,
    )
    assert (seen.provider, seen.instance_type, seen.cost_per_hour_micros) == ("local", "a100-80gb.sxm.4x", cost)
    for got, sent in ((seen.created_at, created), (seen.started_at, started), (seen.ended_at, ended)):
        assert (got is None) == (sent is None)
        assert got is None or sent is None or abs(got - sent) < 1e-6
    assert_same_on_the_wire(task_config_from_spec(seen.spec), cfg)


@pytest.mark.parametrize(
    "seconds",
    [
        0.0,
        0.5,
        1.9999999999,
        59.999999999,
        1_700_000_000.9999999,
        1_700_000_000.000001,
        1_700_000_000.123456,
        -1.5,
        -0.0000000001,
    ],
)
def test_timestamps_to_the_microsecond(seconds: float) -> None:
    rec = TaskRecord(task_id="t", config=TaskConfig(), provider="local", created_at=seconds)
    stamp = task_record_to_proto(rec).create_time
    _assert_time(stamp, seconds)
    assert stamp.seconds == math.floor(seconds) or stamp.nanos == 0


def test_exit_code_zero_is_present() -> None:
    rec = TaskRecord(task_id="t", config=TaskConfig(), provider="local", created_at=1.0, exit_code=0)
    assert task_record_to_proto(rec).HasField("exit_code")
