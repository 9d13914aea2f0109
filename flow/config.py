"""The SDK's TaskConfig, VolumeSpec and MountSpec: the core's values, validated on construction.

They are the frozen values of `flow.domain.task.config` with one addition: building an invalid
one raises `flow.errors.ValidationError` listing every problem at once (field, value, fix), so
mistakes surface where they are made, not when the task is submitted. A misspelt keyword is one
of those mistakes (with a "did you mean"), not a bare TypeError. The rules themselves live only in
the core; flowd applies the same ones to requests from any language.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Self, cast

import attrs
from returns.result import Failure

from flow.domain.errors import FieldViolation, validation_error
from flow.domain.source_lines import locate
from flow.domain.task import config as core
from flow.domain.task import config_codec
from flow.errors import ValidationError
from flow.wire.error_table import exception_from_domain_error
from flow.yaml_document import load_yaml_with_lines

JOB_FILE_SUFFIXES: Final = (".yaml", ".yml")


def _raise_if(problems: tuple[FieldViolation, ...] | list[FieldViolation], subject: str) -> None:
    if problems:
        raise exception_from_domain_error(validation_error(tuple(problems), subject=subject))


def _known_keywords(cls: type, keywords: dict[str, Any], subject: str) -> None:
    """Runs before attrs' __init__, which would raise a bare TypeError for an unknown keyword."""
    if keywords.keys() - attrs.fields_dict(cls).keys():
        _raise_if(config_codec.key_violations(cast(dict[object, object], keywords), cls), subject)


@attrs.frozen
class VolumeSpec(core.VolumeSpec):
    """Persistent storage: `VolumeSpec(name="data", size_gb=100)` creates one on first use;
    `VolumeSpec(volume_id="vol-abc123", mount_path="/data")` attaches an existing one."""

    def __new__(cls, *_: Any, **keywords: Any) -> Self:
        _known_keywords(cls, keywords, "volume spec")
        return super().__new__(cls)

    def __attrs_post_init__(self) -> None:
        _raise_if(core.volume_spec_violations(self), "volume spec")


@attrs.frozen
class MountSpec(core.MountSpec):
    """Read-only data: `MountSpec(source="s3://bucket/data", target="/data")`."""

    def __new__(cls, *_: Any, **keywords: Any) -> Self:
        _known_keywords(cls, keywords, "mount spec")
        return super().__new__(cls)

    def __attrs_post_init__(self) -> None:
        _raise_if(core.mount_spec_violations(self), "mount spec")


@attrs.frozen
class TaskConfig(core.TaskConfig):
    """What to run and where. See the field list in flow-sdk-api-design.md ("TaskConfig")."""

    def __new__(cls, *_: Any, **keywords: Any) -> Self:
        _known_keywords(cls, keywords, "task configuration")
        return super().__new__(cls)

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


def job_file(program: str) -> TaskConfig | None:
    """The TaskConfig of the YAML job file `program` names (an existing file ending in .yaml or .yml,
    or one word so ending: a missing file is an error), as `flow run job.yaml` and
    `Flow().run("job.yaml")` read it; None when `program` is a command."""
    if not program.endswith(JOB_FILE_SUFFIXES):
        return None
    path = Path(program)
    if path.is_file():
        return TaskConfig.from_yaml(path)
    if any(c.isspace() for c in program):
        return None  # "python render.py out.yaml": a command that ends in a file name
    raise ValidationError(
        f"No job file {program!r} (in {Path.cwd()})",
        suggestions=["give the path of a YAML job file (relative to the current directory)"],
    )
