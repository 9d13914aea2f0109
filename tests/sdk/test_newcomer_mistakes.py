"""The SDK as a newcomer first uses it: a YAML job file by name, misspelt keywords, a working
directory that is not there, a remote daemon that does not answer. Each is a clear error with
the seed's exception type and an error code, or does what the CLI does; real flowd throughout."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flow import Flow, MountSpec, TaskConfig, TaskStatus, ValidationError, VolumeSpec
from flow.errors import DaemonUnavailableError


def test_a_misspelt_keyword_is_a_validation_error_with_a_did_you_mean() -> None:
    with pytest.raises(ValidationError) as caught:
        TaskConfig(instance_typ="a100")  # type: ignore[call-arg]
    error = caught.value
    assert not isinstance(error, TypeError)
    assert error.error_code == "VALIDATION_FAILED"
    assert [v.field for v in error.violations] == ["instance_typ"]
    assert "did you mean 'instance_type'?" in error.message
    assert error.suggestions == ["did you mean 'instance_type'?"]
    with pytest.raises(ValidationError, match="did you mean 'size_gb'"):
        VolumeSpec(name="data", sizegb=100)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="did you mean 'target'"):
        MountSpec(source="/data", targt="/data")  # type: ignore[call-arg]


def test_run_with_a_misspelt_keyword_submits_nothing(flow: Flow) -> None:
    before = len(flow.list_tasks(limit=1000))
    with pytest.raises(ValidationError, match="did you mean 'max_run_time_hours'") as caught:
        flow.run("echo hi", max_runtime_hours=1)
    assert caught.value.error_code == "VALIDATION_FAILED"
    assert len(flow.list_tasks(limit=1000)) == before


def test_run_with_a_yaml_path_loads_it_as_the_cli_does(
    flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "task.yaml").write_text("name: from-yaml\ncommand: echo loaded $WHO\nenv:\n  WHO: yaml\n")
    monkeypatch.chdir(tmp_path)
    task = flow.run("task.yaml").wait(timeout=60)
    assert (task.last_status, task.name) == (TaskStatus.COMPLETED, "from-yaml")
    assert task.logs() == "loaded yaml\n"
    overridden = flow.run("task.yaml", env={"WHO": "override"}).wait(timeout=60)
    assert overridden.logs() == "loaded override\n"
    with pytest.raises(ValidationError, match=r"No job file 'nope\.yml'"):
        flow.run("nope.yml")
    (tmp_path / "my job.yaml").write_text("command: echo spaced\nupload_code: false\n")
    assert flow.run("my job.yaml").wait(timeout=60).logs() == "spaced\n"
    command = flow.run("echo writes out.yaml", upload_code=False).wait(timeout=60)  # a command, not a file
    assert command.logs() == "writes out.yaml\n"


def test_a_working_dir_that_is_not_there_is_refused_at_submit(flow: Flow, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.txt").write_text("x")
    before = len(flow.list_tasks(limit=1000))
    refused = [
        dict(working_dir=str(tmp_path / "missing"), upload_code=False),  # the local provider looks
        dict(working_dir="missing", code_root=str(tmp_path)),  # the SDK looks in code_root
        dict(working_dir="sub", upload_code=False),  # relative to the task's own, empty directory
    ]
    for settings in refused:
        with pytest.raises(ValidationError) as caught:
            flow.run("pwd", **settings)
        assert [v.field for v in caught.value.violations] == ["working_dir"], settings
        assert repr(settings["working_dir"]) in caught.value.message
    assert len(flow.list_tasks(limit=1000)) == before
    there = flow.run("pwd", working_dir=str(tmp_path), upload_code=False).wait(timeout=60)
    assert there.logs() == f"{tmp_path}\n"
    below = flow.run("cat data.txt", working_dir="sub", code_root=str(tmp_path)).wait(timeout=60)
    assert (below.last_status, below.logs()) == (TaskStatus.COMPLETED, "x")


def test_an_unreachable_remote_daemon_is_named_with_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FLOW_DAEMON_ADDRESS", f"tls://127.0.0.1:{port}")
    monkeypatch.setenv("FLOW_DAEMON_TOKEN", "do-not-show-me")
    monkeypatch.setenv("FLOW_DAEMON_CA", str(tmp_path / "ca.pem"))
    with pytest.raises(ValidationError, match=r"FLOW_DAEMON_CA=.*cannot be read"):
        Flow(flow_home=tmp_path / "home")
    (tmp_path / "ca.pem").write_text("not a certificate, but readable\n")
    with pytest.raises(DaemonUnavailableError) as caught:
        Flow(flow_home=tmp_path / "home")
    error = caught.value
    assert f"cannot reach the remote flowd at 127.0.0.1:{port}" in error.message
    assert f"FLOW_DAEMON_ADDRESS=tls://127.0.0.1:{port}" in error.message
    assert "FLOW_DAEMON_TOKEN set (14 characters)" in error.message
    assert f"FLOW_DAEMON_CA={tmp_path / 'ca.pem'}" in error.message
    assert "do-not-show-me" not in str(error)
    assert not any("flow daemon start" in tip for tip in error.suggestions)
    assert any(f"flowd --tcp 127.0.0.1:{port} --tls-cert" in tip for tip in error.suggestions)
