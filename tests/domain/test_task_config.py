"""Every rule of flow.domain.task.config: the field path, the value shown, the problem and a fix."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

import flow.config
import flow_strategies as fs
from flow.domain.errors import ErrorReason, FieldViolation, show_value
from flow.domain.task.config import (
    DEFAULT_COMMAND,
    MountSpec,
    TaskConfig,
    VolumeSpec,
    mount_spec_violations,
    program_of,
    task_config_violations,
    validate_task_config,
    volume_spec_violations,
)
from flow.errors import ValidationError

BASE: dict[str, Any] = {"instance_type": "a100"}


def violations_of(**changes: Any) -> tuple[FieldViolation, ...]:
    return task_config_violations(TaskConfig(**{**BASE, **changes}))


def new_vol(name: str = "data", size_gb: int = 10, **kw: Any) -> VolumeSpec:
    return VolumeSpec(name=name, size_gb=size_gb, **kw)


def old_vol(volume_id: str = "vol-abc123", mount_path: str | None = "/ckpt", **kw: Any) -> VolumeSpec:
    return VolumeSpec(volume_id=volume_id, mount_path=mount_path, **kw)


# (changes to a valid config, expected field paths in order, words of the first problem, the bad value)
INVALID: list[tuple[dict[str, Any], list[str], str, object]] = [
    # name: letters, digits, '-', '_'; 1-63 characters, starting with a letter or digit
    ({"name": "bad name"}, ["name"], "is not a valid name", "bad name"),
    ({"name": "-lead"}, ["name"], "is not a valid name", "-lead"),
    ({"name": "_lead"}, ["name"], "is not a valid name", "_lead"),
    ({"name": "a" * 64}, ["name"], "is not a valid name", "a" * 64),
    ({"name": ""}, ["name"], "is not a valid name", ""),
    ({"name": "naïve"}, ["name"], "is not a valid name", "naïve"),
    ({"name": "job\n"}, ["name"], "is not a valid name", "job\n"),
    ({"name": 5}, ["name"], "must be a string, not int", 5),
    # instance_type XOR min_gpu_memory_gb
    ({"min_gpu_memory_gb": 40}, ["min_gpu_memory_gb"], "is given together with instance_type", 40),
    ({"instance_type": "zz9000"}, ["instance_type"], "unknown GPU model", "zz9000"),
    ({"instance_type": ""}, ["instance_type"], "is empty", ""),
    ({"instance_type": 100}, ["instance_type"], "must be a string", 100),
    ({"instance_type": None, "min_gpu_memory_gb": 0}, ["min_gpu_memory_gb"], "must be at least 1", 0),
    ({"instance_type": None, "min_gpu_memory_gb": 4097}, ["min_gpu_memory_gb"], "must be at most 4096", 4097),
    ({"instance_type": None, "min_gpu_memory_gb": True}, ["min_gpu_memory_gb"], "must be a whole number", True),
    ({"instance_type": None, "min_gpu_memory_gb": 40.0}, ["min_gpu_memory_gb"], "must be a whole number", 40.0),
    ({"instance_type": None, "min_gpu_memory_gb": "40"}, ["min_gpu_memory_gb"], "must be a whole number", "40"),
    # at most one of command / shell / script
    ({"command": ["python"], "shell": "ls"}, ["shell"], "is given together with command", "ls"),
    ({"command": "ls", "script": "print(1)"}, ["script"], "is given together with command", "print(1)"),
    ({"shell": "ls", "script": "print(1)"}, ["script"], "is given together with shell", "print(1)"),
    ({"command": []}, ["command"], "is an empty list", []),
    ({"command": ()}, ["command"], "is an empty list", []),
    ({"command": ["python", "a\x00b"]}, ["command[1]"], "contains a NUL byte", "a\x00b"),
    ({"command": ["", "train.py"]}, ["command[0]"], "the program name is empty", ""),
    ({"command": ["python", 3]}, ["command[1]"], "must be a string, not int", 3),
    ({"command": ["python", None]}, ["command[1]"], "must be a string, not NoneType", None),
    ({"command": "   "}, ["command"], "is empty", "   "),
    ({"command": "echo \x00"}, ["command"], "NUL byte", "echo \x00"),
    ({"command": 5}, ["command"], "must be a list of strings or a string, not int", 5),
    ({"command": {"python": "x"}}, ["command"], "must be a list of strings or a string, not dict", {"python": "x"}),
    ({"shell": ""}, ["shell"], "is empty", ""),
    ({"shell": " \n\t"}, ["shell"], "is empty", " \n\t"),
    ({"shell": "ls\x00"}, ["shell"], "NUL byte", "ls\x00"),
    ({"shell": ["ls"]}, ["shell"], "must be a string, not list", ["ls"]),
    ({"script": "\n"}, ["script"], "is empty", "\n"),
    ({"script": "x" * 1_000_001}, ["script"], "above the limit of 1000000", "x" * 1_000_001),
    # image, working_dir
    ({"image": "has space:1"}, ["image"], "is not an image reference", "has space:1"),
    ({"image": ""}, ["image"], "is not an image reference", ""),
    ({"image": "ubuntu\n"}, ["image"], "line break", "ubuntu\n"),
    ({"working_dir": ""}, ["working_dir"], "is empty", ""),
    ({"working_dir": "/a\nb"}, ["working_dir"], "line break", "/a\nb"),
    ({"working_dir": 7}, ["working_dir"], "must be a string, not int", 7),
    # env
    ({"env": {"1BAD": "x"}}, ["env['1BAD']"], "is not a valid environment variable name", "1BAD"),
    ({"env": {"A-B": "x"}}, ["env['A-B']"], "is not a valid environment variable name", "A-B"),
    ({"env": {"": "x"}}, ["env['']"], "is not a valid environment variable name", ""),
    ({"env": {"A=B": "x"}}, ["env['A=B']"], "is not a valid environment variable name", "A=B"),
    ({"env": {1: "x"}}, ["env"], "is not a valid environment variable name", 1),
    ({"env": {"BATCH_SIZE": 256}}, ["env['BATCH_SIZE']"], "must be a string, not int", 256),
    ({"env": {"DEBUG": True}}, ["env['DEBUG']"], "must be a string, not bool", True),
    ({"env": ["A=1"]}, ["env"], "must be a mapping", ["A=1"]),
    ({"env": None}, ["env"], "must be a mapping", None),
    # new vs existing volumes
    ({"volumes": [VolumeSpec(size_gb=10)]}, ["volumes[0].name"], "is required for a new volume", None),
    (
        {"volumes": [old_vol(size_gb=10)]},
        ["volumes[0].size_gb"],
        "cannot be set when attaching an existing volume",
        10,
    ),
    ({"volumes": [old_vol(iops=3000)]}, ["volumes[0].iops"], "cannot be set when attaching an existing volume", 3000),
    (
        {"volumes": [old_vol(size_gb=10, iops=3000)]},
        ["volumes[0].size_gb", "volumes[0].iops"],
        "cannot be set when attaching an existing volume",
        10,
    ),
    (
        {"volumes": [old_vol(mount_path=None)]},
        ["volumes[0].mount_path"],
        "is required when attaching by volume_id",
        None,
    ),
    ({"volumes": [old_vol(volume_id="bad id!")]}, ["volumes[0].volume_id"], "is not a valid volume id", "bad id!"),
    ({"volumes": [old_vol(volume_id="")]}, ["volumes[0].volume_id"], "is not a valid volume id", ""),
    ({"volumes": [old_vol(volume_id=12)]}, ["volumes[0].volume_id"], "is not a valid volume id", 12),
    ({"volumes": [new_vol(size_gb=0)]}, ["volumes[0].size_gb"], "must be at least 1", 0),
    ({"volumes": [new_vol(size_gb=1_000_001)]}, ["volumes[0].size_gb"], "must be at most 1000000", 1_000_001),
    ({"volumes": [new_vol(size_gb=True)]}, ["volumes[0].size_gb"], "must be a whole number", True),
    ({"volumes": [new_vol(size_gb=1.5)]}, ["volumes[0].size_gb"], "must be a whole number", 1.5),
    ({"volumes": [new_vol(iops=0)]}, ["volumes[0].iops"], "must be at least 1", 0),
    ({"volumes": [new_vol(iops=10_000_001)]}, ["volumes[0].iops"], "must be at most 10000000", 10_000_001),
    ({"volumes": [new_vol(interface="nfs")]}, ["volumes[0].interface"], "is not a volume interface", "nfs"),
    ({"volumes": [new_vol(name="bad name")]}, ["volumes[0].name"], "is not a valid name", "bad name"),
    ({"volumes": [new_vol(mount_path="data")]}, ["volumes[0].mount_path"], "must be an absolute path", "data"),
    ({"volumes": [new_vol(mount_path="/a/../b")]}, ["volumes[0].mount_path"], "must not contain '..'", "/a/../b"),
    ({"volumes": [new_vol(mount_path="/")]}, ["volumes[0].mount_path"], "must not be the root directory", "/"),
    ({"volumes": [new_vol(mount_path="//")]}, ["volumes[0].mount_path"], "must not be the root directory", "//"),
    ({"volumes": [new_vol(mount_path="")]}, ["volumes[0].mount_path"], "must be an absolute path", ""),
    ({"volumes": "data"}, ["volumes"], "must be a list", "data"),
    ({"volumes": [{"name": "data"}]}, ["volumes[0]"], "must be a VolumeSpec", {"name": "data"}),
    ({"volumes": [new_vol(), 5]}, ["volumes[1]"], "must be a VolumeSpec", 5),
    # mount paths: unique and not nested, across volumes and data mounts, default /volumes/<name>
    (
        {"volumes": [new_vol("a", mount_path="/data"), new_vol("b", mount_path="/data")]},
        ["volumes[1].mount_path"],
        "is the same mount path as volumes[0].mount_path",
        "/data",
    ),
    (
        {"volumes": [new_vol("a", mount_path="/data/"), new_vol("b", mount_path="/data")]},
        ["volumes[1].mount_path"],
        "is the same mount path as volumes[0].mount_path",
        "/data",
    ),
    (
        {"volumes": [new_vol("data"), new_vol("other", mount_path="/volumes/data")]},
        ["volumes[1].mount_path"],
        "is the same mount path as volumes[0].mount_path",
        "/volumes/data",
    ),
    (
        {"volumes": [new_vol("a", mount_path="/data"), new_vol("b", mount_path="/data/sub")]},
        ["volumes[1].mount_path"],
        "is nested with volumes[0].mount_path (/data)",
        "/data/sub",
    ),
    (
        {"volumes": [new_vol("a", mount_path="/data/sub"), new_vol("b", mount_path="/data")]},
        ["volumes[1].mount_path"],
        "is nested with volumes[0].mount_path (/data/sub)",
        "/data",
    ),
    (
        {"volumes": [new_vol("a", mount_path="/data")], "data_mounts": [MountSpec("s3://b/p", "/data/train")]},
        ["data_mounts[0].target"],
        "is nested with volumes[0].mount_path (/data)",
        "/data/train",
    ),
    (
        {"volumes": [new_vol("models")], "data_mounts": [MountSpec("s3://b/p", "/volumes")]},
        ["data_mounts[0].target"],
        "is nested with volumes[0].mount_path (/volumes/models)",
        "/volumes",
    ),
    (
        {"data_mounts": [MountSpec("s3://b/train", "/in"), MountSpec("s3://b/val", "/in")]},
        ["data_mounts[1].target"],
        "is the same mount path as data_mounts[0].target",
        "/in",
    ),
    # data mounts
    ({"data_mounts": [MountSpec("s3:///prefix", "/d")]}, ["data_mounts[0].source"], "has no bucket", "s3:///prefix"),
    ({"data_mounts": [MountSpec("s3://", "/d")]}, ["data_mounts[0].source"], "has no bucket", "s3://"),
    (
        {"data_mounts": [MountSpec("file://rel/path", "/d")]},
        ["data_mounts[0].source"],
        "is not an absolute file:// URL",
        "file://rel/path",
    ),
    (
        {"data_mounts": [MountSpec("data/train", "/d")]},
        ["data_mounts[0].source"],
        "is neither an s3:// URL nor an absolute path",
        "data/train",
    ),
    (
        {"data_mounts": [MountSpec("https://x.org/d", "/d")]},
        ["data_mounts[0].source"],
        "is neither an s3:// URL nor an absolute path",
        "https://x.org/d",
    ),
    ({"data_mounts": [MountSpec("s3://b/p\x00", "/d")]}, ["data_mounts[0].source"], "NUL byte", "s3://b/p\x00"),
    ({"data_mounts": [MountSpec("s3://b/p", "d")]}, ["data_mounts[0].target"], "must be an absolute path", "d"),
    ({"data_mounts": [MountSpec(5, "/d")]}, ["data_mounts[0].source"], "must be a string, not int", 5),
    ({"data_mounts": [MountSpec(None, "/d")]}, ["data_mounts[0].source"], "is required", None),
    ({"data_mounts": [MountSpec("s3://b/p", None)]}, ["data_mounts[0].target"], "is required", None),
    ({"data_mounts": [("s3://b/p", "/d")]}, ["data_mounts[0]"], "must be a MountSpec", ("s3://b/p", "/d")),
    ({"data_mounts": "s3://b/p"}, ["data_mounts"], "must be a list", "s3://b/p"),
    # prices and run times: positive, finite, bounded; bool is not a number
    ({"max_price_per_hour": 0}, ["max_price_per_hour"], "must be greater than 0", 0),
    ({"max_price_per_hour": -1.0}, ["max_price_per_hour"], "must be greater than 0", -1.0),
    ({"max_price_per_hour": 100_000.01}, ["max_price_per_hour"], "must be at most 100000", 100_000.01),
    ({"max_price_per_hour": math.nan}, ["max_price_per_hour"], "must be a finite number", math.nan),
    ({"max_price_per_hour": math.inf}, ["max_price_per_hour"], "must be a finite number", math.inf),
    ({"max_price_per_hour": True}, ["max_price_per_hour"], "must be a finite number", True),
    ({"max_price_per_hour": "10"}, ["max_price_per_hour"], "must be a finite number", "10"),
    ({"max_price_per_hour": 10**400}, ["max_price_per_hour"], "must be at most 100000", 10**400),
    ({"max_price_per_hour": 4e-7}, ["max_price_per_hour"], "must be at least 0.000001", 4e-7),
    ({"max_run_time_hours": 0.0}, ["max_run_time_hours"], "must be greater than 0", 0.0),
    ({"max_run_time_hours": -0.5}, ["max_run_time_hours"], "must be greater than 0", -0.5),
    ({"max_run_time_hours": 8760.5}, ["max_run_time_hours"], "must be at most 8760", 8760.5),
    ({"max_run_time_hours": -math.inf}, ["max_run_time_hours"], "must be a finite number", -math.inf),
    ({"max_run_time_hours": False}, ["max_run_time_hours"], "must be a finite number", False),
    # region
    ({"region": "US-Central1"}, ["region"], "is not a region name", "US-Central1"),
    ({"region": "us_central1"}, ["region"], "is not a region name", "us_central1"),
    ({"region": "-us"}, ["region"], "is not a region name", "-us"),
    ({"region": "us--east"}, ["region"], "is not a region name", "us--east"),
    ({"region": ""}, ["region"], "is not a region name", ""),
    ({"region": "a" * 64}, ["region"], "is not a region name", "a" * 64),
    ({"region": "us-east\n"}, ["region"], "line break", "us-east\n"),
    # num_instances: a whole number from 1 to 1024
    ({"num_instances": 0}, ["num_instances"], "must be at least 1", 0),
    ({"num_instances": -3}, ["num_instances"], "must be at least 1", -3),
    ({"num_instances": 1025}, ["num_instances"], "must be at most 1024", 1025),
    ({"num_instances": True}, ["num_instances"], "must be a whole number", True),
    ({"num_instances": 2.0}, ["num_instances"], "must be a whole number", 2.0),
    ({"num_instances": None}, ["num_instances"], "must be a whole number", None),
    # ssh keys, upload_code, code_root
    ({"ssh_keys": ["  "]}, ["ssh_keys[0]"], "is not a key name", "  "),
    ({"ssh_keys": ["ok", "a\nb"]}, ["ssh_keys[1]"], "is not a key name", "a\nb"),
    ({"ssh_keys": ["k\x00"]}, ["ssh_keys[0]"], "is not a key name", "k\x00"),
    ({"ssh_keys": [3]}, ["ssh_keys[0]"], "is not a key name", 3),
    ({"ssh_keys": "my-key"}, ["ssh_keys"], "must be a list", "my-key"),
    ({"upload_code": "yes"}, ["upload_code"], "must be true or false", "yes"),
    ({"upload_code": 1}, ["upload_code"], "must be true or false", 1),
    ({"code_root": "/src\x00"}, ["code_root"], "NUL byte", "/src\x00"),
    ({"code_root": "/a\nb"}, ["code_root"], "line break", "/a\nb"),
    # text that is not UTF-8 (lone surrogates: undecodable bytes from argv, os.environ, file names)
    ({"command": ["python", "caf\udce9"]}, ["command[1]"], "is not valid UTF-8", "caf\udce9"),
    ({"shell": "echo caf\udce9"}, ["shell"], "is not valid UTF-8", "echo caf\udce9"),
    ({"code_root": "/home/caf\udce9"}, ["code_root"], "is not valid UTF-8", "/home/caf\udce9"),
    ({"ssh_keys": ["k\udce9"]}, ["ssh_keys[0]"], "is not a key name", "k\udce9"),
    ({"data_mounts": [MountSpec("/caf\udce9", "/d")]}, ["data_mounts[0].source"], "is not valid UTF-8", "/caf\udce9"),
]


def _case_id(case: tuple[dict[str, Any], list[str], str, object]) -> str:
    return f"{case[1][0]}:{case[2]}"[:60]


@pytest.mark.parametrize(("changes", "fields", "problem", "value"), INVALID, ids=[_case_id(c) for c in INVALID])
def test_each_rule_names_field_value_and_fix(
    changes: dict[str, Any], fields: list[str], problem: str, value: object
) -> None:
    found = violations_of(**changes)
    assert [v.field for v in found] == fields
    first = found[0]
    assert problem in first.problem
    assert first.value == show_value(value)
    assert first.fix.strip()
    # One validation error, whose message names the field, the value and the fix.
    result = validate_task_config(TaskConfig(**{**BASE, **changes}))
    assert isinstance(result, Failure)
    error = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert error.violations == found
    assert f"{first.field}: {first.problem} (got {first.value}); {first.fix}" in error.message
    assert first.fix in error.suggestions


def test_env_value_with_nul_is_not_echoed() -> None:
    """Environment values are often secrets: a problem with one never repeats it."""
    found = violations_of(env={"WANDB_API_KEY": "s3cr3t\x00"})
    assert [v.field for v in found] == ["env['WANDB_API_KEY']"]
    assert "s3cr3t" not in found[0].render()


def test_env_value_not_utf8_is_not_echoed() -> None:
    found = violations_of(env={"TOKEN": "s3cr3t\udcff"})
    assert [v.field for v in found] == ["env['TOKEN']"]
    assert "UTF-8" in found[0].problem
    assert "s3cr3t" not in found[0].render()


def test_env_value_type_fix_shows_how_to_quote() -> None:
    (found,) = violations_of(env={"BATCH_SIZE": 256})
    assert found.fix == 'quote the value, e.g. BATCH_SIZE: "256"'


def test_too_many_env_entries() -> None:
    found = violations_of(env={f"V{i}": "x" for i in range(4097)})
    assert [v.field for v in found] == ["env"]
    assert "more than 4096 entries" in found[0].problem
    assert violations_of(env={f"V{i}": "x" for i in range(4096)}) == ()


VALID: list[dict[str, Any]] = [
    {},
    {"instance_type": None},
    {"instance_type": None, "min_gpu_memory_gb": 40},
    {"instance_type": None, "min_gpu_memory_gb": 4096},
    {"instance_type": "8x H100"},
    {"name": "a"},
    {"name": "A" * 63},
    {"name": "train_job-1"},
    {"name": "9lives"},
    {"command": ["python", "train.py", "--epochs", "10"]},
    {"command": ["python", ""]},
    {"command": ["echo", "héllo wörld ✓", "multi\nline"]},
    {"command": "python train.py"},
    {"shell": "cd /app && python train.py"},
    {"script": "import torch\nprint(1)\n"},
    {"script": "x" * 1_000_000},
    {"image": "pytorch/pytorch:2.1.0-cuda12.1-cudnn8"},
    {"env": {"WANDB_API_KEY": "...", "BATCH_SIZE": "256", "_X": "", "a1": "multi\nline ✓"}},
    {"working_dir": "/workspace"},
    {"working_dir": "relative/dir"},
    {"volumes": [VolumeSpec(size_gb=500, mount_path="/data", name="datasets")]},
    {"volumes": [VolumeSpec(volume_id="vol-abc123", mount_path="/checkpoints")]},
    {"volumes": [VolumeSpec(volume_id="vol-abc123", name="ckpt")]},
    {"volumes": [new_vol(interface="file", iops=3000, size_gb=1_000_000)]},
    {"volumes": [new_vol("data"), new_vol("models")]},
    {"volumes": [new_vol("a", mount_path="/data"), new_vol("b", mount_path="/database")]},
    {"volumes": [new_vol("a", mount_path="/data/")], "data_mounts": [MountSpec("s3://bucket/x", "/data2")]},
    {"data_mounts": [MountSpec("s3://bucket/train", "/train"), MountSpec("s3://bucket/val", "/val")]},
    {"data_mounts": [MountSpec("s3://bucket", "/d"), MountSpec("file:///srv/x", "/e"), MountSpec("/srv/y", "/f")]},
    {"max_price_per_hour": 100_000.0, "max_run_time_hours": 8760.0},
    {"max_price_per_hour": 10, "max_run_time_hours": 24},
    {"max_price_per_hour": 0.000001, "max_run_time_hours": 1e-9},
    {"region": "us-central1-b"},
    {"region": "a" * 63},
    {"num_instances": 1024},
    {"ssh_keys": ["my-key", "other key"]},
    {"upload_code": False},
    {"code_root": "/home/me/project"},
]


@pytest.mark.parametrize("changes", VALID)
def test_valid_configs_have_no_violations(changes: dict[str, Any]) -> None:
    cfg = TaskConfig(**{**BASE, **changes})
    assert task_config_violations(cfg) == ()
    assert validate_task_config(cfg) == Success(cfg)


def test_seed_example_is_valid() -> None:
    cfg = TaskConfig(
        name="training-job",
        instance_type="8xh100",
        command=["python", "train.py", "--distributed"],
        image="pytorch/pytorch:2.1.0-cuda12.1-cudnn8",
        volumes=[VolumeSpec(size_gb=500, mount_path="/data", name="datasets")],
        env={"BATCH_SIZE": "256"},
        max_price_per_hour=50.0,
        max_run_time_hours=24.0,
    )
    assert validate_task_config(cfg) == Success(cfg)
    assert cfg.command == ("python", "train.py", "--distributed")  # lists are stored as tuples
    assert isinstance(cfg.volumes, tuple)


def test_five_mistakes_make_one_error_listing_all_five() -> None:
    cfg = TaskConfig(
        name="bad name!",
        instance_type="a100",
        min_gpu_memory_gb=40,
        command=[],
        env={"1BAD": "x"},
        volumes=[VolumeSpec(volume_id="vol-1", size_gb=10, mount_path="/ckpt")],
    )
    result = validate_task_config(cfg)
    assert isinstance(result, Failure)
    error = result.failure()
    fields = ["name", "min_gpu_memory_gb", "command", "env['1BAD']", "volumes[0].size_gb"]
    assert [v.field for v in error.violations] == fields
    assert error.message.startswith("Invalid task configuration: 5 problems\n")
    for line, v in zip(error.message.splitlines()[1:], error.violations, strict=True):
        assert line == f"  - {v.render()}"
    assert len(error.suggestions) == 5
    # The SDK class raises the same single error on construction.
    with pytest.raises(ValidationError) as raised:
        flow.config.TaskConfig(
            name="bad name!",
            instance_type="a100",
            min_gpu_memory_gb=40,
            command=[],
            env={"1BAD": "x"},
            volumes=[VolumeSpec(volume_id="vol-1", size_gb=10, mount_path="/ckpt")],
        )
    assert [v.field for v in raised.value.violations] == fields
    assert raised.value.error_code == "VALIDATION_FAILED"
    assert raised.value.message == error.message


def test_default_mount_path_is_volumes_name() -> None:
    assert VolumeSpec(name="data", size_gb=100).effective_mount_path == "/volumes/data"
    assert VolumeSpec(name="data", mount_path="/dataset", size_gb=100).effective_mount_path == "/dataset"
    assert VolumeSpec(volume_id="vol-1", mount_path="/ckpt").effective_mount_path == "/ckpt"
    assert VolumeSpec(volume_id="vol-1").effective_mount_path is None


def test_spec_violations_without_a_path_name_the_bare_field() -> None:
    """The SDK's VolumeSpec/MountSpec report their own fields, without a leading dot."""
    vol = VolumeSpec(volume_id="vol-1", mount_path="/c", size_gb=1, iops=5)
    assert [v.field for v in volume_spec_violations(vol)] == ["size_gb", "iops"]
    assert [v.field for v in volume_spec_violations(VolumeSpec())] == ["name"]
    assert [v.field for v in volume_spec_violations(vol, "volumes[2]")] == ["volumes[2].size_gb", "volumes[2].iops"]
    assert [v.field for v in mount_spec_violations(MountSpec("s3://", "rel"))] == ["source", "target"]
    assert volume_spec_violations(VolumeSpec(name="d", size_gb=1)) == ()
    assert mount_spec_violations(MountSpec("s3://b/p", "/d")) == ()


def test_sdk_classes_raise_on_construction() -> None:
    with pytest.raises(ValidationError) as raised:
        flow.config.VolumeSpec(volume_id="vol-1", mount_path="/c", size_gb=1)
    assert [v.field for v in raised.value.violations] == ["size_gb"]
    with pytest.raises(ValidationError) as raised:
        flow.config.MountSpec(source=None, target="/d")
    assert [v.field for v in raised.value.violations] == ["source"]
    with pytest.raises(ValidationError):
        flow.config.TaskConfig(instance_type="a100", max_price_per_hour=-1)
    assert flow.config.VolumeSpec(name="d", size_gb=1).effective_mount_path == "/volumes/d"


def test_construction_never_raises_and_values_are_frozen() -> None:
    cfg = TaskConfig(name=object(), command=[1, 2], volumes=[None], env=[("A", "1")])
    assert cfg.command == (1, 2)
    assert cfg.volumes == (None,)
    with pytest.raises(AttributeError):
        cfg.name = "x"


def test_integers_past_the_str_limit_are_refused_not_crashed() -> None:
    found = violations_of(num_instances=10**5000)
    assert [v.field for v in found] == ["num_instances"]


# --- properties --------------------------------------------------------------------------------

_junk = fs.json_like()
_junk_volumes = st.lists(st.builds(VolumeSpec, **{f: _junk for f in fs.VOLUME_SPEC_FIELDS}) | _junk, max_size=3)
_junk_mounts = st.lists(st.builds(MountSpec, **{f: _junk for f in fs.MOUNT_SPEC_FIELDS}) | _junk, max_size=3)
_junk_configs = st.builds(
    TaskConfig,
    **{f: _junk for f in fs.TASK_CONFIG_FIELDS if f not in ("volumes", "data_mounts", "command")},
    command=_junk | st.lists(_junk, max_size=4),
    volumes=_junk_volumes | _junk,
    data_mounts=_junk_mounts | _junk,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(_junk_configs)
def test_violations_never_raise_on_arbitrary_values(cfg: TaskConfig) -> None:
    found = task_config_violations(cfg)
    for v in found:
        assert v.field and v.problem and v.fix
        assert isinstance(v.value, str) and len(v.value) <= 80
    result = validate_task_config(cfg)
    assert (result == Success(cfg)) if not found else (result.failure().violations == found)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs())
def test_generated_valid_configs_validate(cfg: TaskConfig) -> None:
    assert task_config_violations(cfg) == ()
    assert validate_task_config(cfg) == Success(cfg)
    # and so the SDK class accepts them too
    flow.config.TaskConfig.from_core(cfg)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs())
def test_program_of_valid_configs(cfg: TaskConfig) -> None:
    form, program = program_of(cfg)
    if isinstance(cfg.command, tuple):
        assert (form, program) == ("command", cfg.command)
    elif isinstance(cfg.command, str):
        assert (form, program) == ("shell", cfg.command)
    elif cfg.shell is not None:
        assert (form, program) == ("shell", cfg.shell)
    elif cfg.script is not None:
        assert (form, program) == ("script", cfg.script)
    else:
        assert (form, program) == ("command", DEFAULT_COMMAND)


def test_program_of_examples() -> None:
    assert program_of(TaskConfig(command=["python", "t.py"])) == ("command", ("python", "t.py"))
    assert program_of(TaskConfig(command="python t.py")) == ("shell", "python t.py")
    assert program_of(TaskConfig(shell="ls | wc")) == ("shell", "ls | wc")
    assert program_of(TaskConfig(script="print(1)")) == ("script", "print(1)")
    assert program_of(TaskConfig()) == ("command", ("sleep", "infinity"))


def test_strings_linux_cannot_exec_are_refused_before_launch() -> None:
    big = "x" * (128 * 1024)
    cases = {
        "command[1]": TaskConfig(command=("echo", big)),
        "command": TaskConfig(command=big),
        "shell": TaskConfig(shell=big),
        "env['DATA']": TaskConfig(env={"DATA": big}),
    }
    for field_path, cfg in cases.items():
        assert [v.field for v in task_config_violations(cfg)] == [field_path]
    assert task_config_violations(TaskConfig(command=("echo", "x" * 100_000))) == ()
    assert task_config_violations(TaskConfig(script=big)) == ()  # a script is a file: any size
