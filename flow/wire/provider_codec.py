"""Provider settings at the wire: ConfigureProvider (what `Flow(provider=MithrilProvider(...))` sends)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from flow.wire.calls import Call, method_path
from flow.wire.daemon_codec import ProviderInfo, provider_from_proto
from flowapi.v1 import provider_pb2

_SERVICE: Final = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"]
CONFIGURE_PROVIDER: Final = method_path(_SERVICE, "ConfigureProvider")


def configure_provider_call(name: str, kind: str, settings: Mapping[str, str]) -> Call[ProviderInfo]:
    """`name` empty: flowd answers the provider configured with these settings, or adds one."""
    request = provider_pb2.ConfigureProviderRequest(name=name, kind=kind, settings=dict(settings))
    return Call(
        CONFIGURE_PROVIDER,
        request.SerializeToString(),
        lambda raw: provider_from_proto(provider_pb2.ConfigureProviderResponse.FromString(raw).provider),
    )


__all__ = ["configure_provider_call"]
