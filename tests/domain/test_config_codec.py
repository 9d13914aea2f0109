"""The one converter between TaskConfig and plain data (YAML/JSON): round trips, totality, and
errors that name every problem, with "did you mean" for misspelt keys."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

import flow.config
import flow_strategies as fs
from flow.domain.errors import DomainError, ErrorReason
from flow.domain.task.config import MountSpec, TaskConfig, VolumeSpec
from flow.domain.task.config_codec import task_config_from_dict, task_config_to_dict
from flow.errors import ValidationError


def refused(data: object) -> DomainError:
    result = task_config_from_dict(data)
    assert isinstance(result, Failure), result
    error: DomainError = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    return error


def fields_of(error: DomainError) -> list[str]:
    return [v.field for v in error.violations]


# --- round trips -------------------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs())
def test_dict_round_trip(cfg: TaskConfig) -> None:
    data = task_config_to_dict(cfg)
    assert task_config_from_dict(data) == Success(cfg)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs())
def test_dict_is_plain_json_data(cfg: TaskConfig) -> None:
    """What to_dict gives is JSON/YAML-ready: only dicts, lists, str, int, float, bool."""

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return isinstance(value, (str, int, float, bool))

    data = task_config_to_dict(cfg)
    assert plain(data)
    assert None not in data.values()


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs())
def test_yaml_round_trip_through_the_sdk_class(cfg: TaskConfig) -> None:
    sdk = flow.config.TaskConfig.from_core(cfg)
    text = sdk.to_yaml()
    again = flow.config.TaskConfig.from_yaml(text)
    assert again == sdk
    assert type(again) is flow.config.TaskConfig
    assert all(type(v) is flow.config.VolumeSpec for v in again.volumes)
    assert all(type(m) is flow.config.MountSpec for m in again.data_mounts)
    assert again.to_dict() == task_config_to_dict(cfg)


def test_to_dict_omits_defaults() -> None:
    assert task_config_to_dict(TaskConfig()) == {}
    assert flow.config.TaskConfig().to_dict() == {}
    assert task_config_to_dict(TaskConfig(num_instances=1, upload_code=True, env={}, volumes=[])) == {}
    assert task_config_to_dict(
        TaskConfig(
            instance_type="a100",
            command=["python", "t.py"],
            upload_code=False,
            volumes=[
                VolumeSpec(name="data", size_gb=10),
                VolumeSpec(volume_id="v1", mount_path="/c", interface="file"),
            ],
            data_mounts=[MountSpec("s3://b/p", "/d")],
        )
    ) == {
        "instance_type": "a100",
        "command": ["python", "t.py"],
        "upload_code": False,
        "volumes": [{"name": "data", "size_gb": 10}, {"mount_path": "/c", "interface": "file", "volume_id": "v1"}],
        "data_mounts": [{"source": "s3://b/p", "target": "/d"}],
    }


def test_seed_yaml_example() -> None:
    text = """
name: distributed-training
instance_type: 8xa100
command: |
  torchrun --nproc_per_node=8 train.py \\
    --batch-size 256 \\
    --epochs 100
volumes:
  - name: datasets
    size_gb: 500
max_price_per_hour: 100.0
env:
  WANDB_API_KEY: "..."
"""
    cfg = flow.config.TaskConfig.from_yaml(text)
    assert cfg.name == "distributed-training"
    assert cfg.command == "torchrun --nproc_per_node=8 train.py \\\n  --batch-size 256 \\\n  --epochs 100\n"
    assert cfg.volumes == (flow.config.VolumeSpec(name="datasets", size_gb=500),)
    assert cfg.volumes[0].effective_mount_path == "/volumes/datasets"
    assert cfg.max_price_per_hour == 100.0
    assert cfg.env == {"WANDB_API_KEY": "..."}
    assert yaml.safe_load(cfg.to_yaml())["command"] == cfg.command


def test_from_yaml_refuses_broken_yaml_with_validation_error() -> None:
    with pytest.raises(ValidationError) as raised:
        flow.config.TaskConfig.from_yaml("name: [unclosed\n")
    assert "Invalid YAML" in raised.value.message
    assert raised.value.suggestions


def test_from_yaml_empty_document_is_the_default_config() -> None:
    assert flow.config.TaskConfig.from_yaml("\n") == flow.config.TaskConfig()


# --- totality ---------------------------------------------------------------------------------


def _check_total(data: object) -> None:
    result = task_config_from_dict(data)
    if isinstance(result, Success):
        cfg = result.unwrap()
        assert isinstance(cfg, TaskConfig)
        # What from_dict accepts is valid and survives a round trip.
        assert task_config_from_dict(task_config_to_dict(cfg)) == Success(cfg)
    else:
        error = result.failure()
        assert error.reason is ErrorReason.VALIDATION_FAILED
        assert len(error.violations) >= 1
        assert all(v.field and v.problem and v.fix for v in error.violations)
        assert error.message.startswith("Invalid task configuration: ")
        assert error.message.count("\n  - ") == len(error.violations)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(fs.arbitrary_config_dicts())
def test_from_dict_is_total_on_config_like_dicts(data: dict[Any, Any]) -> None:
    _check_total(data)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(fs.json_like())
def test_from_dict_is_total_on_any_json_value(data: object) -> None:
    _check_total(data)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(fs.valid_task_configs(), st.sampled_from(fs.TASK_CONFIG_FIELDS), fs.json_like())
def test_one_junk_value_in_a_valid_dict(cfg: TaskConfig, key: str, junk: object) -> None:
    data = task_config_to_dict(cfg)
    data[key] = junk
    _check_total(data)


def test_non_mapping_is_one_violation_at_config() -> None:
    for data in (None, [], "name: x", 3, ["instance_type", "a100"]):
        error = refused(data)
        assert fields_of(error) == ["config"]
        assert "must be a mapping" in error.violations[0].problem


# --- unknown keys and paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "suggestion"),
    [
        ({"instance_typ": "a100"}, "instance_typ", "did you mean 'instance_type'?"),
        ({"instancetype": "a100"}, "instancetype", "did you mean 'instance_type'?"),
        ({"comand": ["ls"]}, "comand", "did you mean 'command'?"),
        ({"max_price": 10.0}, "max_price", "did you mean 'max_price_per_hour'?"),
        ({"volume": []}, "volume", "did you mean 'volumes'?"),
        ({"sshkeys": []}, "sshkeys", "did you mean 'ssh_keys'?"),
        (
            {"volumes": [{"name": "a", "size_gb": 1}, {"nme": "b", "size_gb": 1}]},
            "volumes[1].nme",
            "did you mean 'name'?",
        ),
        ({"volumes": [{"name": "a", "size": 1}]}, "volumes[0].size", "did you mean 'size_gb'?"),
        ({"data_mounts": [{"source": "s3://b", "traget": "/d"}]}, "data_mounts[0].traget", "did you mean 'target'?"),
    ],
)
def test_unknown_keys_get_did_you_mean(data: dict[str, Any], field: str, suggestion: str) -> None:
    error = refused(data)
    unknown = [v for v in error.violations if v.problem == "is not a known field"]
    assert [v.field for v in unknown] == [field]
    assert unknown[0].fix == suggestion
    assert f"{field}: is not a known field" in error.message


def test_far_off_unknown_key_lists_known_fields() -> None:
    error = refused({"zzzzzz": 1})
    assert fields_of(error) == ["zzzzzz"]
    assert error.violations[0].fix.startswith("known fields: name, instance_type, ")


def test_empty_key_gets_a_visible_path() -> None:
    error = refused({"": 1, "volumes": [{"": 2, "name": "a", "size_gb": 1}]})
    assert fields_of(error) == ["''", "volumes[0].''"]


def test_non_text_key_is_reported() -> None:
    error = refused({1: "a100"})
    assert fields_of(error) == ["config"]
    assert "field names must be strings" in error.violations[0].problem


def test_nested_values_get_their_paths() -> None:
    error = refused(
        {
            "instance_type": "a100",
            "volumes": [{"name": "a", "size_gb": 1}, {"name": "b", "size_gb": "lots"}],
            "data_mounts": [{"source": "s3://", "target": "/d"}],
            "env": {"OK": "1", "BAD": 2},
        }
    )
    assert fields_of(error) == ["env['BAD']", "volumes[1].size_gb", "data_mounts[0].source"]


def test_missing_or_null_required_mount_fields_are_reported_once() -> None:
    for mount in ({"target": "/d"}, {"source": None, "target": "/d"}):
        error = refused({"data_mounts": [mount]})
        assert fields_of(error) == ["data_mounts[0].source"]
        assert error.violations[0].problem == "is required"


def test_every_problem_at_once() -> None:
    error = refused(
        {
            "name": "bad name",
            "instance_typ": "a100",
            "num_instances": "2",
            "volumes": [{"nme": "x", "size_gb": 0}],
            "max_price_per_hour": -1,
        }
    )
    assert sorted(fields_of(error)) == sorted(
        [
            "instance_typ",
            "volumes[0].nme",
            "name",
            "volumes[0].name",
            "volumes[0].size_gb",
            "max_price_per_hour",
            "num_instances",
        ]
    )
    assert error.message.startswith("Invalid task configuration: 7 problems\n")


def test_types_are_kept_for_validation_not_coerced() -> None:
    """A string where a number belongs is an error, not silently converted."""
    assert fields_of(refused({"num_instances": "2"})) == ["num_instances"]
    assert fields_of(refused({"upload_code": "false"})) == ["upload_code"]
    assert fields_of(refused({"max_price_per_hour": "10"})) == ["max_price_per_hour"]
    assert fields_of(refused({"min_gpu_memory_gb": 40.5})) == ["min_gpu_memory_gb"]


def test_sdk_from_dict_raises_validation_error_with_every_violation() -> None:
    with pytest.raises(ValidationError) as raised:
        flow.config.TaskConfig.from_dict({"instance_typ": "a100", "num_instances": 0})
    assert [v.field for v in raised.value.violations] == ["instance_typ", "num_instances"]
    assert "did you mean 'instance_type'?" in raised.value.suggestions
