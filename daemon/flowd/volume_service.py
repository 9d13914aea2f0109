"""VolumeService: decode the request, ask the VolumeManager, encode the answer."""
# ruff: noqa: N802 - gRPC method names come from the contract

from __future__ import annotations

import grpc

from flow.wire.volume_codec import interface_from_proto, volume_to_proto
from flowapi.v1 import volume_pb2, volume_pb2_grpc
from flowd.servicers import _unwrap, guarded
from flowd.volumes import VolumeManager


class VolumeServicer(volume_pb2_grpc.VolumeServiceServicer):
    def __init__(self, volumes: VolumeManager, default_provider: str) -> None:
        self._volumes = volumes
        self._default_provider = default_provider

    def _attached(self, volume_id: str) -> tuple[str, ...]:
        return self._volumes.holders().get(volume_id, ())

    @guarded(volume_pb2.CreateVolumeResponse)
    def CreateVolume(
        self, request: volume_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> volume_pb2.CreateVolumeResponse:
        provider = request.provider or self._default_provider
        made = _unwrap(
            self._volumes.create(
                request.name,
                int(request.size_gb),
                interface_from_proto(request.interface),
                int(request.iops) or None,
                request.request_id,
                provider,
            ),
            context,
        )
        if made is None:
            return volume_pb2.CreateVolumeResponse()
        return volume_pb2.CreateVolumeResponse(volume=volume_to_proto(made, self._attached(made.volume_id)))

    @guarded(volume_pb2.GetVolumeResponse)
    def GetVolume(
        self, request: volume_pb2.GetVolumeRequest, context: grpc.ServicerContext
    ) -> volume_pb2.GetVolumeResponse:
        found = _unwrap(self._volumes.get(request.volume_id), context)
        if found is None:
            return volume_pb2.GetVolumeResponse()
        return volume_pb2.GetVolumeResponse(volume=volume_to_proto(found, self._attached(found.volume_id)))

    @guarded(volume_pb2.ListVolumesResponse)
    def ListVolumes(
        self, request: volume_pb2.ListVolumesRequest, context: grpc.ServicerContext
    ) -> volume_pb2.ListVolumesResponse:
        page = _unwrap(self._volumes.page(request.page_size, request.page_token), context)
        if page is None:
            return volume_pb2.ListVolumesResponse()
        volumes, token = page
        holders = self._volumes.holders()
        return volume_pb2.ListVolumesResponse(
            volumes=[volume_to_proto(v, holders.get(v.volume_id, ())) for v in volumes], next_page_token=token
        )

    @guarded(volume_pb2.DeleteVolumeResponse)
    def DeleteVolume(
        self, request: volume_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> volume_pb2.DeleteVolumeResponse:
        gone = _unwrap(self._volumes.delete(request.volume_id), context)
        if gone is None:
            return volume_pb2.DeleteVolumeResponse()
        return volume_pb2.DeleteVolumeResponse(volume_id=gone.volume_id)
