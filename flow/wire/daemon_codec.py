"""The daemon at the wire: GetDaemonInfo and ListProviders -> DaemonInfo, and ShutdownDaemon."""

from __future__ import annotations

from typing import Final, NamedTuple

from flow.wire.calls import Call, ignore_reply, method_path
from flow.wire.timestamps import seconds_from_proto
from flowapi.v1 import daemon_service_pb2

PROVIDER_NAME_PREFIX: Final = "providers/"
_SERVICE: Final = daemon_service_pb2.DESCRIPTOR.services_by_name["DaemonService"]
GET_DAEMON_INFO: Final = method_path(_SERVICE, "GetDaemonInfo")
LIST_PROVIDERS: Final = method_path(_SERVICE, "ListProviders")
SHUTDOWN_DAEMON: Final = method_path(_SERVICE, "ShutdownDaemon")


class ProviderInfo(NamedTuple):
    """A provider the daemon runs tasks on."""

    name: str
    kind: str  # local, slurm, mithril, ...
    default: bool
    problem: str = ""  # why it cannot be used now, with the fix ("" when nothing is known to be wrong)


class DaemonInfo(NamedTuple):
    """What a running flowd says about itself. (A NamedTuple: every CLI command may build one.)"""

    version: str
    api_version: str
    pid: int
    flow_home: str
    addresses: tuple[str, ...]
    default_provider: str
    started_at: float  # seconds since the epoch
    providers: tuple[ProviderInfo, ...] = ()  # from ListProviders: empty until asked for
    blob_count: int = 0  # uploaded code files and manifests the daemon's blob store holds
    blob_store_bytes: int = 0

    def kind_of(self, provider: str) -> str:
        """The kind of the named provider ("" when the daemon has none of that name)."""
        return next((p.kind for p in self.providers if p.name == provider), "")


def daemon_info_from_proto(message: daemon_service_pb2.GetDaemonInfoResponse) -> DaemonInfo:
    return DaemonInfo(
        version=message.version,
        api_version=message.api_version,
        pid=message.pid,
        flow_home=message.flow_home,
        addresses=tuple(message.addresses),
        default_provider=message.default_provider,
        started_at=seconds_from_proto(message.start_time),
        blob_count=message.blob_count,
        blob_store_bytes=message.blob_store_bytes,
    )


def provider_from_proto(message: daemon_service_pb2.Provider) -> ProviderInfo:
    return ProviderInfo(
        name=message.name.removeprefix(PROVIDER_NAME_PREFIX),
        kind=message.kind,
        default=message.is_default,
        problem=message.problem,
    )


def daemon_info_call() -> Call[DaemonInfo]:
    return Call(
        GET_DAEMON_INFO,
        daemon_service_pb2.GetDaemonInfoRequest().SerializeToString(),
        lambda raw: daemon_info_from_proto(daemon_service_pb2.GetDaemonInfoResponse.FromString(raw)),
    )


def list_providers_call() -> Call[tuple[ProviderInfo, ...]]:
    return Call(
        LIST_PROVIDERS,
        daemon_service_pb2.ListProvidersRequest().SerializeToString(),
        lambda raw: tuple(
            provider_from_proto(p) for p in daemon_service_pb2.ListProvidersResponse.FromString(raw).providers
        ),
    )


def shutdown_daemon_call() -> Call[None]:
    return Call(SHUTDOWN_DAEMON, daemon_service_pb2.ShutdownDaemonRequest().SerializeToString(), ignore_reply)


__all__ = [
    "DaemonInfo",
    "ProviderInfo",
    "daemon_info_call",
    "daemon_info_from_proto",
    "list_providers_call",
    "provider_from_proto",
    "shutdown_daemon_call",
]
