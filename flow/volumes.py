"""Volumes in the SDK: `Volume` (what `Flow.create_volume` and `Flow.list_volumes` return), the
calls behind those methods, over flowd's VolumeService, and `VolumeClient`, the same calls as
`Flow().volumes` offers them in the Mithril platform's SDK (flow-compute)."""

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
    from flow.config import VolumeSpec
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

    @property
    def id(self) -> str:
        """flow-compute's name for volume_id."""
        return self.volume_id

    @property
    def attached_to(self) -> tuple[str, ...]:
        """flow-compute's name for attachments."""
        return self.attachments

    @staticmethod
    def from_name(name: str, *, create_if_missing: bool = False, size_gb: int | None = None) -> VolumeSpec:
        """flow-compute's reference to a volume by name, for `@app.function(volumes={path: ...})`:
        a VolumeSpec of that name (its mount path is set by the mapping). It attaches the existing
        volume, or with create_if_missing=True (and size_gb) creates it on first use."""
        from flow.config import VolumeSpec

        return VolumeSpec(name=name, size_gb=size_gb, create_if_missing=create_if_missing)

    def to_dict(self) -> dict[str, object]:
        data = attrs.asdict(self)
        data["created_at"] = self.created_at.isoformat().replace("+00:00", "Z")
        data["attachments"] = list(self.attachments)
        return data


def create_volume(
    conn: DaemonConnection,
    size_gb: int,
    name: str,
    interface: str,
    iops: int | None,
    provider: str,
    request_id: str | None = None,
) -> Volume:
    from returns.result import Failure

    from flow.wire.error_table import exception_from_domain_error

    checked = rules.make_volume(name, size_gb, interface, "vol-check", 0.0, iops=iops)  # fail fast, before a call
    if isinstance(checked, Failure):
        raise exception_from_domain_error(checked.failure())
    # request_id: a retried create never makes two volumes
    call = create_volume_call(name, size_gb, interface, iops, request_id or uuid.uuid4().hex, provider)
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


class VolumeClient:
    """`Flow().volumes`: the volume calls as the Mithril platform's SDK (flow-compute) spells
    them. The design API's Flow.create_volume/list_volumes/delete_volume do the same."""

    def __init__(self, conn: DaemonConnection, provider: str) -> None:
        self._conn = conn
        self._provider = provider

    def create(
        self,
        size_gb: int,
        *,
        name: str | None = None,
        interface: str | None = None,
        region: str | None = None,
        idempotency_key: str | None = None,
    ) -> Volume:
        """A new volume; without a name, one is made up (`volume-` and 8 hex digits).
        `idempotency_key`: a retried create with the same key makes one volume."""
        if region is not None:
            from flow.errors import ValidationError

            raise ValidationError(
                f"volumes.create(region={region!r}): a volume is made in its provider's region",
                suggestions=["leave region out; a provider's region is in its settings (flow daemon config)"],
            )
        chosen = name if name is not None else f"volume-{uuid.uuid4().hex[:8]}"
        return create_volume(
            self._conn, size_gb, chosen, interface or "block", None, self._provider, request_id=idempotency_key
        )

    def list(self, limit: int | None = None) -> list[Volume]:
        """Every volume (or the newest `limit`), newest first."""
        return list_volumes(self._conn, limit if limit is not None else 1 << 31)

    def get(self, volume_id_or_name: str) -> Volume:
        """The volume with this id, or else with exactly this name (VolumeError if none)."""
        from flow.errors import ResourceNotFoundError, VolumeError

        if volume_id_or_name.startswith(("vol-", "vol_")):
            try:
                return get_volume(self._conn, volume_id_or_name)
            except ResourceNotFoundError:
                pass
        named = [v for v in self.list() if v.name == volume_id_or_name]
        if not named:
            raise VolumeError(
                f"No volume with id or name {volume_id_or_name!r}",
                suggestions=["list volumes with `flow volumes list`"],
            )
        return named[0]

    def delete(self, volume_id: str) -> None:
        """Deletes the volume and its data (VolumeError while a live task uses it)."""
        delete_volume(self._conn, volume_id)

    def mount(self, volume_id: str, task_id: str, mount_point: str | None = None) -> bool:
        """Refused: volumes attach when a task starts, not to a running one."""
        from flow.errors import ProviderCapabilityError

        where = mount_point or "/volumes/NAME"
        raise ProviderCapabilityError(
            f"volumes.mount({volume_id!r}, {task_id!r}): a volume attaches when a task starts, not to a running task",
            suggestions=[
                f"submit the task with volumes=[VolumeSpec(volume_id={volume_id!r}, mount_path={where!r})]",
            ],
        )


__all__ = ["Volume", "VolumeClient", "create_volume", "delete_volume", "get_volume", "list_volumes"]
