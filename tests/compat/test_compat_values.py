"""flow-compute's spellings of the SDK's values, without a daemon: TaskConfig.from_command and
from_yaml overrides, VolumeSpec's create_if_missing, data_mounts and volumes mappings, Secret,
and the local side of @app.cls."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import flow
from flow import TaskConfig, VolumeSpec
from flow.config import volumes_from_mapping, with_data_mounts
from flow.errors import ProviderCapabilityError, ValidationError
from flow.secret import secret_env_of

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(
    lambda s: s[0] != "-"
)
targets = st.lists(segment, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
volume_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20).filter(
    lambda s: s[0].isalnum() and not s.startswith("vol")
)


def test_from_command_is_the_constructor() -> None:
    assert TaskConfig.from_command("python train.py", instance_type="a100", env={"A": "1"}) == TaskConfig(
        command="python train.py", instance_type="a100", env={"A": "1"}
    )


def test_from_yaml_takes_overrides_and_to_yaml_writes_a_file(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: train\ncommand: python train.py\n")
    config = TaskConfig.from_yaml(job, instance_type="a100", env={"SEED": "1"})
    assert (config.name, config.instance_type, config.env) == ("train", "a100", {"SEED": "1"})
    text = config.to_yaml(tmp_path / "copy.yaml")
    assert (tmp_path / "copy.yaml").read_text() == text
    assert TaskConfig.from_yaml(tmp_path / "copy.yaml") == config
    with pytest.raises(ValidationError, match="instance_typ"):
        TaskConfig.from_yaml(job, instance_typ="a100")


def test_create_if_missing() -> None:
    created = VolumeSpec(name="ckpt", size_gb=2, mount_path="/ckpt", interface="file", create_if_missing=True)
    assert created == VolumeSpec(name="ckpt", size_gb=2, mount_path="/ckpt", interface="file")
    existing = VolumeSpec(name="ckpt", size_gb=2, create_if_missing=False)
    assert (existing.name, existing.size_gb) == ("ckpt", None)  # attaches the existing volume, never creates
    assert VolumeSpec("ckpt", 2) == VolumeSpec(name="ckpt", size_gb=2)  # positional fields still work
    with pytest.raises(ValidationError, match=r"size_gb: is required with create_if_missing=True"):
        VolumeSpec(name="ckpt", create_if_missing=True)
    with pytest.raises(ValidationError, match="create_if_missing: applies to a volume given by name"):
        VolumeSpec(volume_id="vol-abc", mount_path="/x", create_if_missing=True)
    with pytest.raises(ValidationError, match="throughput_mb_s: has no equivalent here"):
        VolumeSpec(name="ckpt", size_gb=2, throughput_mb_s=250)
    with pytest.raises(ValidationError, match="create_if_missng"):
        VolumeSpec(name="ckpt", create_if_missng=True)


def _nested(targets: Collection[str]) -> bool:
    return any(a != b and b.startswith(a.rstrip("/") + "/") for a in targets for b in targets)


@given(st.dictionaries(targets, st.tuples(segment, segment), max_size=4))
@example({"/0": ("0", "0"), "/0/0": ("0", "0")})
def test_a_dict_of_s3_sources_becomes_read_only_mounts_at_its_targets(mounts: dict[str, tuple[str, str]]) -> None:
    wanted = {target: f"s3://{bucket}/{prefix}" for target, (bucket, prefix) in mounts.items()}
    if _nested(wanted):  # one mount inside another: refused, naming both (hypothesis found '/0', '/0/0')
        with pytest.raises(ValidationError, match=r"data_mounts\[\d\]\.target: is nested with"):
            with_data_mounts(TaskConfig(command="true"), wanted)
        return
    config = with_data_mounts(TaskConfig(command="true"), wanted)
    assert {m.target: m.source for m in config.data_mounts} == wanted
    assert config.volumes == ()


@given(targets, volume_names)
def test_a_volume_source_becomes_an_existing_volume_at_its_target(target: str, name: str) -> None:
    config = with_data_mounts(TaskConfig(command="true"), {target: f"volume://{name}"})
    assert config.volumes == (VolumeSpec(name=name, mount_path=target),)
    assert config.data_mounts == ()
    assert with_data_mounts(TaskConfig(command="true"), {target: name}).volumes == config.volumes  # a bare name


def test_data_mount_forms_and_default_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    base = TaskConfig(command="true", data_mounts=[flow.MountSpec(source="s3://old/x", target="/old")])
    config = with_data_mounts(base, ["s3://bucket/train", "/val=s3://bucket/val", "./data", "vol-abc123"])
    assert [(m.source, m.target) for m in config.data_mounts] == [
        ("s3://bucket/train", "/data"),
        ("s3://bucket/val", "/val"),
        (str(tmp_path / "data"), "/mnt/data"),
    ]  # the config's own mounts are replaced
    assert config.volumes == (VolumeSpec(volume_id="vol-abc123", mount_path="/volumes/vol-abc123"),)
    assert with_data_mounts(base, "s3://bucket/one").data_mounts == (flow.MountSpec("s3://bucket/one", "/data"),)
    with pytest.raises(ValidationError, match="a file of mounts is not read here"):
        with_data_mounts(base, "mounts.yaml")
    with pytest.raises(ValidationError, match="is not a form of mounts"):
        with_data_mounts(base, 3)
    with pytest.raises(ValidationError, match="source: has no bucket"):
        with_data_mounts(base, {"/d": "s3://"})


def test_a_functions_volumes_mapping() -> None:
    class Found:
        volume_id = "vol-0123456789"

    specs = volumes_from_mapping(
        {
            "/data": {"name": "datasets", "size_gb": 1},
            "/ckpts": "model-checkpoints",
            "/w": flow.Volume.from_name("weights"),
            "/new": flow.Volume.from_name("fresh", create_if_missing=True, size_gb=3),
            "/by-id": Found(),
        }
    )
    assert specs == (
        VolumeSpec(name="datasets", size_gb=1, mount_path="/data"),
        VolumeSpec(name="model-checkpoints", mount_path="/ckpts"),
        VolumeSpec(name="weights", mount_path="/w"),
        VolumeSpec(name="fresh", size_gb=3, mount_path="/new"),
        VolumeSpec(volume_id="vol-0123456789", mount_path="/by-id"),
    )
    with pytest.raises(ValidationError, match="is not a volume"):
        volumes_from_mapping({"/x": 3})


def test_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "s3cr3t-value")
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    assert secret_env_of([flow.Secret.from_env("WANDB_API_KEY")]) == ("WANDB_API_KEY",)
    assert secret_env_of([flow.Secret.from_env("NOT_SET_HERE", required=False)]) == ()
    with pytest.raises(ValidationError, match="NOT_SET_HERE is not set in this environment") as raised:
        flow.Secret.from_env("NOT_SET_HERE")
    assert isinstance(raised.value, ValueError)  # flow-compute raises ValueError here
    with pytest.raises(ProviderCapabilityError, match="there is no secret store here"):
        flow.Secret.from_name("hf-token")
    with pytest.raises(ProviderCapabilityError, match="would be stored with the task"):
        flow.Secret.from_dict({"TOKEN": "abc"})
    with pytest.raises(ValidationError, match="is not a Secret"):
        secret_env_of(["WANDB_API_KEY"])
    app = flow.FlowApp()

    @app.function(instance_type="cpu", secret_env=["OTHER"], secrets=[flow.Secret.from_env("WANDB_API_KEY")])
    def f() -> None:
        pass

    assert f._config().secret_env == ("OTHER", "WANDB_API_KEY")

    @app.function(secrets=None)  # flow-compute's default
    def g() -> None:
        pass

    assert g._config().secret_env == ()
    assert "s3cr3t-value" not in repr(f._config())  # the value is read at submit, never kept


def test_a_secret_from_a_module_being_imported_by_a_task_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    monkeypatch.setenv("FLOW_IMPORTING_FOR_CALL", "1")  # flow.runtime.runner.IMPORTING_ENV
    assert flow.Secret.from_env("NOT_SET_HERE").env_var == "NOT_SET_HERE"


app = flow.FlowApp()


@app.cls(instance_type="cpu")
class Model:
    name: str = flow.param()
    size: int = flow.param(default=3)

    @flow.on_enter()
    def load(self) -> None:
        self.loaded = True

    @flow.remote()
    def describe(self, suffix: str = "") -> str:
        return f"{self.name}:{self.size}{suffix}:{getattr(self, 'loaded', False)}"

    def helper(self) -> str:
        return "not remote"


def test_a_remote_class_here() -> None:
    model = Model(name="gpt2")
    assert model.params == {"name": "gpt2", "size": 3}
    assert model.describe("!") == model.describe.local("!") == "gpt2:3!:False"  # here: no on_enter
    assert not hasattr(model, "helper")  # only @flow.remote() methods
    assert model.local_instance.helper() == "not remote"
    with pytest.raises(ValidationError, match=r"Model\(\) needs name \(its parameters: name, size\)"):
        Model()
    with pytest.raises(ValidationError, match="has no parameter colour"):
        Model(name="x", colour="red")
    with pytest.raises(ValidationError, match="cannot be called with these arguments"):
        model.describe.spawn("a", "b")
    with pytest.raises(AttributeError, match=r"parameter 'name' is not set; pass it: Plain\(name=...\)"):

        class Plain:
            name: str = flow.param()

        Plain().name  # noqa: B018 - the access is the test


def test_unmarked_lifecycle_names_do_not_run(tmp_path: Path) -> None:
    # Only marked methods are hooks: on_enter/on_exit are recorded for the runner's class call.
    assert Model._enter == ["load"] and Model._exit == [] and Model._methods == ["describe"]
    assert os.environ.get("FLOW_IMPORTING_FOR_CALL") is None
