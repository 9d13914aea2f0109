"""Volumes and data mounts for local tasks: a private mount namespace and root per task.

The local provider calls `check_supported` when placing a task and `namespace_command` when
launching it. A task without volumes or data mounts runs exactly as before. One with them runs
under `unshare --mount --propagation private`, whose /bin/sh builds the task's private root
(the host's directories bound into a tmpfs in the task's directory, see
flow.domain.volumes.mounts), binds each volume's host mount (flowd's loop mount of its image)
and each data source at its target there, then chroots and execs the task's usual wrapper: the
pid, the marker in argv and the exit-status file are unchanged, nothing is mounted on the host,
and no mount point is ever created on the host.

Where the machine cannot do that (flowd not root, no `unshare`), the task is refused before
anything is created, with the reason and what to do: volumes are never mounted elsewhere.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.task.config import TaskConfig
from flow.domain.volumes.mounts import (
    Bind,
    PathKind,
    enter_argv,
    mount_point_paths,
    namespace_argv,
    namespace_script,
)
from flow.domain.volumes.rules import resolve_volumes
from flowd.providers.base import LaunchError
from flowd.volume_s3 import s3_available, sync_s3
from flowd.volumes import VolumeManager, VolumeStorageError, storage_error

DATA_DIR = "data"
ROOT_DIR = ".flow-root"  # in the task's directory: where its private root is mounted (in its namespace)


@functools.cache
def namespace_problem() -> str | None:
    """Why this machine cannot give tasks private mount namespaces, or None when it can."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "`unshare` (util-linux) is not installed"
    if os.geteuid() != 0:
        return (
            f"flowd runs as uid {os.geteuid()}, not root: loop-mounting volume images and binding them "
            "into a task's mount namespace need root (CAP_SYS_ADMIN)"
        )
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", "mount -t tmpfs flow-probe /mnt"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"this machine refuses private mount namespaces: {probe.stderr.strip() or probe.returncode}"
    return None


def check_supported(config: TaskConfig, provider: str) -> Result[None, DomainError]:
    """Volumes and data mounts need a private mount namespace; say why when there is none."""
    if not config.volumes and not config.data_mounts:
        return Success(None)
    problem = namespace_problem()
    if config.image:
        problem = "volumes and data mounts are not given to image (container) tasks on the local provider yet"
    if problem is None and any(m.source.startswith("s3://") for m in config.data_mounts) and not s3_available():
        problem = "s3:// data mounts need boto3 in flowd's environment (pip install 'flow-launcher[s3]')"
    if problem is None:
        return Success(None)
    fields = " and ".join(n for n in ("volumes", "data_mounts") if getattr(config, n))
    return Failure(
        DomainError(
            reason=ErrorReason.VOLUME_ERROR,
            message=f"The local provider cannot give this task its {fields}: {problem}",
            suggestions=(
                "run flowd as root (e.g. `sudo flowd`), where mount namespaces and loop devices are available",
                f"or leave {fields} out and read the data from the task's code directory",
                "or run on a provider with volumes",
            ),
            metadata=(("provider", provider),),
        )
    )


def _binds(config: TaskConfig, volumes: VolumeManager | None, task_dir: Path) -> list[Bind]:
    binds: list[Bind] = []
    if config.volumes:
        if volumes is None:
            raise LaunchError("this flowd has no volume storage configured")
        resolved = resolve_volumes(config.volumes, volumes.all(), iter(()), 0.0)
        if isinstance(resolved, Failure):
            raise LaunchError(resolved.failure().message, resolved.failure())
        for mount in resolved.unwrap():
            try:
                host = volumes.host_path(mount.volume.volume_id)
            except VolumeStorageError as exc:
                message = f"volume {mount.volume.name} ({mount.volume.volume_id}): {exc}"
                raise LaunchError(message, storage_error(exc)) from exc
            binds.append(Bind(str(host), mount.mount_path))
    for i, data in enumerate(config.data_mounts):
        if data.source.startswith("s3://"):
            local = task_dir / DATA_DIR / str(i)
            sync_s3(data.source, local)
            binds.append(Bind(str(local), data.target, read_only=True))
            continue
        source = data.source.removeprefix("file://")
        if not os.path.isdir(source):
            problem, fix = "is not a directory on this machine", "give an existing directory"
            raise LaunchError(
                f"data_mounts[{i}].source {data.source!r} {problem}; {fix}",
                validation_error([violation(f"data_mounts[{i}].source", data.source, problem, fix)]),
            )
        binds.append(Bind(source, data.target, read_only=True))
    return binds


def namespace_command(
    config: TaskConfig, command: Sequence[str], volumes: VolumeManager | None, task_dir: Path
) -> list[str]:
    """`command` itself, or `command` inside a private mount namespace with the task's volumes
    and data mounts (raises LaunchError when one cannot be prepared)."""
    if not config.volumes and not config.data_mounts:
        return list(command)
    problem = namespace_problem()
    if problem is not None:
        raise LaunchError(problem)
    unshare = shutil.which("unshare") or "unshare"
    binds = _binds(config, volumes, task_dir)
    root = Path(os.path.realpath(task_dir)) / ROOT_DIR  # no symlink on the way: the script needs it
    root.mkdir(mode=0o755, exist_ok=True)
    script = namespace_script(binds, str(root), {p: _kind(p) for p in mount_point_paths(binds)})
    if isinstance(script, Failure):
        raise LaunchError(script.failure().message)
    return namespace_argv(unshare, script.unwrap(), command)


def _kind(path: str) -> PathKind:
    """What the host has at `path`, without following a symlink."""
    try:
        return "dir" if stat.S_ISDIR(os.lstat(path).st_mode) else "other"
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "other"


def enter_command(config: TaskConfig, pid: int | None, command: list[str]) -> list[str]:
    """`command` run inside the mount namespace of a running task (its process `pid`), so flow
    ssh sees its volumes and data; `command` as it is for a task without one."""
    if (not config.volumes and not config.data_mounts) or pid is None:
        return command
    return enter_argv(shutil.which("nsenter") or "nsenter", int(pid), command)
