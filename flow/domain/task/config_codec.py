"""One cattrs converter between TaskConfig values and plain dicts (the shape of YAML and JSON).

`task_config_to_dict` writes only what differs from the defaults, so a YAML file stays as short
as the user would write it. `task_config_from_dict` is total: any input, however wrong, gives a
TaskConfig or one validation error naming every problem at once (unknown keys with "did you
mean", wrong types and bad values with their paths), never an exception. The converter builds
the shape and keeps values as given; `task_config_violations` judges them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Final

import attrs
import cattrs
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation
from flow.domain.task.config import MountSpec, TaskConfig, VolumeSpec, task_config_violations
from flow.domain.task.dependencies import Dependency


def _passthrough(value: object, _: object) -> object:
    """Leaves values as given: types are judged by validate_task_config, with every other problem."""
    return value


def _structure_list_of(cls: type) -> Any:
    def structure(value: object, _: object) -> object:
        if not isinstance(value, list | tuple):
            return value
        return tuple(converter.structure(v, cls) if isinstance(v, Mapping) else v for v in value)

    return structure


def _structure_spec(cls: type) -> Any:
    """Builds a spec from a mapping, keeping values as given; unknown keys are found beforehand."""
    names = {f.name for f in attrs.fields(cls)}

    def structure(value: object, _: object) -> object:
        if not isinstance(value, Mapping):
            return value
        known = {k: v for k, v in value.items() if k in names}
        for f in attrs.fields(cls):
            if f.default is attrs.NOTHING and f.name not in known:
                known[f.name] = None  # reported as "is required" by task_config_violations
        for name, sub in _NESTED.items():
            if name in known and name in names:
                known[name] = converter.structure(known[name], sub)
        return cls(**known)

    return structure


def _unstructure_spec(cls: type) -> Any:
    """Writes only the fields that differ from the defaults, so YAML stays as short as written."""

    def unstructure(value: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in attrs.fields(cls):
            item = getattr(value, f.name)
            # attrs types a factory as maybe taking the instance; ours never do (takes_self=False).
            default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default  # type: ignore[arg-type]
            if item is None or item == default or (item == () and default in ((), {}, [])) or item == {}:
                continue
            out[f.name] = converter.unstructure(item)
        return out

    return unstructure


converter: Final = cattrs.Converter()
_NESTED: Final[dict[str, Any]] = {
    "volumes": tuple[VolumeSpec, ...],
    "data_mounts": tuple[MountSpec, ...],
}
converter.register_structure_hook_func(lambda t: t == tuple[VolumeSpec, ...], _structure_list_of(VolumeSpec))
converter.register_structure_hook_func(lambda t: t == tuple[MountSpec, ...], _structure_list_of(MountSpec))
for _cls in (TaskConfig, VolumeSpec, MountSpec):
    converter.register_structure_hook(_cls, _structure_spec(_cls))
    converter.register_unstructure_hook(_cls, _unstructure_spec(_cls))
converter.register_unstructure_hook(tuple, lambda value: [converter.unstructure(v) for v in value])
converter.register_unstructure_hook(Dependency, Dependency.render)  # "t-abc:afterany", as YAML writes it


def task_config_to_dict(cfg: TaskConfig) -> dict[str, Any]:
    """The config as plain data (YAML/JSON ready), defaults left out."""
    data: dict[str, Any] = converter.unstructure(cfg)
    return data


def key_violations(data: Mapping[object, object], cls: type, path: str = "") -> list[FieldViolation]:
    """Unknown keys (with a "did you mean"), at every level. Missing required keys become None,
    which task_config_violations reports as "is required" (as it does for a key given as null)."""
    fields = {f.name: f for f in attrs.fields(cls)}
    found: list[FieldViolation] = []
    for key in data:
        if not isinstance(key, str):
            found.append(
                violation(path or "config", key, "field names must be strings", "use field names such as instance_type")
            )
        elif key not in fields:
            # A key that begins exactly one field's name is that name cut short (max_price).
            longer = [name for name in fields if name.startswith(key)] if len(key) >= 3 else []
            close = longer if len(longer) == 1 else difflib.get_close_matches(key, list(fields), n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(fields)}"
            found.append(violation(_join(path, key or "''"), data[key], "is not a known field", fix))
    for name, item_cls in (("volumes", VolumeSpec), ("data_mounts", MountSpec)):
        items = data.get(name) if name in fields else None
        if isinstance(items, list | tuple):
            for i, item in enumerate(items):
                if isinstance(item, Mapping):
                    found.extend(key_violations(item, item_cls, f"{_join(path, name)}[{i}]"))
    return found


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def task_config_from_dict(data: object) -> Result[TaskConfig, DomainError]:
    """Structures plain data into a validated TaskConfig, or one error naming every problem."""
    if not isinstance(data, Mapping):
        return Failure(
            validation_error(
                [
                    violation(
                        "config",
                        data,
                        "must be a mapping of field names to values",
                        "write the config as key: value pairs",
                    )
                ],
                subject="task configuration",
            )
        )
    key_problems = key_violations(data, TaskConfig, "")
    fields = {k: v for k, v in data.items() if isinstance(k, str)}
    begin = fields.get("start_after")
    if getattr(begin, "tzinfo", False) is None and hasattr(begin, "isoformat"):
        # YAML reads an unquoted time as a datetime, without a zone when none is written: which
        # zone it means is ambiguous in a file (YAML says UTC, sbatch local time), so it is asked.
        fields["start_after"] = begin.isoformat()  # type: ignore[union-attr]  # a datetime, by the check above
    cfg = converter.structure(fields, TaskConfig)
    problems = [*key_problems, *task_config_violations(cfg)]
    if problems:
        return Failure(validation_error(problems, subject="task configuration"))
    return Success(cfg)


__all__ = ["converter", "key_violations", "task_config_from_dict", "task_config_to_dict"]
