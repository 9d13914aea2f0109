"""The shell fragment that sets up a task's private mount namespace.

flowd starts a task that has volumes or data mounts as
`unshare --mount --propagation private /bin/sh -c <this script> flow-mounts <wrapper argv...>`:
the script bind-mounts each source at its target inside the new namespace (read-only where
asked), then execs the task's usual wrapper. Nothing is mounted on the host. Targets under
/volumes sit on a small tmpfs mounted over /volumes in the namespace, so their directories are
never created on the host; /volumes itself and any other target's directory are created (empty,
0755) on the host where they are missing: a mount point must exist, and the namespace shares the
host's file systems.

Every value is quoted with shlex.quote; a failure names the mount and ends the task with
MOUNT_FAILED_EXIT before its command runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Final

from attrs import frozen

from flow.domain.task.config import DEFAULT_VOLUME_ROOT

MOUNT_FAILED_EXIT: Final = 125


@frozen
class Bind:
    """`source` (a host directory) appears at `target` in the task."""

    source: str
    target: str
    read_only: bool = False


def namespace_script(binds: Iterable[Bind], mount: str = "mount", mkdir: str = "mkdir") -> str:
    """The script (run by /bin/sh inside the new namespace) that mounts `binds`, then execs "$@"."""
    q = shlex.quote
    ordered = sorted(binds, key=lambda b: (b.target.count("/"), b.target))
    lines = [
        f"fail() {{ printf 'flow: %s\\n' \"$1\" >&2; exit {MOUNT_FAILED_EXIT}; }}",
    ]
    root = DEFAULT_VOLUME_ROOT
    if any(b.target.startswith(root + "/") for b in ordered):
        lines.append(f"{q(mkdir)} -p -m 0755 {q(root)} || fail {q('cannot create ' + root)}")
        lines.append(
            f"{q(mount)} -t tmpfs -o mode=0755,size=1m flow-volumes {q(root)} "
            f"|| fail {q('cannot mount a tmpfs on ' + root + ' in the task namespace')}"
        )
    for bind in ordered:
        target, source = q(bind.target), q(bind.source)
        lines.append(f"{q(mkdir)} -p -m 0755 {target} || fail {q('cannot create the mount point ' + bind.target)}")
        lines.append(f"{q(mount)} --bind {source} {target} || fail {q(f'cannot bind {bind.source} at {bind.target}')}")
        if bind.read_only:
            lines.append(f"{q(mount)} -o remount,bind,ro {target} || fail {q(f'cannot make {bind.target} read-only')}")
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


def namespace_argv(unshare: str, script: str, command: Iterable[str]) -> list[str]:
    """The argv that runs `command` (the wrapper) in a private mount namespace set up by `script`."""
    return [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script, "flow-mounts", *command]
