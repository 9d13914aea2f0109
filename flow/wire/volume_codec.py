"""Volumes on the wire: domain Volume <-> flowapi.v1.Volume (pure conversions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from flow.domain.volumes.rules import Volume
from flowapi.v1 import volume_pb2

INTERFACE_TO_PROTO: Final = {
    "block": volume_pb2.VOLUME_INTERFACE_BLOCK,
    "file": volume_pb2.VOLUME_INTERFACE_FILE,
}
INTERFACE_FROM_PROTO: Final[dict[int, str]] = {int(v): k for k, v in INTERFACE_TO_PROTO.items()}


def interface_to_proto(interface: str) -> volume_pb2.VolumeInterface.ValueType:
    return INTERFACE_TO_PROTO.get(interface, volume_pb2.VOLUME_INTERFACE_UNSPECIFIED)


def interface_from_proto(value: int) -> str:
    """UNSPECIFIED means the default, "block"; an unknown number is kept visible for validation."""
    if value == volume_pb2.VOLUME_INTERFACE_UNSPECIFIED:
        return "block"
    return INTERFACE_FROM_PROTO.get(value, f"<unknown interface {value}>")


def volume_to_proto(volume: Volume, attached: Sequence[str] = ()) -> volume_pb2.Volume:
    message = volume_pb2.Volume(
        volume_id=volume.volume_id,
        name=volume.name,
        size_gb=volume.size_gb,
        region=volume.region,
        interface=interface_to_proto(volume.interface),
        attached_task_ids=list(attached),
        provider=volume.provider,
        iops=volume.iops or 0,
    )
    message.create_time.FromNanoseconds(int(volume.created_at * 1e9))
    return message
