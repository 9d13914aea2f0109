"""TaskConfig, VolumeSpec and MountSpec: what a user asks to run, and every rule it must obey.

The classes are plain frozen values: building one never fails, whatever it holds, so the daemon
can represent any request it receives. `validate_task_config` decides whether a config is
acceptable and names every problem at once (field path, the value given, and a fix). The SDK's
public classes raise on construction by calling that same function (`flow.config`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from attrs import field, frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, show_value, validation_error, violation
from flow.domain.instances.instance_types import parse_instance_type
from flow.domain.task.dependencies import Dependency, as_dependencies, as_instant, dependency_violations

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
ENV_NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
REGION_PATTERN: Final = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
VOLUME_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
MAX_NUM_INSTANCES: Final = 1024
MAX_RUN_TIME_HOURS: Final = 24.0 * 365
MAX_PRICE_PER_HOUR: Final = 100_000.0
MIN_PRICE_PER_HOUR: Final = 0.000001  # one micro-dollar: the wire carries prices as integer micros
MAX_GPU_MEMORY_GB: Final = 4096
MAX_MEMORY_MB: Final = 64 * 2**20  # 64 TB
MAX_RETRIES: Final = 100
MAX_VOLUME_GB: Final = 1_000_000
MAX_IOPS: Final = 10_000_000
MAX_TEXT: Final = 1_000_000  # a script or shell string larger than 1 MB belongs in code upload
MAX_ENV_ENTRIES: Final = 4096
VOLUME_INTERFACES: Final = ("block", "file")
DEFAULT_COMMAND: Final = ("sleep", "infinity")
DEFAULT_VOLUME_ROOT: Final = "/volumes"


def _as_tuple(value: object) -> Any:
    """Lists become tuples; anything else is kept as given for validation to judge."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _as_command(value: object) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _as_dict(value: object) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


@frozen
class VolumeSpec:
    """A persistent volume: created on first use and reused by name (`name` + `size_gb`), or an
    existing one, by `name` alone or by `volume_id`."""

    name: str | None = None
    size_gb: int | None = None
    mount_path: str | None = None
    interface: str = "block"
    iops: int | None = None
    volume_id: str | None = None

    @property
    def effective_mount_path(self) -> str | None:
        """Where the volume appears: `mount_path`, or /volumes/<name>."""
        if self.mount_path:
            return self.mount_path
        if isinstance(self.name, str) and self.name:
            return f"{DEFAULT_VOLUME_ROOT}/{self.name}"
        return None


@frozen
class MountSpec:
    """Read-only data mounted into the task: `s3://bucket/prefix`, `/abs/path` or `file://...`."""

    source: str
    target: str


@frozen
class TaskConfig:
    """Everything that describes a task. See flow-sdk-api-design.md, "TaskConfig"."""

    name: str | None = None
    instance_type: str | None = None
    min_gpu_memory_gb: int | None = None
    command: tuple[str, ...] | str | None = field(default=None, converter=_as_command)
    shell: str | None = None
    script: str | None = None
    image: str | None = None
    env: dict[str, str] = field(factory=dict, converter=_as_dict, hash=False)
    working_dir: str | None = None
    volumes: tuple[VolumeSpec, ...] = field(default=(), converter=_as_tuple)
    max_price_per_hour: float | None = None
    max_run_time_hours: float | None = None
    region: str | None = None
    num_instances: int = 1
    ssh_keys: tuple[str, ...] = field(default=(), converter=_as_tuple)
    upload_code: bool = True
    data_mounts: tuple[MountSpec, ...] = field(default=(), converter=_as_tuple)
    code_root: str | None = None
    memory_mb: int | None = None  # RAM the task needs per node
    # Names of environment variables whose values are secret: taken from the submitter's
    # environment at submit time, given to the task, never stored in the config, never shown.
    secret_env: tuple[str, ...] = field(default=(), converter=_as_tuple)
    # Scheduling (flow.domain.task.dependencies): the tasks this one waits for, with Slurm's
    # conditions; not before this instant (seconds since the epoch); order among the user's
    # waiting tasks (higher first).
    depends_on: tuple[Dependency, ...] = field(default=(), converter=as_dependencies)
    start_after: float | None = field(default=None, converter=as_instant)
    priority: int = 0
    # How many times the task runs again from the start (same config, same code snapshot) when a
    # run is preempted, or ends asking to run again (exit status 75, EX_TEMPFAIL: see
    # flow.domain.task.lifecycle.REQUEUE_EXIT_STATUS); each earlier run is kept in the task's history.
    max_retries: int = 0


# --- validation -------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)  # an int of any size: float() of a huge one would overflow


def _not_utf8(value: str) -> bool:
    """Lone surrogates (undecodable bytes from argv, os.environ or a file name) cannot be sent."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _text_problem(value: str, field_name: str, *, allow_newlines: bool = True) -> str | None:
    if "\x00" in value:
        return f"{field_name} contains a NUL byte, which no program can receive"
    if _not_utf8(value):
        return f"{field_name} is not valid UTF-8 text (it holds undecodable bytes)"
    if not allow_newlines and ("\n" in value or "\r" in value):
        return f"{field_name} contains a line break"
    if len(value) > MAX_TEXT:
        return f"{field_name} is {len(value)} characters, above the limit of {MAX_TEXT}"
    return None


def _check_optional_str(
    out: list[FieldViolation], path: str, value: object, fix: str, *, allow_newlines: bool = False
) -> bool:
    """Appends a violation unless value is None or a clean str; True when it is a usable str."""
    if value is None:
        return False
    if not isinstance(value, str):
        out.append(violation(path, value, f"must be a string, not {type(value).__name__}", fix))
        return False
    problem = _text_problem(value, path, allow_newlines=allow_newlines)
    if problem:
        out.append(violation(path, value, problem, fix))
        return False
    return True


def _check_abs_path(out: list[FieldViolation], path: str, value: object, what: str) -> None:
    fix = f"give {what} as an absolute path such as /data"
    if not _check_optional_str(out, path, value, fix):
        return
    assert isinstance(value, str)
    if not value.startswith("/"):
        out.append(violation(path, value, "must be an absolute path", fix))
    elif any(part == ".." for part in value.split("/")):
        out.append(violation(path, value, "must not contain '..'", fix))
    elif value.rstrip("/") == "":
        out.append(violation(path, value, "must not be the root directory", fix))


def _check_name(out: list[FieldViolation], path: str, value: object, what: str) -> None:
    fix = f"use letters, digits, '-' and '_' (1-63 characters, starting with a letter or digit) for {what}"
    if value is None:
        return
    if not isinstance(value, str):
        out.append(violation(path, value, f"must be a string, not {type(value).__name__}", fix))
    elif not NAME_PATTERN.fullmatch(value):
        out.append(violation(path, value, "is not a valid name", fix))


def _check_positive_number(
    out: list[FieldViolation], path: str, value: object, limit: float, fix: str, smallest: float = 0.0
) -> None:
    if value is None:
        return
    if not _is_number(value):
        out.append(violation(path, value, "must be a finite number", fix))
        return
    assert isinstance(value, (int, float))
    if value <= 0:
        out.append(violation(path, value, "must be greater than 0", fix))
    elif value < smallest:
        out.append(violation(path, value, f"must be at least {smallest:f}", fix))
    elif value > limit:
        out.append(violation(path, value, f"must be at most {limit:g}", fix))


def _check_positive_int(out: list[FieldViolation], path: str, value: object, limit: int, fix: str) -> None:
    if value is None:
        return
    if not _is_int(value):
        out.append(violation(path, value, "must be a whole number", fix))
        return
    assert isinstance(value, int)
    if value < 1:
        out.append(violation(path, value, "must be at least 1", fix))
    elif value > limit:
        out.append(violation(path, value, f"must be at most {limit}", fix))


def _check_program(out: list[FieldViolation], cfg: TaskConfig) -> None:
    given = [n for n in ("command", "shell", "script") if getattr(cfg, n) is not None]
    if len(given) > 1:
        out.append(
            violation(
                given[1],
                getattr(cfg, given[1]),
                f"is given together with {given[0]}",
                "give exactly one of command (a list), shell (a string) or script (file content)",
            )
        )
    command = cfg.command
    if isinstance(command, str):
        problem = _text_problem(command, "command")
        if problem or not command.strip():
            out.append(violation("command", command, problem or "is empty", "give a command such as 'python train.py'"))
        elif _too_long_for_exec(command):
            out.append(violation("command", command, TOO_LONG, "put it in a script file, or use script=..."))
    elif isinstance(command, tuple):
        if not command:
            out.append(
                violation(
                    "command",
                    list(command),
                    "is an empty list",
                    "give at least the program, e.g. ['python', 'train.py']",
                )
            )
        for i, arg in enumerate(command):
            fix = "give every argument as a string, e.g. ['python', 'train.py', '--epochs', '10']"
            if not isinstance(arg, str):
                out.append(violation(f"command[{i}]", arg, f"must be a string, not {type(arg).__name__}", fix))
            elif "\x00" in arg:
                out.append(violation(f"command[{i}]", arg, "contains a NUL byte", "remove the NUL byte"))
            elif _not_utf8(arg):
                out.append(
                    violation(f"command[{i}]", arg, "is not valid UTF-8 text", "give the argument as UTF-8 text")
                )
            elif i == 0 and not arg:
                out.append(violation("command[0]", arg, "the program name is empty", fix))
            elif _too_long_for_exec(arg):
                out.append(violation(f"command[{i}]", arg, TOO_LONG, "pass large data in a file (code upload) instead"))
    elif command is not None:
        out.append(
            violation(
                "command",
                command,
                f"must be a list of strings or a string, not {type(command).__name__}",
                "give e.g. ['python', 'train.py'] or 'python train.py'",
            )
        )
    for name in ("shell", "script"):
        value = getattr(cfg, name)
        fix = f"give {name} as a non-empty string"
        if _check_optional_str(out, name, value, fix, allow_newlines=True):
            assert isinstance(value, str)
            if not value.strip():
                out.append(violation(name, value, "is empty", fix))
            elif name == "shell" and _too_long_for_exec(value):
                out.append(violation(name, value, TOO_LONG, "use script=... for long programs"))


# Linux refuses to start a program when one argument or NAME=value is 128 KiB or more
# (MAX_ARG_STRLEN): "Argument list too long". Better said before anything is launched.
MAX_EXEC_STRING_BYTES: Final = 128 * 1024 - 1
TOO_LONG = "is 128 KiB or more, longer than Linux lets one argument or environment variable be"


def _too_long_for_exec(text: str) -> bool:
    return len(text) > MAX_EXEC_STRING_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_EXEC_STRING_BYTES


def _check_env(out: list[FieldViolation], env: object) -> None:
    if not isinstance(env, dict):
        out.append(violation("env", env, "must be a mapping of names to strings", "give e.g. {'BATCH_SIZE': '256'}"))
        return
    if len(env) > MAX_ENV_ENTRIES:
        out.append(
            violation("env", f"{len(env)} entries", f"has more than {MAX_ENV_ENTRIES} entries", "pass fewer variables")
        )
        return
    for key, value in env.items():
        path = f"env[{key!r}]" if isinstance(key, str) else "env"
        if not isinstance(key, str) or not ENV_NAME_PATTERN.fullmatch(key):
            out.append(
                violation(
                    path,
                    key,
                    "is not a valid environment variable name",
                    "use letters, digits and '_', not starting with a digit, e.g. BATCH_SIZE",
                )
            )
            continue
        if not isinstance(value, str):
            out.append(
                violation(
                    path,
                    value,
                    f"must be a string, not {type(value).__name__}",
                    f'quote the value, e.g. {key}: "{show_value(value)}"',
                )
            )
        elif "\x00" in value:
            out.append(violation(path, "<value>", "contains a NUL byte", "remove the NUL byte"))
        elif _too_long_for_exec(f"{key}={value}"):
            out.append(violation(path, "<value>", TOO_LONG, "pass large values in a file (code upload) instead"))
        elif _not_utf8(value):
            out.append(violation(path, "<value>", "is not valid UTF-8 text", "give the value as UTF-8 text"))


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_volume(out: list[FieldViolation], path: str, vol: object) -> None:
    if not isinstance(vol, VolumeSpec):
        out.append(
            violation(
                path or "volume",
                vol,
                "must be a VolumeSpec",
                "give VolumeSpec(name=..., size_gb=...) or VolumeSpec(volume_id=..., mount_path=...)",
            )
        )
        return
    if vol.volume_id is not None:
        if not isinstance(vol.volume_id, str) or not VOLUME_ID_PATTERN.fullmatch(vol.volume_id):
            out.append(
                violation(
                    _at(path, "volume_id"),
                    vol.volume_id,
                    "is not a valid volume id",
                    "use the volume_id shown by `flow volumes list`",
                )
            )
        for extra in ("size_gb", "iops"):
            if getattr(vol, extra) is not None:
                out.append(
                    violation(
                        _at(path, extra),
                        getattr(vol, extra),
                        "cannot be set when attaching an existing volume",
                        f"remove {extra}; an existing volume keeps its own",
                    )
                )
        if vol.mount_path is None and vol.name is None:
            out.append(
                violation(
                    _at(path, "mount_path"),
                    None,
                    "is required when attaching by volume_id",
                    "give mount_path, e.g. '/checkpoints'",
                )
            )
    else:
        if vol.name is None:
            out.append(
                violation(
                    _at(path, "name"),
                    None,
                    "is required for a new volume",
                    "give name (reused by later tasks) or volume_id of an existing volume",
                )
            )
        # A name without size_gb attaches the existing volume of that name (found, or refused, at
        # submit: resolve_volumes), as the Mithril platform's SDK reads it.
    _check_name(out, _at(path, "name"), vol.name, "a volume name")
    _check_positive_int(out, _at(path, "size_gb"), vol.size_gb, MAX_VOLUME_GB, "give the size in GB, e.g. 100")
    _check_positive_int(out, _at(path, "iops"), vol.iops, MAX_IOPS, "give iops as a positive whole number, e.g. 3000")
    if vol.interface not in VOLUME_INTERFACES:
        out.append(
            violation(_at(path, "interface"), vol.interface, "is not a volume interface", "use 'block' or 'file'")
        )
    if vol.mount_path is not None:
        _check_abs_path(out, _at(path, "mount_path"), vol.mount_path, "mount_path")


def _check_mount(out: list[FieldViolation], path: str, mount: object) -> None:
    if not isinstance(mount, MountSpec):
        out.append(
            violation(
                path or "mount",
                mount,
                "must be a MountSpec",
                "give MountSpec(source='s3://bucket/prefix', target='/data')",
            )
        )
        return
    fix = "give source as s3://bucket/prefix, file:///abs/path or /abs/path"
    for name in ("source", "target"):
        if getattr(mount, name) is None:
            out.append(violation(_at(path, name), None, "is required", f"give {name}"))
    if _check_optional_str(out, _at(path, "source"), mount.source, fix):
        src = mount.source
        if src.startswith("s3://"):
            if not src[len("s3://") :].split("/")[0]:
                out.append(violation(_at(path, "source"), src, "has no bucket", "give s3://bucket/prefix"))
        elif src.startswith("file://"):
            if not src[len("file://") :].startswith("/"):
                out.append(
                    violation(_at(path, "source"), src, "is not an absolute file:// URL", "give file:///abs/path")
                )
        elif not src.startswith("/"):
            out.append(violation(_at(path, "source"), src, "is neither an s3:// URL nor an absolute path", fix))
    _check_abs_path(out, _at(path, "target"), mount.target, "target")


def _mount_points(cfg: TaskConfig) -> list[tuple[str, str]]:
    points: list[tuple[str, str]] = []
    for i, vol in enumerate(cfg.volumes if isinstance(cfg.volumes, tuple) else ()):
        if isinstance(vol, VolumeSpec):
            where = vol.effective_mount_path
            if isinstance(where, str) and where.startswith("/"):
                points.append((f"volumes[{i}].mount_path", where.rstrip("/")))
    for i, mount in enumerate(cfg.data_mounts if isinstance(cfg.data_mounts, tuple) else ()):
        if isinstance(mount, MountSpec) and isinstance(mount.target, str) and mount.target.startswith("/"):
            points.append((f"data_mounts[{i}].target", mount.target.rstrip("/")))
    return points


def _check_mount_points(out: list[FieldViolation], cfg: TaskConfig) -> None:
    """Mount paths must be unique and must not nest inside each other."""
    points = _mount_points(cfg)
    for a in range(len(points)):
        for b in range(a + 1, len(points)):
            (path_a, where_a), (path_b, where_b) = points[a], points[b]
            if where_a == where_b:
                out.append(
                    violation(
                        path_b,
                        where_b,
                        f"is the same mount path as {path_a}",
                        "give each volume and mount its own path",
                    )
                )
            elif where_b.startswith(where_a + "/") or where_a.startswith(where_b + "/"):
                out.append(
                    violation(
                        path_b,
                        where_b,
                        f"is nested with {path_a} ({where_a})",
                        "use mount paths that do not contain each other",
                    )
                )


def _check_list(out: list[FieldViolation], path: str, value: object, fix: str) -> bool:
    if isinstance(value, tuple):
        return True
    out.append(violation(path, value, "must be a list", fix))
    return False


def task_config_violations(cfg: TaskConfig) -> tuple[FieldViolation, ...]:
    """Every problem with cfg, in field order. Empty when the config is valid."""
    out: list[FieldViolation] = []
    _check_name(out, "name", cfg.name, "the task name")
    if cfg.instance_type is not None and cfg.min_gpu_memory_gb is not None:
        out.append(
            violation(
                "min_gpu_memory_gb",
                cfg.min_gpu_memory_gb,
                "is given together with instance_type",
                "give either instance_type (e.g. 'a100') or min_gpu_memory_gb, not both",
            )
        )
    if cfg.instance_type is not None:
        if not isinstance(cfg.instance_type, str):
            out.append(
                violation(
                    "instance_type", cfg.instance_type, "must be a string", "give e.g. 'a100', '4xa100' or '8xh100'"
                )
            )
        else:
            parsed = parse_instance_type(cfg.instance_type, field="instance_type")
            if isinstance(parsed, Failure):
                out.extend(parsed.failure().violations)
    _check_positive_int(
        out, "min_gpu_memory_gb", cfg.min_gpu_memory_gb, MAX_GPU_MEMORY_GB, "give the per-GPU memory in GB, e.g. 40"
    )
    _check_program(out, cfg)
    if _check_optional_str(
        out, "image", cfg.image, "give an image reference such as pytorch/pytorch:2.1.0-cuda12.1-cudnn8"
    ):
        assert isinstance(cfg.image, str)
        if not cfg.image or any(c.isspace() for c in cfg.image):
            out.append(
                violation(
                    "image", cfg.image, "is not an image reference", "give e.g. pytorch/pytorch:2.1.0-cuda12.1-cudnn8"
                )
            )
    _check_env(out, cfg.env)
    if _check_optional_str(out, "working_dir", cfg.working_dir, "give a directory such as /workspace"):
        assert isinstance(cfg.working_dir, str)
        if not cfg.working_dir:
            out.append(
                violation(
                    "working_dir", cfg.working_dir, "is empty", "give a directory such as /workspace, or leave it out"
                )
            )
    if _check_list(out, "volumes", cfg.volumes, "give a list of VolumeSpec"):
        for i, vol in enumerate(cfg.volumes):
            _check_volume(out, f"volumes[{i}]", vol)
    _check_positive_number(
        out,
        "max_price_per_hour",
        cfg.max_price_per_hour,
        MAX_PRICE_PER_HOUR,
        "give dollars per hour, e.g. 10.0",
        smallest=MIN_PRICE_PER_HOUR,
    )
    _check_positive_number(
        out, "max_run_time_hours", cfg.max_run_time_hours, MAX_RUN_TIME_HOURS, "give hours, e.g. 24.0"
    )
    if _check_optional_str(out, "region", cfg.region, "give a region such as us-central1-b"):
        assert isinstance(cfg.region, str)
        if not REGION_PATTERN.fullmatch(cfg.region) or len(cfg.region) > 63:
            out.append(
                violation(
                    "region",
                    cfg.region,
                    "is not a region name",
                    "use lower-case letters, digits and '-', e.g. us-central1-b",
                )
            )
    if not _is_int(cfg.num_instances):
        out.append(
            violation("num_instances", cfg.num_instances, "must be a whole number", "give the number of nodes, e.g. 1")
        )
    else:
        _check_positive_int(
            out, "num_instances", cfg.num_instances, MAX_NUM_INSTANCES, "give the number of nodes, e.g. 1"
        )
    if _check_list(out, "ssh_keys", cfg.ssh_keys, "give a list of key names"):
        for i, key in enumerate(cfg.ssh_keys):
            if not isinstance(key, str) or not key.strip() or "\x00" in key or "\n" in key or _not_utf8(key):
                out.append(
                    violation(f"ssh_keys[{i}]", key, "is not a key name", "give the name of a registered SSH key")
                )
    if not isinstance(cfg.upload_code, bool):
        out.append(violation("upload_code", cfg.upload_code, "must be true or false", "give upload_code=True or False"))
    if _check_list(out, "data_mounts", cfg.data_mounts, "give a list of MountSpec"):
        for i, mount in enumerate(cfg.data_mounts):
            _check_mount(out, f"data_mounts[{i}]", mount)
    _check_mount_points(out, cfg)
    _check_optional_str(out, "code_root", cfg.code_root, "give the directory to upload")
    _check_positive_int(out, "memory_mb", cfg.memory_mb, MAX_MEMORY_MB, "give the RAM the task needs in MB, e.g. 32768")
    retries = cfg.max_retries
    if not _is_int(retries) or not 0 <= retries <= MAX_RETRIES:
        fix = f"give how many times a preempted task runs again, from 0 to {MAX_RETRIES}, e.g. 3"
        out.append(violation("max_retries", retries, "is not a number of retries", fix))
    if _check_list(out, "secret_env", cfg.secret_env, "give a list of variable names, e.g. ['WANDB_API_KEY']"):
        for i, name in enumerate(cfg.secret_env):
            if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
                out.append(
                    violation(f"secret_env[{i}]", name, "is not an environment variable name", "e.g. WANDB_API_KEY")
                )
            elif isinstance(cfg.env, dict) and name in cfg.env:
                out.append(
                    violation(
                        f"secret_env[{i}]",
                        name,
                        "is also in env, in clear",
                        f"remove {name} from env; secret_env sets it",
                    )
                )
    out.extend(dependency_violations(cfg.depends_on, cfg.start_after, cfg.priority))
    return tuple(out)


def volume_spec_violations(vol: VolumeSpec, path: str = "") -> tuple[FieldViolation, ...]:
    out: list[FieldViolation] = []
    _check_volume(out, path, vol)
    return tuple(out)


def mount_spec_violations(mount: MountSpec, path: str = "") -> tuple[FieldViolation, ...]:
    out: list[FieldViolation] = []
    _check_mount(out, path, mount)
    return tuple(out)


def validate_task_config(cfg: TaskConfig) -> Result[TaskConfig, DomainError]:
    problems = task_config_violations(cfg)
    if problems:
        return Failure(validation_error(problems, subject="task configuration"))
    return Success(cfg)


def program_of(cfg: TaskConfig) -> tuple[str, tuple[str, ...] | str]:
    """Which program form a (valid) config uses: ("command", argv), ("shell", text) or
    ("script", content). A string command is a shell string; no program means sleep infinity."""
    if isinstance(cfg.command, tuple):
        return ("command", cfg.command)
    if isinstance(cfg.command, str):
        return ("shell", cfg.command)
    if cfg.shell is not None:
        return ("shell", cfg.shell)
    if cfg.script is not None:
        return ("script", cfg.script)
    return ("command", DEFAULT_COMMAND)


# A script task on a machine of its own: its content is written to a private temporary file and
# run by its #! line, or by python3 without one. The content is an argument, never shell text.
SCRIPT_RUNNER: Final = (
    'f="$(mktemp)"; printf %s "$1" > "$f"; chmod 700 "$f"; case "$1" in "#!"*) exec "$f";; *) exec python3 "$f";; esac'
)


def program_argv(cfg: TaskConfig) -> list[str]:
    """The argument vector that runs a (valid) config's program on a machine with bash: a command
    as it is, a shell string under bash -c, a script through SCRIPT_RUNNER."""
    form, program = program_of(cfg)
    if form == "command":
        assert isinstance(program, tuple)
        return list(program)
    assert isinstance(program, str)
    if form == "shell":
        return ["bash", "-c", program]
    return ["bash", "-c", SCRIPT_RUNNER, "flow-script", program]
