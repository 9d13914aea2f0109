"""The SDK's TaskConfig, VolumeSpec and MountSpec: the core's values, validated on construction.

They are the frozen values of `flow.domain.task.config` with one addition: building an invalid
one raises `flow.errors.ValidationError` listing every problem at once (field, value, fix), so
mistakes surface where they are made, not when the task is submitted. A misspelt keyword is one
of those mistakes (with a "did you mean"), not a bare TypeError. The rules themselves live only in
the core; flowd applies the same ones to requests from any language.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
# VolumeSpec keywords of the Mithril platform's SDK (flow-compute) that are not fields here.
VOLUME_COMPAT_KEYWORDS: Final = ("create_if_missing", "throughput_mb_s")
VOLUME_ID_PREFIXES: Final = ("vol-", "vol_")  # this project's ids, Mithril's


def _raise_if(problems: tuple[FieldViolation, ...] | list[FieldViolation], subject: str) -> None:
    if problems:
        raise exception_from_domain_error(validation_error(tuple(problems), subject=subject))


def _known_keywords(cls: type, keywords: dict[str, Any], subject: str) -> None:
    """Runs before attrs' __init__, which would raise a bare TypeError for an unknown keyword."""
    if keywords.keys() - attrs.fields_dict(cls).keys():
        _raise_if(config_codec.key_violations(cast(dict[object, object], keywords), cls), subject)


@attrs.frozen(init=False)
class VolumeSpec(core.VolumeSpec):
    """Persistent storage: `VolumeSpec(name="data", size_gb=100)` creates one on first use (and
    reuses it by name later); `VolumeSpec(name="data")` without a size attaches the existing
    volume of that name; `VolumeSpec(volume_id="vol-abc123", mount_path="/data")` attaches one by
    id.

    flow-compute's `create_if_missing` is understood: True creates on first use, as a size does
    here (so it needs size_gb); False only attaches an existing volume (size_gb, if given, is not
    used). Its `throughput_mb_s` has no equivalent and is refused."""

    def __new__(cls, *_: Any, **keywords: Any) -> Self:
        _known_keywords(cls, {k: v for k, v in keywords.items() if k not in VOLUME_COMPAT_KEYWORDS}, "volume spec")
        return super().__new__(cls)

    # The design document's fields, in core.VolumeSpec's order (a test holds them equal), then
    # flow-compute's keywords.
    def __init__(
        self,
        name: str | None = None,
        size_gb: int | None = None,
        mount_path: str | None = None,
        interface: str = "block",
        iops: int | None = None,
        volume_id: str | None = None,
        *,
        create_if_missing: bool | None = None,
        throughput_mb_s: int | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "name": name,
            "size_gb": size_gb,
            "mount_path": mount_path,
            "interface": interface,
            "iops": iops,
            "volume_id": volume_id,
        }
        _raise_if(_compat_volume_violations(fields, create_if_missing, throughput_mb_s), "volume spec")
        if create_if_missing is False:
            fields["size_gb"] = None
        self.__attrs_init__(**fields)

    def __attrs_post_init__(self) -> None:
        _raise_if(core.volume_spec_violations(self), "volume spec")


def _compat_volume_violations(
    fields: dict[str, Any], create_if_missing: object, throughput_mb_s: object
) -> list[FieldViolation]:
    from flow.domain.errors import violation

    out: list[FieldViolation] = []
    if throughput_mb_s is not None:
        out.append(
            violation(
                "throughput_mb_s",
                throughput_mb_s,
                "has no equivalent here (a volume's speed is its provider's)",
                "leave it out; iops= sets the IOPS of a new block volume where the provider allows it",
            )
        )
    if create_if_missing not in (None, True, False):
        out.append(violation("create_if_missing", create_if_missing, "must be True or False", "give True or False"))
    elif create_if_missing is not None and fields.get("volume_id") is not None:
        out.append(
            violation(
                "create_if_missing",
                create_if_missing,
                "applies to a volume given by name, not by volume_id",
                "leave it out when attaching by volume_id",
            )
        )
    elif create_if_missing is True and fields.get("size_gb") is None:
        out.append(
            violation(
                "size_gb",
                None,
                "is required with create_if_missing=True (flow-compute's default of 1 GB is not assumed)",
                "give size_gb, e.g. size_gb=1",
            )
        )
    return out


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
    def from_command(cls, command: str | Sequence[str], **fields: Any) -> TaskConfig:
        """`TaskConfig(command=command, **fields)`, as flow-compute spells it."""
        return cls(command=command, **fields)

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
    def from_yaml(cls, source: str | Path, **overrides: Any) -> TaskConfig:
        """From a YAML file path, or from YAML text (anything containing a newline or ':').
        Errors name the line of each bad field (and the file, when read from one). Keyword
        arguments replace fields of the file's config."""
        config = cls._from_yaml(source)
        return attrs.evolve(config, **overrides) if overrides else config

    @classmethod
    def _from_yaml(cls, source: str | Path) -> TaskConfig:
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

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as YAML text (what from_yaml reads), also written to `path` when given."""
        import yaml

        text = str(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False))
        if path is not None:
            Path(path).write_text(text)
        return text


def with_data_mounts(config: TaskConfig, mounts: object) -> TaskConfig:
    """`config` with the data mounts of `run(..., data_mounts=...)` in flow-compute's forms:
    a dict {target: source}, one source string, or a list of MountSpecs, "target=source" or
    "source" strings. They replace the config's data mounts. Sources: s3:// URLs and local
    paths (read-only mounts), `volume://NAME` or `volume://VOLUME_ID` and bare volume names
    (existing volumes, attached as VolumeSpecs). Without a target: /data for s3://,
    /volumes/NAME for a volume, /mnt/BASENAME for a local path."""
    pairs: list[tuple[object, object]] = []
    if isinstance(mounts, str):
        if mounts.endswith(JOB_FILE_SUFFIXES):
            raise ValidationError(
                f"data_mounts={mounts!r}: a file of mounts is not read here",
                suggestions=["give a dict, e.g. data_mounts={'/data': 's3://bucket/prefix'}"],
            )
        pairs.append((None, mounts))
    elif isinstance(mounts, Mapping):
        pairs.extend((target, source) for target, source in mounts.items())
    elif isinstance(mounts, Sequence):
        for item in mounts:
            left, sep, right = item.partition("=") if isinstance(item, str) else ("", "", "")
            if sep and left.startswith("/"):
                pairs.append((left, right))
            elif isinstance(item, Mapping) and {"source", "target"} >= item.keys():
                pairs.append((item.get("target"), item.get("source")))
            else:
                pairs.append((None, item))
    else:
        raise ValidationError(
            f"data_mounts: {type(mounts).__name__} is not a form of mounts",
            suggestions=["give a dict {target: source} or a list of MountSpec"],
        )
    data: list[core.MountSpec] = []
    volumes: list[core.VolumeSpec] = []
    for target, source in pairs:
        if isinstance(source, core.MountSpec) and target is None:
            data.append(source)
        elif not isinstance(source, str) or (target is not None and not isinstance(target, str)):
            raise ValidationError(
                f"data_mounts: {target!r}: {source!r} is not a target path and a source string",
                suggestions=["give e.g. {'/data': 's3://bucket/prefix'} or {'/models': 'volume://my-volume'}"],
            )
        elif source.startswith("volume://") or ("/" not in source and source[:1] not in ".~"):
            volumes.append(_volume_source(source.removeprefix("volume://"), target))
        elif "://" in source and not source.startswith("file://"):
            data.append(MountSpec(source=source, target=target or "/data"))
        else:
            local = Path(source.removeprefix("file://")).expanduser().absolute()
            data.append(MountSpec(source=str(local), target=target or f"/mnt/{local.name}"))
    return attrs.evolve(config, data_mounts=tuple(data), volumes=(*config.volumes, *volumes))


def volumes_from_mapping(volumes: Mapping[object, object]) -> tuple[VolumeSpec, ...]:
    """flow-compute's `@app.function(volumes={mount_path: volume})`, where a volume is a name (or
    id) of an existing volume, a dict of VolumeSpec keywords, a VolumeSpec (`Volume.from_name`)
    or a Volume."""
    specs: list[VolumeSpec] = []
    for path, volume in volumes.items():
        if not isinstance(path, str):
            raise ValidationError(
                f"volumes: the key {path!r} is not a mount path",
                suggestions=["give e.g. volumes={'/data': 'my-volume'}"],
            )
        if isinstance(volume, str):
            specs.append(_volume_source(volume.removeprefix("volume://"), path))
        elif isinstance(volume, Mapping):
            specs.append(VolumeSpec(**{**volume, "mount_path": path}))
        elif isinstance(volume, core.VolumeSpec):
            specs.append(VolumeSpec(**{**attrs.asdict(volume, recurse=False), "mount_path": path}))
        elif isinstance(getattr(volume, "volume_id", None), str):
            specs.append(VolumeSpec(volume_id=getattr(volume, "volume_id"), mount_path=path))  # noqa: B009 - any Volume
        else:
            raise ValidationError(
                f"volumes[{path!r}]: {volume!r} is not a volume",
                suggestions=["give a volume name, a dict of VolumeSpec fields, Volume.from_name(...) or a Volume"],
            )
    return tuple(specs)


def _volume_source(reference: str, target: str | None) -> VolumeSpec:
    if reference.startswith(VOLUME_ID_PREFIXES):
        return VolumeSpec(volume_id=reference, mount_path=target or f"/volumes/{reference}")
    return VolumeSpec(name=reference, mount_path=target)


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
