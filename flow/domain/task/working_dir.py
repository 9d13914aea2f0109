"""Where a task starts, and whether that directory can be there when it does.

`working_dir` is read in the task's own view of the files: in an image it is the container's (a
relative one below the code at /workspace); on the host an absolute one must already exist, and a
relative one is below the task's code snapshot (upload_code) or, without one, below the task's own
new and empty directory, where nothing but the directory itself exists. The shell looks at the
file system (the SDK at the code it uploads, a provider at its machine) and these rules say what
to look at and how to refuse, so a missing directory is refused at submit, not at start.
"""

from __future__ import annotations

import posixpath

from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation
from flow.domain.task.config import MountSpec, TaskConfig, VolumeSpec


def _given(config: TaskConfig) -> str | None:
    wanted = config.working_dir
    return wanted if isinstance(wanted, str) and wanted else None


def _mounted(config: TaskConfig, wanted: str) -> bool:
    """At or below a volume's or data mount's path: made in the task's own mount namespace."""
    points = [v.effective_mount_path for v in config.volumes if isinstance(v, VolumeSpec)]
    points += [m.target for m in config.data_mounts if isinstance(m, MountSpec)]
    path = posixpath.normpath(wanted)
    for point in points:
        if isinstance(point, str) and point.startswith("/"):
            root = posixpath.normpath(point)
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return True
    return False


def host_working_dir(config: TaskConfig) -> str | None:
    """The directory of the host that must exist before the task starts there (an absolute
    working_dir outside an image and outside the task's mounts), or None when there is none to
    look for."""
    wanted = _given(config)
    if wanted is None or config.image or not wanted.startswith("/") or _mounted(config, wanted):
        return None
    return wanted


def snapshot_working_dir(config: TaskConfig) -> str | None:
    """The directory below code_root the task starts in (a relative working_dir with
    upload_code), or None when the snapshot has nothing to say about it."""
    wanted = _given(config)
    if wanted is None or wanted.startswith("/") or not config.upload_code:
        return None
    return wanted


def working_dir_violation(config: TaskConfig, exists: bool = True) -> FieldViolation | None:
    """The problem with config's working_dir. `exists`: whether the directory that
    host_working_dir or snapshot_working_dir named is there (the caller looked)."""
    wanted = _given(config)
    if wanted is None or config.image:
        return None
    if wanted.startswith("/"):
        if exists or _mounted(config, wanted):
            return None
        return violation(
            "working_dir",
            wanted,
            "does not exist on the machine the task runs on",
            "create it first, or leave working_dir out",
        )
    if config.upload_code:
        if exists:
            return None
        return violation(
            "working_dir",
            wanted,
            "is not a directory of the code snapshot (working_dir is relative to code_root)",
            "give a directory below code_root that holds files, or an absolute path",
        )
    if posixpath.normpath(wanted) == ".":
        return None
    return violation(
        "working_dir",
        wanted,
        "is relative, but without upload_code the task starts in its own new, empty directory",
        "give an absolute path, or upload the code (the default) to start below it",
    )


def checked_working_dir(config: TaskConfig, exists: bool = True) -> Result[TaskConfig, DomainError]:
    """config, or the validation error that refuses its working_dir (see working_dir_violation)."""
    problem = working_dir_violation(config, exists)
    if problem is None:
        return Success(config)
    return Failure(validation_error([problem], subject="task configuration"))


__all__ = ["checked_working_dir", "host_working_dir", "snapshot_working_dir", "working_dir_violation"]
