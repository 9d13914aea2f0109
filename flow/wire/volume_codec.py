"""Volumes on the wire: domain Volume <-> flowapi.v1.Volume (pure conversions, both directions),
and the VolumeService calls the SDK makes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from flow.domain.volumes.rules import Volume
from flow.wire.calls import Call, Page, ignore_reply, method_path
from flow.wire.timestamps import seconds_from_proto, seconds_to_proto
from flowapi.v1 import volume_pb2

INTERFACE_TO_PROTO: Final = {
    "block": volume_pb2.VOLUME_INTERFACE_BLOCK,
    "file": volume_pb2.VOLUME_INTERFACE_FILE,
}
INTERFACE_FROM_PROTO: Final[dict[int, str]] = {int(v): k for k, v in INTERFACE_TO_PROTO.items()}
_SERVICE: Final = volume_pb2.DESCRIPTOR.services_by_name["VolumeService"]
CREATE_VOLUME: Final = method_path(_SERVICE, "CreateVolume")
GET_VOLUME: Final = method_path(_SERVICE, "GetVolume")
LIST_VOLUMES: Final = method_path(_SERVICE, "ListVolumes")
DELETE_VOLUME: Final = method_path(_SERVICE, "DeleteVolume")

AttachedVolume = tuple[Volume, tuple[str, ...]]  # a volume and the ids of the live tasks it is attached to


def interface_to_proto(interface: str) -> volume_pb2.VolumeInterface.ValueType:
    return INTERFACE_TO_PROTO.get(interface, volume_pb2.VOLUME_INTERFACE_UNSPECIFIED)


def interface_from_proto(value: int) -> str:
    """UNSPECIFIED means the default, "block"; an unknown number is kept visible for validation."""
    if value == volume_pb2.VOLUME_INTERFACE_UNSPECIFIED:
        return "block"
    return INTERFACE_FROM_PROTO.get(value, f"<unknown interface {value}>")


def volume_to_proto(volume: Volume, attached: Sequence[str] = ()) -> volume_pb2.Volume:
    return volume_pb2.Volume(
        volume_id=volume.volume_id,
        name=volume.name,
        size_gb=volume.size_gb,
        region=volume.region,
        interface=interface_to_proto(volume.interface),
        create_time=seconds_to_proto(volume.created_at),
        attached_task_ids=list(attached),
        provider=volume.provider,
        iops=volume.iops or 0,
    )


def volume_from_proto(message: volume_pb2.Volume) -> AttachedVolume:
    volume = Volume(
        volume_id=message.volume_id,
        name=message.name,
        size_gb=message.size_gb,
        interface=interface_from_proto(message.interface),
        region=message.region,
        provider=message.provider,
        created_at=seconds_from_proto(message.create_time),
        iops=message.iops or None,
    )
    return volume, tuple(message.attached_task_ids)


def create_volume_call(
    name: str, size_gb: int, interface: str, iops: int | None, request_id: str, provider: str
) -> Call[AttachedVolume]:
    request = volume_pb2.CreateVolumeRequest(
        name=name,
        size_gb=size_gb,
        interface=interface_to_proto(interface),
        iops=iops or 0,
        request_id=request_id,
        provider=provider,
    )
    return Call(
        CREATE_VOLUME,
        request.SerializeToString(),
        lambda raw: volume_from_proto(volume_pb2.CreateVolumeResponse.FromString(raw).volume),
    )


def get_volume_call(volume_id: str) -> Call[AttachedVolume]:
    return Call(
        GET_VOLUME,
        volume_pb2.GetVolumeRequest(volume_id=volume_id).SerializeToString(),
        lambda raw: volume_from_proto(volume_pb2.GetVolumeResponse.FromString(raw).volume),
    )


def _read_page(raw: bytes) -> Page[AttachedVolume]:
    reply = volume_pb2.ListVolumesResponse.FromString(raw)
    return Page(tuple(volume_from_proto(v) for v in reply.volumes), reply.next_page_token)


def list_volumes_call(page_size: int, page_token: str, provider: str = "") -> Call[Page[AttachedVolume]]:
    request = volume_pb2.ListVolumesRequest(page_size=page_size, page_token=page_token, provider=provider)
    return Call(LIST_VOLUMES, request.SerializeToString(), _read_page)


def delete_volume_call(volume_id: str) -> Call[None]:
    return Call(DELETE_VOLUME, volume_pb2.DeleteVolumeRequest(volume_id=volume_id).SerializeToString(), ignore_reply)


__all__ = [
    "AttachedVolume",
    "create_volume_call",
    "delete_volume_call",
    "get_volume_call",
    "interface_from_proto",
    "interface_to_proto",
    "list_volumes_call",
    "volume_from_proto",
    "volume_to_proto",
]
