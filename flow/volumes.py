"""Volumes in the SDK: `Volume` (what `Flow.create_volume` and `Flow.list_volumes` return) and the
calls behind those methods, over flowd's VolumeService."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs

from flowapi.v1 import volume_pb2

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.connection import DaemonConnection


@attrs.frozen
class Volume:
    """A persistent volume. Attach it with `VolumeSpec(volume_id=volume.volume_id, mount_path=...)`."""

    volume_id: str
    name: str
    size_gb: int
    region: str
    interface: str  # "block" (one task at a time) or "file" (shared)
    created_at: datetime
    attachments: tuple[str, ...] = ()  # ids of the live tasks that have it attached
    provider: str = ""
    iops: int | None = None

    def to_dict(self) -> dict[str, object]:
        data = attrs.asdict(self)
        data["created_at"] = self.created_at.isoformat().replace("+00:00", "Z")
        data["attachments"] = list(self.attachments)
        return data


def volume_from_proto(message: volume_pb2.Volume) -> Volume:
    from flow.wire.volume_codec import interface_from_proto

    return Volume(
        volume_id=message.volume_id,
        name=message.name,
        size_gb=message.size_gb,
        region=message.region,
        interface=interface_from_proto(message.interface),
        created_at=datetime.fromtimestamp(message.create_time.ToNanoseconds() / 1e9, tz=UTC),
        attachments=tuple(message.attached_task_ids),
        provider=message.provider,
        iops=message.iops or None,
    )


def create_volume(
    conn: DaemonConnection, size_gb: int, name: str, interface: str, iops: int | None, provider: str
) -> Volume:
    from returns.result import Failure

    from flow.domain.volumes.rules import make_volume
    from flow.wire.error_table import exception_from_domain_error
    from flow.wire.volume_codec import interface_to_proto

    checked = make_volume(name, size_gb, interface, "vol-check", 0.0, iops=iops)  # fail fast, before a call
    if isinstance(checked, Failure):
        raise exception_from_domain_error(checked.failure())
    request = volume_pb2.CreateVolumeRequest(
        name=name,
        size_gb=size_gb,
        interface=interface_to_proto(interface),
        iops=iops or 0,
        request_id=uuid.uuid4().hex,  # a retried create never makes two volumes
        provider=provider,
    )
    reply = conn.call(lambda c: c.volumes.CreateVolume(request, timeout=600))
    return volume_from_proto(reply.volume)


def get_volume(conn: DaemonConnection, volume_id: str) -> Volume:
    request = volume_pb2.GetVolumeRequest(volume_id=volume_id)
    return volume_from_proto(conn.call(lambda c: c.volumes.GetVolume(request, timeout=30)).volume)


def list_volumes(conn: DaemonConnection, limit: int) -> list[Volume]:
    found: list[Volume] = []
    token = ""
    while len(found) < limit:
        request = volume_pb2.ListVolumesRequest(page_size=min(limit - len(found), 1000), page_token=token)
        reply = conn.call(lambda c, r=request: c.volumes.ListVolumes(r, timeout=30))  # type: ignore[misc]
        found.extend(volume_from_proto(v) for v in reply.volumes)
        token = reply.next_page_token
        if not token:
            break
    return found


def delete_volume(conn: DaemonConnection, volume_id: str) -> bool:
    request = volume_pb2.DeleteVolumeRequest(volume_id=volume_id)
    conn.call(lambda c: c.volumes.DeleteVolume(request, timeout=120))
    return True


def run_volumes_command(flow: Flow, args: argparse.Namespace) -> int:
    """`flow volumes create|list|delete`; every form takes --json."""
    if args.volumes_cmd == "create":
        volume = flow.create_volume(size_gb=args.size, name=args.name, interface=args.interface)
        if args.json:
            _emit(volume.to_dict())
        else:
            print(volume.volume_id)
        return 0
    if args.volumes_cmd == "list":
        volumes = flow.list_volumes(limit=args.limit)
        if args.json:
            _emit([v.to_dict() for v in volumes])
            return 0
        rows = [("VOLUME_ID", "NAME", "SIZE", "INTERFACE", "REGION", "CREATED", "ATTACHED TO")]
        rows += [
            (
                v.volume_id,
                v.name,
                f"{v.size_gb} GB",
                v.interface,
                v.region,
                v.created_at.strftime("%Y-%m-%d %H:%M"),
                ", ".join(v.attachments) or "-",
            )
            for v in volumes
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        return 0
    deleted = []
    for volume_id in args.volume_ids:
        flow.delete_volume(volume_id)
        deleted.append(volume_id)
        if not args.json:
            print(f"deleted {volume_id}")
    if args.json:
        _emit({"deleted": deleted})
    return 0


def _emit(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
