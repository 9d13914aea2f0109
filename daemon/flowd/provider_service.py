"""ProviderService: providers a client configures at run time (`Flow(provider=MithrilProvider(...))`).

Decodes the request, asks the provider registry, encodes the answer. The settings' secret (the
API key) is never logged or echoed: the answer carries only the provider's name, kind and health.
"""

from __future__ import annotations

import logging

import grpc
from returns.result import Failure

from flowapi.v1 import provider_pb2, provider_pb2_grpc
from flowd.provider_registry import ProviderRegistry
from flowd.servicers import fail, guarded, provider_to_proto

log = logging.getLogger(__name__)


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(self, providers: ProviderRegistry) -> None:
        self._providers = providers

    @guarded(provider_pb2.ConfigureProviderResponse)
    def ConfigureProvider(  # noqa: N802 - the contract names it
        self, request: provider_pb2.ConfigureProviderRequest, context: grpc.ServicerContext
    ) -> provider_pb2.ConfigureProviderResponse:
        done = self._providers.configure(request.name, request.kind, dict(request.settings))
        if isinstance(done, Failure):
            fail(context, done.failure())
            return provider_pb2.ConfigureProviderResponse()
        provider = done.unwrap()
        log.info("provider %s (%s) configured by a client", provider.name, provider.kind)
        return provider_pb2.ConfigureProviderResponse(
            provider=provider_to_proto(provider, provider.name == self._providers.default)
        )


def add_provider_service(server: grpc.Server, providers: ProviderRegistry) -> None:
    provider_pb2_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(providers), server)
