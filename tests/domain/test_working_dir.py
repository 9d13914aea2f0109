"""Where a task starts: which directory the shell must look for, and how a missing one is refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.task.config import MountSpec, TaskConfig, VolumeSpec
from flow.domain.task.working_dir import (
    checked_working_dir,
    host_working_dir,
    snapshot_working_dir,
    working_dir_violation,
)


def test_an_absolute_working_dir_is_looked_for_on_the_host() -> None:
    config = TaskConfig(command="pwd", working_dir="/data/run")
    assert host_working_dir(config) == "/data/run"
    assert snapshot_working_dir(config) is None
    assert working_dir_violation(config, exists=True) is None
    problem = working_dir_violation(config, exists=False)
    assert problem is not None
    assert (problem.field, problem.value) == ("working_dir", "'/data/run'")
    assert "does not exist" in problem.problem and "leave working_dir out" in problem.fix


def test_a_relative_working_dir_is_below_the_snapshot_or_refused_without_one() -> None:
    uploaded = TaskConfig(command="pwd", working_dir="src/app")
    assert (host_working_dir(uploaded), snapshot_working_dir(uploaded)) == (None, "src/app")
    assert working_dir_violation(uploaded, exists=True) is None
    assert working_dir_violation(uploaded, exists=False) is not None
    alone = TaskConfig(command="pwd", working_dir="src", upload_code=False)
    assert (host_working_dir(alone), snapshot_working_dir(alone)) == (None, None)
    assert working_dir_violation(alone) is not None  # its own directory is new and empty
    assert working_dir_violation(TaskConfig(command="pwd", working_dir="./", upload_code=False)) is None


def test_an_image_or_a_mount_makes_the_directory_itself() -> None:
    in_image = TaskConfig(command="pwd", image="python:3.12", working_dir="/opt/app")
    assert host_working_dir(in_image) is None and working_dir_violation(in_image, exists=False) is None
    volume = TaskConfig(command="pwd", working_dir="/volumes/ckpt/run1", volumes=[VolumeSpec(name="ckpt", size_gb=1)])
    assert host_working_dir(volume) is None and working_dir_violation(volume, exists=False) is None
    mount = TaskConfig(command="pwd", working_dir="/train", data_mounts=[MountSpec(source="s3://b/p", target="/train")])
    assert host_working_dir(mount) is None
    beside = TaskConfig(command="pwd", working_dir="/trainer", data_mounts=[MountSpec(source="/x", target="/train")])
    assert host_working_dir(beside) == "/trainer"  # a sibling with a common prefix is not below it


def test_no_working_dir_needs_nothing() -> None:
    config = TaskConfig(command="pwd")
    assert (host_working_dir(config), snapshot_working_dir(config)) == (None, None)
    assert checked_working_dir(config, exists=False) == Success(config)


@given(st.text(min_size=1, max_size=40), st.booleans(), st.booleans())
def test_refused_exactly_when_a_violation_is_found(path: str, exists: bool, upload: bool) -> None:
    config = TaskConfig(command="pwd", working_dir=path, upload_code=upload)
    checked = checked_working_dir(config, exists=exists)
    problem = working_dir_violation(config, exists=exists)
    assert isinstance(checked, Failure) == (problem is not None)
    if problem is not None:
        assert checked.failure().violations == (problem,)
        assert checked.failure().reason.name == "VALIDATION_FAILED"
