"""VolumeService: decode the request, ask the VolumeManager (flowd's own volumes) or the providers
that keep their own (`capabilities.volumes`: Mithril's /v2/volumes), encode the answer.

Which one: CreateVolume by `provider` (else the daemon's default); Get and Delete ask flowd's own
volumes first, then each provider that keeps its own (an id is never told apart by its spelling);
ListVolumes lists the local volumes page by page and then, on the last page, every volume of each
provider that keeps its own (only the one the request names, when it names one: a provider that
cannot be asked then answers its error; when it names none, such a provider is left out, so a
client's wrong key never breaks another client's listing)."""
# ruff: noqa: N802 - gRPC method names come from the contract

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from returns.result import Failure, Result

from flow.domain.daemon_config import check_provider_name
from flow.domain.errors import DomainError
from flow.domain.volumes.rules import Volume, check_volume_id, volume_not_found
from flow.wire.volume_codec import interface_from_proto, volume_to_proto
from flowapi.v1 import volume_pb2, volume_pb2_grpc
from flowd.providers.base import OwnVolumes, Provider
from flowd.servicers import _unwrap, guarded
from flowd.volumes import VolumeManager

log = logging.getLogger(__name__)


class VolumeServicer(volume_pb2_grpc.VolumeServiceServicer):
    def __init__(
        self,
        volumes: VolumeManager,
        default_provider: str,
        providers: Callable[[], Mapping[str, Provider[Any]]] = dict,
    ) -> None:
        self._volumes = volumes
        self._default_provider = default_provider
        self._providers = providers

    def _own(self, name: str | None = None) -> list[OwnVolumes]:
        """The providers that keep their own volumes (only `name`, when given)."""
        found: list[OwnVolumes] = []
        for key, provider in self._providers().items():
            own = provider.capabilities.volumes
            if own is not None and name in (None, key):
                found.append(own)
        return found

    def _find(self, volume_id: str) -> Result[tuple[OwnVolumes, tuple[Volume, tuple[str, ...]]], DomainError]:
        error: DomainError = volume_not_found(volume_id)
        for provider in self._own():
            found = provider.get_volume(volume_id)
            if not isinstance(found, Failure):
                return found.map(lambda pair, p=provider: (p, pair))  # type: ignore[misc]
            if found.failure().reason is not volume_not_found(volume_id).reason:
                error = found.failure()
        return Failure(error)

    def _attached(self, volume_id: str) -> tuple[str, ...]:
        return self._volumes.holders().get(volume_id, ())

    @guarded(volume_pb2.CreateVolumeResponse)
    def CreateVolume(
        self, request: volume_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> volume_pb2.CreateVolumeResponse:
        if request.provider and _unwrap(check_provider_name(request.provider), context) is None:
            return volume_pb2.CreateVolumeResponse()
        provider = request.provider or self._default_provider
        own = self._own(provider)
        if own:
            interface = interface_from_proto(request.interface)
            created = _unwrap(
                own[0].create_volume(request.name, int(request.size_gb), interface, int(request.iops) or None),
                context,
            )
            if created is None:
                return volume_pb2.CreateVolumeResponse()
            return volume_pb2.CreateVolumeResponse(volume=volume_to_proto(created))
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
        if _unwrap(check_volume_id(request.volume_id), context) is None:
            return volume_pb2.GetVolumeResponse()
        local = self._volumes.get(request.volume_id)
        if isinstance(local, Failure) and self._own():  # not flowd's: a provider's?
            pair = _unwrap(self._find(request.volume_id), context)
            if pair is None:
                return volume_pb2.GetVolumeResponse()
            volume, holders = pair[1]
            return volume_pb2.GetVolumeResponse(volume=volume_to_proto(volume, holders))
        found = _unwrap(local, context)
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
        out = [volume_to_proto(v, holders.get(v.volume_id, ())) for v in volumes]
        if not token:  # the last local page: then the platforms' volumes
            for provider in self._own(request.provider or None):
                listed = provider.list_volumes()
                if isinstance(listed, Failure) and not request.provider:  # not this client's: left out
                    log.warning("listing volumes without a provider that cannot be asked: %s", listed.failure())
                    continue
                found = _unwrap(listed, context)
                if found is None:
                    return volume_pb2.ListVolumesResponse()
                out += [volume_to_proto(v, held) for v, held in found]
        return volume_pb2.ListVolumesResponse(volumes=out, next_page_token=token)

    @guarded(volume_pb2.DeleteVolumeResponse)
    def DeleteVolume(
        self, request: volume_pb2.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> volume_pb2.DeleteVolumeResponse:
        if _unwrap(check_volume_id(request.volume_id), context) is None:
            return volume_pb2.DeleteVolumeResponse()
        if isinstance(self._volumes.get(request.volume_id), Failure) and self._own():  # not flowd's
            pair = _unwrap(self._find(request.volume_id), context)
            if pair is None:
                return volume_pb2.DeleteVolumeResponse()
            gone = _unwrap(pair[0].delete_volume(request.volume_id), context)
            if gone is None:
                return volume_pb2.DeleteVolumeResponse()
            return volume_pb2.DeleteVolumeResponse(volume_id=gone.volume_id)
        gone = _unwrap(self._volumes.delete(request.volume_id), context)
        if gone is None:
            return volume_pb2.DeleteVolumeResponse()
        return volume_pb2.DeleteVolumeResponse(volume_id=gone.volume_id)
