"""s3:// data mounts of a Mithril task: synced on the instance before the command starts, then
read-only at their targets.

The instance fetches the objects itself (flow.runtime.s3_sync, standard library only, uploaded
beside the payload), with credentials flowd resolved where every AWS tool finds them and sends
over SFTP to a 0600 file in the node's directory: never in the startup script (which the
platform keeps where project members read it), the bid, a log or an error. The file is deleted
as soon as the sync is over, whether it worked or not. A sync that fails ends the task FAILED
"could not start: could not read s3://bucket/prefix: ..." (flow_fail in the script).

Read-only: the synced tree loses its write bits (the task's user cannot change it), and where the
script runs as root (the platform runs it so) it is also bind-mounted read-only over itself.
Other sources (a path on the machine that runs flowd) do not exist on an instance: refused before
anything is created, naming the field.
"""

from __future__ import annotations

import shlex
from typing import Final

from attrs import field, frozen

from flow.domain.errors import FieldViolation, violation
from flow.domain.task.config import TaskConfig

CREDENTIALS_FILE: Final = "s3_credentials.json"
SYNCER_FILE: Final = "flow_s3_sync.py"

q = shlex.quote


@frozen
class DataMount:
    source: str  # s3://bucket/prefix
    target: str  # an absolute path on the instance


@frozen
class DataMountPlan:
    """What the node syncs, and the two files it needs for it (uploaded over SFTP): the syncer
    (flow.runtime.s3_sync) and the credentials (a JSON document, never shown)."""

    mounts: tuple[DataMount, ...]
    credentials: bytes = field(repr=False)
    syncer: bytes = field(repr=False)


def data_mount_violations(config: TaskConfig, provider: str) -> list[FieldViolation]:
    """Data mounts a Mithril instance cannot have: only s3:// sources exist there."""
    fix = f"put the data in S3 and give its s3:// URL: a path of this machine does not exist on {provider}'s instances"
    return [
        violation(f"data_mounts[{i}].source", m.source, f"is not an s3:// URL, the one source {provider} can sync", fix)
        for i, m in enumerate(config.data_mounts)
        if not m.source.startswith("s3://")
    ]


def data_mounts_of(config: TaskConfig) -> tuple[DataMount, ...]:
    return tuple(DataMount(m.source, m.target.rstrip("/") or "/") for m in config.data_mounts)


def sync_lines(plan: DataMountPlan, fail: str) -> list[str]:
    """Bash that syncs every mount into its target (ending the node with `fail MESSAGE` when it
    cannot), deletes the credentials whatever happened, and makes the targets read-only."""
    creds = f'"$D/{CREDENTIALS_FILE}"'
    pairs = " ".join(f"{q(m.source)} {q(m.target)}" for m in plan.mounts)
    sources = ", ".join(m.source for m in plan.mounts)
    missing = q(f"could not sync {sources}: the instance has no python3")
    lines = [
        f"command -v python3 >/dev/null || {{ rm -f {creds}; {fail} {missing}; }}",
        f'flow_sync_error=$(python3 "$D/{SYNCER_FILE}" {creds} {pairs} 2>&1 >&3)',
        "flow_sync_rc=$?",
        f"rm -f {creds}",
        f'[ "$flow_sync_rc" = 0 ] || {fail} "$flow_sync_error"',
    ]
    for m in plan.mounts:
        target = q(m.target)
        lines += [
            f"chmod -R a-w {target}",
            f'if [ "$(id -u)" = 0 ]; then mount --bind {target} {target} && mount -o remount,bind,ro {target}; fi',
        ]
    return lines
