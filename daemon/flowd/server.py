"""Assembles flowd: store, providers, engine, servicers, health and reflection on one socket."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent import futures

import grpc
from attrs import define
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flow.domain.task.lifecycle import TaskEvent
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
from flowd.engine import TaskEngine
from flowd.provider_registry import build_providers
from flowd.provider_service import add_provider_service
from flowd.providers.base import Runtime
from flowd.providers.local import LocalProvider
from flowd.request_decoding import RequestDecodingInterceptor
from flowd.servicers import CodeServicer, DaemonServicer, InstanceServicer, TaskServicer
from flowd.store import Store
from flowd.tcp_access import TokenInterceptor, credentials
from flowd.tcp_settings import TcpSettings, load_or_create_token
from flowd.volume_service import VolumeServicer
from flowd.volumes import VolumeManager

# Streams that follow logs and server-side waits each hold a worker while they last.
MAX_WORKERS = 256
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
        stopping = [server.stop(grace=1.0) for server in self.servers]
        for done in stopping:
            done.wait(timeout=5)  # a call that never ends must not keep the daemon alive
        self.store.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def _serve_all(
    server: grpc.Server,
    engine: TaskEngine,
    blobs: BlobStore,
    health_servicer: health.HealthServicer,
    daemon_servicer: DaemonServicer,
) -> None:
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(engine), server)
    instance_service_pb2_grpc.add_InstanceServiceServicer_to_server(InstanceServicer(engine), server)
    code_service_pb2_grpc.add_CodeServiceServicer_to_server(CodeServicer(blobs), server)
    if engine.volumes is not None:
        volume_pb2_grpc.add_VolumeServiceServicer_to_server(
            VolumeServicer(engine.volumes, engine.default_provider, lambda: engine.providers), server
        )
    daemon_service_pb2_grpc.add_DaemonServiceServicer_to_server(daemon_servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)


def build_daemon(home: FlowHome, shutdown: Callable[[], None], tcp: TcpSettings | None = None) -> Daemon:
    """The daemon for `home`: always its Unix socket; a token-guarded TCP listener when asked."""
    store = Store(home.database)
    engine_ref: list[TaskEngine] = []

    def report(task_id: str, event: TaskEvent, runtime: Runtime | None = None) -> None:
        engine_ref[0].report(task_id, event, runtime)

    blobs = BlobStore(home.root / "blobs")
    blobs.live_snapshots = lambda: [t.record.code_digest for t in store.live() if t.record.code_digest]
    providers, default = build_providers(home, report, blobs, os.environ)
    volumes = VolumeManager(store, home.root / "volumes")
    for provider in providers.values():
        if isinstance(provider, LocalProvider):
            provider.volumes = volumes
    engine = TaskEngine(store, providers, default_provider=default, blobs=blobs, volumes=volumes)
    volumes.live_specs = engine.live_volume_specs
    engine_ref.append(engine)
    engine.recover()

    addresses = [home.address]
    if tcp is not None:
        addresses.append(f"{'tls' if tcp.tls_cert else 'tcp'}://{tcp.address}")
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    daemon_servicer = DaemonServicer(engine, str(home.root), addresses, shutdown, blobs=blobs)
    local = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="rpc"),
        interceptors=[RequestDecodingInterceptor()],  # unparseable requests: INVALID_ARGUMENT, named
        options=[("grpc.so_reuseport", 0)],
    )
    _serve_all(local, engine, blobs, health_servicer, daemon_servicer)
    add_provider_service(local, engine, home, report, blobs)
    local.add_insecure_port(home.address)
    servers = [local]
    if tcp is not None:
        remote = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS // 4, thread_name_prefix="tcp"),
            interceptors=[TokenInterceptor(load_or_create_token(home.root, os.environ)), RequestDecodingInterceptor()],
            options=[("grpc.so_reuseport", 0)],
        )
        _serve_all(remote, engine, blobs, health_servicer, daemon_servicer)
        add_provider_service(remote, engine, home, report, blobs)
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
        health=health_servicer,
        addresses=addresses,
        socket_path=str(home.socket),
    )
