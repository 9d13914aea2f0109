"""Volumes in the SDK: `Volume` (what `Flow.create_volume` and `Flow.list_volumes` return) and the
calls behind those methods, over flowd's VolumeService."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs

from flow.domain.volumes import rules
from flow.wire.volume_codec import (
    AttachedVolume,
    create_volume_call,
    delete_volume_call,
    get_volume_call,
    list_volumes_call,
)

if TYPE_CHECKING:
    from flow.connection import DaemonConnection

PAGE_MAX = 1000  # ListVolumes' largest page


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

    @classmethod
    def from_core(cls, found: AttachedVolume) -> Volume:
        """The SDK form of the core's volume and the tasks it is attached to (as flowd reports them)."""
        volume, attachments = found
        return cls(
            volume_id=volume.volume_id,
            name=volume.name,
            size_gb=volume.size_gb,
            region=volume.region,
            interface=volume.interface,
            created_at=datetime.fromtimestamp(volume.created_at, tz=UTC),
            attachments=attachments,
            provider=volume.provider,
            iops=volume.iops,
        )

    def to_dict(self) -> dict[str, object]:
        data = attrs.asdict(self)
        data["created_at"] = self.created_at.isoformat().replace("+00:00", "Z")
        data["attachments"] = list(self.attachments)
        return data


def create_volume(
    conn: DaemonConnection, size_gb: int, name: str, interface: str, iops: int | None, provider: str
) -> Volume:
    from returns.result import Failure

    from flow.wire.error_table import exception_from_domain_error

    checked = rules.make_volume(name, size_gb, interface, "vol-check", 0.0, iops=iops)  # fail fast, before a call
    if isinstance(checked, Failure):
        raise exception_from_domain_error(checked.failure())
    # request_id: a retried create never makes two volumes
    call = create_volume_call(name, size_gb, interface, iops, uuid.uuid4().hex, provider)
    return Volume.from_core(conn.unary(call, timeout=600))


def get_volume(conn: DaemonConnection, volume_id: str) -> Volume:
    return Volume.from_core(conn.unary(get_volume_call(volume_id), timeout=30))


def list_volumes(conn: DaemonConnection, limit: int, provider: str = "") -> list[Volume]:
    """`provider`: only the volumes its tasks can use (a provider that keeps its own adds them)."""
    found: list[Volume] = []
    token = ""
    while len(found) < limit:
        page = conn.unary(list_volumes_call(min(limit - len(found), PAGE_MAX), token, provider), timeout=30)
        found.extend(Volume.from_core(v) for v in page.items)
        token = page.next_page_token
        if not token:
            break
    return found


def delete_volume(conn: DaemonConnection, volume_id: str) -> bool:
    conn.unary(delete_volume_call(volume_id), timeout=120)
    return True


__all__ = ["Volume", "create_volume", "delete_volume", "get_volume", "list_volumes"]
