"""Provider settings at the wire: ConfigureProvider (what `Flow(provider=MithrilProvider(...))` sends)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from flow.wire.calls import Call, ignore_reply, method_path
from flowapi.v1 import provider_pb2

_SERVICE: Final = provider_pb2.DESCRIPTOR.services_by_name["ProviderService"]
CONFIGURE_PROVIDER: Final = method_path(_SERVICE, "ConfigureProvider")


def configure_provider_call(name: str, kind: str, settings: Mapping[str, str]) -> Call[None]:
    request = provider_pb2.ConfigureProviderRequest(name=name, kind=kind, settings=dict(settings))
    return Call(CONFIGURE_PROVIDER, request.SerializeToString(), ignore_reply)


__all__ = ["configure_provider_call"]
