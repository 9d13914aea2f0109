"""Volumes on Mithril (`/v2/volumes`), pure: the API's name and size rules, request bodies, and
its VolumeModel as the core's Volume.

- A name matches `^[a-z]([-a-z0-9]*[a-z0-9])?$` and is at most 64 characters (no leading digit,
  no '_', no trailing '-': stricter than Flow's own rule, so checked here before any request).
- A size is a whole number of GB from 1 to MAX_MITHRIL_VOLUME_GB (the platform SDK's cap).
- Interfaces: Flow's "block"/"file" are the API's "Block"/"File".
- A volume lives in one region; a task can only attach volumes of its bid's region.
"""

from __future__ import annotations

import calendar
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.volumes.rules import Volume, new_volume_violations

NAME_PATTERN: Final = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME: Final = 64
MAX_MITHRIL_VOLUME_GB: Final = 15_000
INTERFACE_TO_API: Final = {"block": "Block", "file": "File"}
INTERFACE_FROM_API: Final = {v: k for k, v in INTERFACE_TO_API.items()}


def name_violations(name: object, field: str = "name") -> tuple[FieldViolation, ...]:
    """Mithril's name rule (on top of Flow's): lowercase letters, digits and '-', starting with a
    letter and not ending with '-', at most 64 characters."""
    if not isinstance(name, str):
        return ()  # Flow's own rule reports the type
    if len(name) <= MAX_NAME and NAME_PATTERN.fullmatch(name):
        return ()
    fixed = re.sub(r"[^-a-z0-9]", "-", name.lower()).strip("-")[:MAX_NAME].rstrip("-")
    if not fixed or not fixed[0].isalpha():
        fixed = ("v-" + fixed)[:MAX_NAME].rstrip("-")
    return (
        violation(
            field,
            name,
            "is not a Mithril volume name: lowercase letters, digits and '-', starting with a letter, "
            f"not ending with '-', at most {MAX_NAME} characters",
            f"use e.g. {fixed!r}",
        ),
    )


def size_violations(size_gb: object, field: str = "size_gb") -> tuple[FieldViolation, ...]:
    if isinstance(size_gb, int) and not isinstance(size_gb, bool) and size_gb > MAX_MITHRIL_VOLUME_GB:
        return (
            violation(
                field,
                size_gb,
                f"is over Mithril's limit of {MAX_MITHRIL_VOLUME_GB} GB per volume",
                f"give at most {MAX_MITHRIL_VOLUME_GB}, or split the data over several volumes",
            ),
        )
    return ()


def new_mithril_volume_violations(
    name: object, size_gb: object, interface: object, iops: object = None
) -> tuple[FieldViolation, ...]:
    """Every problem with a volume to be created on Mithril: Flow's rules, then Mithril's."""
    problems = list(new_volume_violations(name, size_gb, interface, iops))
    seen = {p.field for p in problems}
    problems += [p for p in name_violations(name) if p.field not in seen]
    problems += [p for p in size_violations(size_gb) if p.field not in seen]
    if iops is not None and "iops" not in seen:
        problems.append(violation("iops", iops, "cannot be set on Mithril volumes", "leave iops out"))
    return tuple(problems)


def create_body(name: str, size_gb: int, interface: str, region: str, project_fid: str) -> dict[str, object]:
    """POST /v2/volumes."""
    return {
        "name": name,
        "project": project_fid,
        "disk_interface": INTERFACE_TO_API[interface],
        "region": region,
        "size_gb": size_gb,
    }


def checked_create_body(
    name: object, size_gb: object, interface: object, iops: object, region: str, project_fid: str
) -> Result[dict[str, object], DomainError]:
    problems = new_mithril_volume_violations(name, size_gb, interface, iops)
    if problems:
        return Failure(validation_error(problems, subject="volume"))
    assert isinstance(name, str) and isinstance(size_gb, int) and isinstance(interface, str)
    return Success(create_body(name, size_gb, interface, region, project_fid))


_ISO: Final = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?")


def _timestamp(text: object) -> float:
    """Seconds since the epoch of an ISO 8601 time as the API writes it (no zone: UTC); 0.0 when
    it is not one."""
    found = _ISO.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        return 0.0
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        return 0.0
    seconds = float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    seconds += float(found.group(7) or 0.0)
    zone = found.group(8)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


def volume_of(model: Mapping[str, object], provider: str) -> Volume | None:
    """A VolumeModel as the core's Volume; None when it lacks what a Volume needs (or is deleted)."""
    fid, name, size = model.get("fid"), model.get("name"), model.get("capacity_gb")
    if not isinstance(fid, str) or not isinstance(name, str):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or model.get("deleted_at"):
        return None
    region = model.get("region")
    return Volume(
        volume_id=fid,
        name=name,
        size_gb=size,
        interface=INTERFACE_FROM_API.get(str(model.get("interface")), "block"),
        region=region if isinstance(region, str) else "",
        provider=provider,
        created_at=_timestamp(model.get("created_at")),
    )


def volumes_of(models: Sequence[Mapping[str, object]], provider: str) -> tuple[Volume, ...]:
    return tuple(v for v in (volume_of(m, provider) for m in models) if v is not None)


def live_bids_of(model: Mapping[str, object]) -> tuple[str, ...]:
    bids = model.get("bids")
    return tuple(b for b in bids if isinstance(b, str)) if isinstance(bids, list) else ()


def attached_error(volume_id: str, name: str, detail: str) -> DomainError:
    """Mithril refused to delete a volume that a bid holds: its data is intact."""
    return DomainError(
        reason=ErrorReason.VOLUME_ERROR,
        message=(
            f"Volume {name!r} ({volume_id}) is attached to a live Mithril bid; it was not deleted and its data "
            f"is intact (Mithril: {detail})"
        ),
        suggestions=("wait for or cancel the task that uses it (flow status), then delete the volume",),
        metadata=(("volume_id", volume_id),),
    )


def region_mismatch(path: str, volume: Volume, region: str) -> FieldViolation:
    return violation(
        path,
        volume.volume_id,
        f"is in region {volume.region!r}, but the task's bid is in {region!r}; a volume attaches only in its region",
        f"set region={volume.region!r} on the task, or use a volume of {region!r}",
    )


def check_regions(volumes: Sequence[tuple[str, Volume]], region: str) -> Result[None, DomainError]:
    """Every (field path, volume) in the bid's region."""
    problems = [region_mismatch(path, v, region) for path, v in volumes if v.region and v.region != region]
    if problems:
        return Failure(validation_error(problems, subject="task configuration"))
    return Success(None)


# --- on the instance --------------------------------------------------------------------------

DISK_WAIT_SECONDS: Final = 60
LABEL_LENGTH: Final = 16  # ext4's limit


@frozen
class VolumeAttachment:
    """A volume of the bid, as the startup script mounts it."""

    volume_id: str
    interface: str  # "block" | "file"
    size_gb: int
    mount_path: str

    @property
    def label(self) -> str:
        """The ext4 label Flow gives the volume's filesystem: how it is known again later."""
        return self.volume_id[-LABEL_LENGTH:]


def file_share(volume_id: str) -> str:
    """Where a File volume is served (NFS 4.1), per the platform doc."""
    return f"fileshare-{volume_id}.mithril.internal:/"


# `flow_disk FID SIZE_GB LABEL` prints the block device of a volume, found by what it is, never
# by attach order: a disk whose serial names the fid, else one whose filesystem carries Flow's
# label, else an unclaimed, unmounted disk of exactly the volume's size (10^9 or 2^30 bytes per GB;
# a blank one first). Disks already given to another volume of this task ($FLOW_CLAIMED) are
# skipped. It waits up to DISK_WAIT_SECONDS for the device to appear.
_DISK_FINDER: Final = (
    "flow_disk() {\n"
    f"  for _ in $(seq {DISK_WAIT_SECONDS}); do\n"
    '    disks=$(lsblk -dbnpo NAME,SIZE,TYPE | awk \'$3 == "disk" {print $1 " " $2}\')\n'
    '    for c in $(printf "%s\\n" "$disks" | cut -d" " -f1); do\n'
    '      case " $FLOW_CLAIMED " in *" $c "*) continue;; esac\n'
    '      case "$(lsblk -dno SERIAL "$c" 2>/dev/null)" in *"$1"*) echo "$c"; return 0;; esac\n'
    '      [ "$(blkid -o value -s LABEL "$c" 2>/dev/null)" = "$3" ] && { echo "$c"; return 0; }\n'
    "    done\n"
    "    for blank in 1 0; do\n"
    '      for c in $(printf "%s\\n" "$disks" | awk -v g="$2" '
    "'$2 == g * 1000000000 || $2 == g * 1073741824 {print $1}'); do\n"
    '        case " $FLOW_CLAIMED " in *" $c "*) continue;; esac\n'
    '        lsblk -nro MOUNTPOINT "$c" 2>/dev/null | grep -q . && continue\n'
    '        if [ "$blank" = 1 ]; then blkid "$c" >/dev/null 2>&1 && continue; fi\n'
    '        echo "$c"; return 0\n'
    "      done\n"
    "    done\n"
    "    sleep 1\n"
    "  done\n"
    "  return 1\n"
    "}"
)


def mount_lines(attachments: Sequence[VolumeAttachment], fail: str) -> list[str]:
    """Bash that mounts each volume at its mount path before the command runs. Block volumes are
    found by serial, label or size (flow_disk), formatted ext4 only when blkid finds no
    filesystem, and mounted; File volumes are mounted over NFS 4.1. `fail MESSAGE` is the
    script's way to end the task with a reason. Every value is quoted."""
    if not attachments:
        return []
    q = shlex.quote
    lines: list[str] = []
    if any(a.interface == "block" for a in attachments):
        lines += [_DISK_FINDER, 'FLOW_CLAIMED=""']
    for a in attachments:
        path = q(a.mount_path)
        if a.interface == "file":
            lines.append(
                f"mkdir -p {path} && mount -t nfs4 -o vers=4.1 {q(file_share(a.volume_id))} {path} "
                f"|| {fail} {q(f'cannot mount file volume {a.volume_id} at {a.mount_path}')}"
            )
            continue
        lines += [
            f"dev=$(flow_disk {q(a.volume_id)} {a.size_gb} {q(a.label)}) "
            f"|| {fail} {q(f'block volume {a.volume_id} ({a.size_gb} GB) did not appear as a disk')}",
            'FLOW_CLAIMED="$FLOW_CLAIMED $dev"',
            f'blkid "$dev" >/dev/null 2>&1 || mkfs.ext4 -q -L {q(a.label)} "$dev" >&3 2>&1 '
            f"|| {fail} {q(f'cannot format block volume {a.volume_id}')}",
            f'mkdir -p {path} && mount "$dev" {path} '
            f"|| {fail} {q(f'cannot mount block volume {a.volume_id} at {a.mount_path}')}",
        ]
    return lines
