"""Assembles flowd: store, providers, engine, servicers, health and reflection on one socket."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent import futures

import grpc
from attrs import define, frozen
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flow.home import FlowHome
from flow.version import __version__
from flowapi.v1 import (
    code_service_pb2,
    code_service_pb2_grpc,
    daemon_service_pb2,
    daemon_service_pb2_grpc,
    instance_service_pb2,
    instance_service_pb2_grpc,
    provider_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    volume_pb2,
    volume_pb2_grpc,
)
from flowd.blobs import BlobStore
from flowd.call_budget import SHORT_CALLS, CallBudget, long_call_limit
from flowd.engine import TaskEngine
from flowd.lifecycle import TaskLifecycle
from flowd.log_stream import LogStreams, LogWatch
from flowd.provider_registry import build_providers
from flowd.provider_service import add_provider_service
from flowd.request_decoding import RequestDecodingInterceptor
from flowd.servicers import CodeServicer, DaemonServicer, InstanceServicer, TaskServicer
from flowd.store import Store
from flowd.tcp_access import TokenInterceptor, credentials
from flowd.tcp_settings import TcpSettings, load_or_create_token
from flowd.volume_service import VolumeServicer
from flowd.volumes import VolumeManager
from flowd.wakeups import Wakeups

SERVICE_NAMES = (
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    daemon_service_pb2.DESCRIPTOR.services_by_name["DaemonService"].full_name,
    instance_service_pb2.DESCRIPTOR.services_by_name["InstanceService"].full_name,
    code_service_pb2.DESCRIPTOR.services_by_name["CodeService"].full_name,
    volume_pb2.DESCRIPTOR.services_by_name["VolumeService"].full_name,
    provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
)


@define
class Daemon:
    servers: list[grpc.Server]
    engine: TaskEngine
    store: Store
    health: health.HealthServicer
    addresses: list[str]
    socket_path: str
    watch: LogWatch
    version: str = __version__

    def start(self) -> None:
        for server in self.servers:
            server.start()
        os.chmod(self.socket_path, 0o600)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in SERVICE_NAMES:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self) -> None:
        self.health.enter_graceful_shutdown()
        self.engine.close()
        self.watch.close()
        stopping = [server.stop(grace=1.0) for server in self.servers]
        for done in stopping:
            done.wait(timeout=5)  # a call that never ends must not keep the daemon alive
        self.store.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


@frozen
class _Services:
    """What every listener serves (the same objects on the socket and on TCP)."""

    engine: TaskEngine
    blobs: BlobStore
    health: health.HealthServicer
    daemon: DaemonServicer


def _server(
    services: _Services, budget: CallBudget, interceptors: list[grpc.ServerInterceptor], name: str
) -> grpc.Server:
    """A gRPC server whose pool has room for every long call the budget admits, plus the short
    ones (flowd.call_budget)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=budget.limit + SHORT_CALLS, thread_name_prefix=name),
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 0)],
    )
    engine = services.engine
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(engine, budget), server)
    instance_service_pb2_grpc.add_InstanceServiceServicer_to_server(InstanceServicer(engine), server)
    code_service_pb2_grpc.add_CodeServiceServicer_to_server(CodeServicer(services.blobs), server)
    if engine.volumes is not None:
        servicer = VolumeServicer(engine.volumes, engine.default_provider, engine.providers.all)
        volume_pb2_grpc.add_VolumeServiceServicer_to_server(servicer, server)
    daemon_service_pb2_grpc.add_DaemonServiceServicer_to_server(services.daemon, server)
    health_pb2_grpc.add_HealthServicer_to_server(services.health, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    add_provider_service(server, engine.providers)
    return server


def build_daemon(home: FlowHome, shutdown: Callable[[], None], tcp: TcpSettings | None = None) -> Daemon:
    """The daemon for `home`: always its Unix socket; a token-guarded TCP listener when asked.
    Built in dependency order, each part complete when made: store, the lifecycle (the one writer
    of task state, whose `report` providers are given), volumes, providers, engine, servicers."""
    store = Store(home.database)
    wakeups = Wakeups()
    lifecycle = TaskLifecycle(store, wakeups)
    volumes = VolumeManager(store, home.root / "volumes", live_specs=lifecycle.live_volume_specs)
    blobs = BlobStore(
        home.root / "blobs",
        live_snapshots=lambda: [t.record.code_digest for t in store.live() if t.record.code_digest],
    )
    providers = build_providers(home, lifecycle.report, blobs, os.environ, volumes)
    watch = LogWatch(wakeups)
    streams = LogStreams(wakeups, watch, lifecycle.is_live)
    engine = TaskEngine(store, lifecycle, providers, blobs, streams, wakeups, volumes=volumes)
    engine.recover()

    addresses = [home.address]
    if tcp is not None:
        addresses.append(f"{'tls' if tcp.tls_cert else 'tcp'}://{tcp.address}")
    services = _Services(
        engine=engine,
        blobs=blobs,
        health=health.HealthServicer(experimental_non_blocking=True),
        daemon=DaemonServicer(engine, str(home.root), addresses, shutdown, blobs=blobs),
    )
    # Unparseable requests: INVALID_ARGUMENT, named (flowd.request_decoding).
    long_calls = long_call_limit(os.environ)
    local = _server(services, CallBudget(long_calls), [RequestDecodingInterceptor()], "rpc")
    local.add_insecure_port(home.address)
    servers = [local]
    if tcp is not None:
        token = TokenInterceptor(load_or_create_token(home.root, os.environ))
        remote = _server(services, CallBudget(max(1, long_calls // 4)), [token, RequestDecodingInterceptor()], "tcp")
        creds = credentials(tcp)
        if creds is None:
            remote.add_insecure_port(tcp.address)
        else:
            remote.add_secure_port(tcp.address, creds)
        servers.append(remote)
    return Daemon(
        servers=servers,
        engine=engine,
        store=store,
        health=services.health,
        addresses=addresses,
        socket_path=str(home.socket),
        watch=watch,
    )
