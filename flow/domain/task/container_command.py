"""The command line that runs a task in its image, through docker or podman: a pure function.

The result is an argument vector, run without a shell, so user values (image, command, paths)
pass verbatim; `display_command` gives its shell-quoted form for messages. Environment values
never appear in it: the engine's client gets them in its own environment and the command names
them (`--env NAME`), so secrets stay out of process listings.

GPUs: docker gets `--gpus "device=I,J"` (the inner quotes keep the comma inside one device
list), podman the CDI devices `nvidia.com/gpu=I` one by one. Inside the container the assigned
GPUs are numbered from 0, so CUDA_VISIBLE_DEVICES there is 0..n-1.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation

CONTAINER_CODE_DIR: Final = "/workspace"
ENGINES: Final = ("docker", "podman")
# Characters that cannot be carried inside a --mount field (comma-separated key=value pairs).
_MOUNT_UNSAFE: Final = (",", '"', "\n", "\x00")


@frozen
class Mount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool = False


@frozen
class ContainerSpec:
    engine: str  # "docker" or "podman" (the basename of the client)
    image: str
    argv: tuple[str, ...]  # the program; empty: the image's own command
    name: str  # container name, e.g. flow-t-3kq9x2m4zr-node1
    workdir: str
    env_names: tuple[str, ...]  # variables passed from the client's environment
    mounts: tuple[Mount, ...] = ()
    gpus: tuple[int, ...] = ()  # host GPU indexes
    host_network: bool = False


def container_workdir(working_dir: str | None) -> str:
    """Where the task runs in the container: its code directory, or working_dir (relative to it)."""
    if not working_dir:
        return CONTAINER_CODE_DIR
    if working_dir.startswith("/"):
        return working_dir
    return f"{CONTAINER_CODE_DIR}/{working_dir}"


def container_env(task_env: Mapping[str, str], gpus: Sequence[int]) -> dict[str, str]:
    """The variables the task sees in the container: its own ones (config env, secrets, Flow's and
    the nodes' variables), with the GPUs renumbered as the container numbers them. The host's
    PATH, HOME and the like are the image's business."""
    env = {k: v for k, v in task_env.items() if k not in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(gpus)))
    return env


def _gpu_flags(engine: str, gpus: Sequence[int]) -> list[str]:
    if not gpus:
        return []
    if engine == "podman":
        return [flag for index in gpus for flag in ("--device", f"nvidia.com/gpu={index}")]
    return ["--gpus", '"device=' + ",".join(str(i) for i in gpus) + '"']


def spec_violations(spec: ContainerSpec) -> list[FieldViolation]:
    """Values the command line cannot carry faithfully, each named with its fix."""
    problems: list[FieldViolation] = []
    if spec.engine not in ENGINES:
        problems.append(
            violation("engine", spec.engine, "is not a container engine Flow drives", "use docker or podman")
        )
    if not spec.image or spec.image.startswith("-") or any(c.isspace() or c == "\x00" for c in spec.image):
        problems.append(
            violation(
                "image", spec.image, "is not an image reference", "give e.g. pytorch/pytorch:2.1.0-cuda12.1-cudnn8"
            )
        )
    for mount in spec.mounts:
        for what, path in (("source", mount.source), ("target", mount.target)):
            if not path.startswith("/") or any(c in path for c in _MOUNT_UNSAFE):
                problems.append(
                    violation(
                        f"mount {what}",
                        path,
                        "must be an absolute path without commas, quotes or newlines",
                        "move it (or FLOW_HOME) to a plain path",
                    )
                )
    if not spec.workdir.startswith("/") or "\x00" in spec.workdir:
        problems.append(
            violation("working_dir", spec.workdir, "is not an absolute path in the container", "give /path")
        )
    problems.extend(
        violation(f"env[{name!r}]", name, "is not a variable name", "use letters, digits and _")
        for name in spec.env_names
        if not name or "=" in name or "\x00" in name
    )
    problems.extend(
        violation(f"command[{i}]", arg, "contains a NUL byte", "remove it")
        for i, arg in enumerate(spec.argv)
        if "\x00" in arg
    )
    return problems


def container_argv(spec: ContainerSpec) -> Result[tuple[str, ...], DomainError]:
    """`<engine> run ...` for the spec (without the client's path: the shell prepends it)."""
    problems = spec_violations(spec)
    if problems:
        return Failure(validation_error(problems, subject="container command"))
    argv = [spec.engine, "run", "--rm", "--init", "--name", spec.name, "--workdir", spec.workdir]
    if spec.host_network:
        argv += ["--network", "host"]
    argv += _gpu_flags(spec.engine, spec.gpus)
    for mount in spec.mounts:
        field = f"type=bind,source={mount.source},target={mount.target}"
        argv += ["--mount", field + (",readonly" if mount.read_only else "")]
    for name in sorted(spec.env_names):
        argv += ["--env", name]
    # "--" is not needed: the image is the first positional argument; everything after it is
    # the program, passed to it untouched.
    argv.append(spec.image)
    argv += spec.argv
    return Success(tuple(argv))


def display_command(argv: Sequence[str]) -> str:
    """The argument vector as one shell-quoted line (for messages and logs)."""
    return shlex.join(argv)
