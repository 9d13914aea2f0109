"""The SDK's TaskConfig, VolumeSpec and MountSpec: the core's values, validated on construction.

They are the frozen values of `flow.domain.task.config` with one addition: building an invalid
one raises `flow.errors.ValidationError` listing every problem at once (field, value, fix), so
mistakes surface where they are made, not when the task is submitted. The rules themselves live
only in the core; flowd applies the same ones to requests from any language.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from returns.result import Failure

from flow.domain.errors import FieldViolation, validation_error
from flow.domain.source_lines import locate
from flow.domain.task import config as core
from flow.domain.task import config_codec
from flow.wire.error_table import exception_from_domain_error
from flow.yaml_document import load_yaml_with_lines


def _raise_if(problems: tuple[FieldViolation, ...], subject: str) -> None:
    if problems:
        raise exception_from_domain_error(validation_error(problems, subject=subject))


@attrs.frozen
class VolumeSpec(core.VolumeSpec):
    """Persistent storage: `VolumeSpec(name="data", size_gb=100)` creates one on first use;
    `VolumeSpec(volume_id="vol-abc123", mount_path="/data")` attaches an existing one."""

    def __attrs_post_init__(self) -> None:
        _raise_if(core.volume_spec_violations(self), "volume spec")


@attrs.frozen
class MountSpec(core.MountSpec):
    """Read-only data: `MountSpec(source="s3://bucket/data", target="/data")`."""

    def __attrs_post_init__(self) -> None:
        _raise_if(core.mount_spec_violations(self), "mount spec")


@attrs.frozen
class TaskConfig(core.TaskConfig):
    """What to run and where. See the field list in flow-sdk-api-design.md ("TaskConfig")."""

    def __attrs_post_init__(self) -> None:
        _raise_if(core.task_config_violations(self), "task configuration")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskConfig:
        parsed = config_codec.task_config_from_dict(data)
        if isinstance(parsed, Failure):
            raise exception_from_domain_error(parsed.failure())
        return cls.from_core(parsed.unwrap())

    @classmethod
    def from_core(cls, cfg: core.TaskConfig) -> TaskConfig:
        """The SDK form of a core value (volumes and mounts become the SDK classes too)."""
        values = {f.name: getattr(cfg, f.name) for f in attrs.fields(core.TaskConfig)}
        values["volumes"] = tuple(
            VolumeSpec(**attrs.asdict(v, recurse=False)) if isinstance(v, core.VolumeSpec) else v for v in cfg.volumes
        )
        values["data_mounts"] = tuple(
            MountSpec(**attrs.asdict(m, recurse=False)) if isinstance(m, core.MountSpec) else m for m in cfg.data_mounts
        )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return config_codec.task_config_to_dict(self)

    @classmethod
    def from_yaml(cls, source: str | Path) -> TaskConfig:
        """From a YAML file path, or from YAML text (anything containing a newline or ':').
        Errors name the line of each bad field (and the file, when read from one)."""
        text = source.read_text() if isinstance(source, Path) else source
        where = str(source) if isinstance(source, Path) else ""
        if isinstance(source, str) and "\n" not in source and ":" not in source:
            text = Path(source).read_text()
            where = source
        loaded = load_yaml_with_lines(text, where)
        if isinstance(loaded, Failure):
            raise exception_from_domain_error(loaded.failure())
        data, lines = loaded.unwrap()
        parsed = config_codec.task_config_from_dict(data if data is not None else {})
        if isinstance(parsed, Failure):
            raise exception_from_domain_error(locate(parsed.failure(), lines, where))
        return cls.from_core(parsed.unwrap())

    def to_yaml(self) -> str:
        import yaml

        return str(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False))
