"""Flow: the simplest way to run code on GPUs.

    from flow import Flow, TaskConfig
    task = Flow().run("python train.py", instance_type="a100")

Public names are loaded on first use, so `import flow` (and the `flow` CLI) stays fast: gRPC is
imported only when something talks to the daemon.

Code written for the Mithril platform's SDK (flow-compute, also imported as `flow`) finds its
names here too: `flow.run(...)`, `flow.Secret`, `flow.Volume`, `flow.invoke_async`, `@app.cls`
with `flow.param`/`flow.on_enter`/`flow.on_exit`/`flow.remote`, and its exception names. Those
it has and this project does not are listed in flow.flow_compute, with the alternatives.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flow.version import __version__

_EXPORTS: dict[str, str] = {
    "Flow": "flow.client",
    "FlowApp": "flow.app",
    "invoke": "flow.invoke",
    "Task": "flow.task",
    "TaskStatus": "flow.task",
    "TaskConfig": "flow.config",
    "VolumeSpec": "flow.config",
    "MountSpec": "flow.config",
    "FlowError": "flow.errors",
    "AuthenticationError": "flow.errors",
    "ResourceNotFoundError": "flow.errors",
    "TaskNotFoundError": "flow.errors",
    "ValidationError": "flow.errors",
    "APIError": "flow.errors",
    "ValidationAPIError": "flow.errors",
    "NetworkError": "flow.errors",
    "DaemonUnavailableError": "flow.errors",
    "TimeoutError": "flow.errors",
    "ProviderError": "flow.errors",
    "ResourceNotAvailableError": "flow.errors",
    "QuotaExceededError": "flow.errors",
    "VolumeError": "flow.errors",
    "TaskExecutionError": "flow.errors",
    # The Mithril platform's SDK (flow-compute) names.
    "run": "flow.default_client",
    "invoke_async": "flow.invoke_task",
    "InvokeTask": "flow.invoke_task",
    "Secret": "flow.secret",
    "Volume": "flow.volumes",
    "WaitUntil": "flow.task",
    "on_enter": "flow.remote_class",
    "on_exit": "flow.remote_class",
    "remote": "flow.remote_class",
    "param": "flow.remote_class",
    "FlowTimeoutError": "flow.errors",
    "AuthorizationError": "flow.errors",
    "RateLimitError": "flow.errors",
    "InsufficientBidPriceError": "flow.errors",
    "ProviderCapabilityError": "flow.errors",
    "ConfigParserError": "flow.errors",
    "NameConflictError": "flow.errors",
    "RemoteExecutionError": "flow.errors",
    "InstanceNotReadyError": "flow.errors",
    "FlowOperationError": "flow.errors",
}

__all__ = [
    "APIError",
    "AuthenticationError",
    "AuthorizationError",
    "ConfigParserError",
    "DaemonUnavailableError",
    "Flow",
    "FlowApp",
    "FlowError",
    "FlowOperationError",
    "FlowTimeoutError",
    "InstanceNotReadyError",
    "InsufficientBidPriceError",
    "InvokeTask",
    "MountSpec",
    "NameConflictError",
    "NetworkError",
    "ProviderCapabilityError",
    "ProviderError",
    "QuotaExceededError",
    "RateLimitError",
    "RemoteExecutionError",
    "ResourceNotAvailableError",
    "ResourceNotFoundError",
    "Secret",
    "Task",
    "TaskConfig",
    "TaskExecutionError",
    "TaskNotFoundError",
    "TaskStatus",
    "TimeoutError",
    "ValidationAPIError",
    "ValidationError",
    "Volume",
    "VolumeError",
    "VolumeSpec",
    "WaitUntil",
    "__version__",
    "invoke",
    "invoke_async",
    "on_enter",
    "on_exit",
    "param",
    "remote",
    "run",
]

if TYPE_CHECKING:
    from flow.app import FlowApp
    from flow.client import Flow
    from flow.config import MountSpec, TaskConfig, VolumeSpec
    from flow.default_client import run
    from flow.errors import (
        APIError,
        AuthenticationError,
        AuthorizationError,
        ConfigParserError,
        DaemonUnavailableError,
        FlowError,
        FlowOperationError,
        FlowTimeoutError,
        InstanceNotReadyError,
        InsufficientBidPriceError,
        NameConflictError,
        NetworkError,
        ProviderCapabilityError,
        ProviderError,
        QuotaExceededError,
        RateLimitError,
        RemoteExecutionError,
        ResourceNotAvailableError,
        ResourceNotFoundError,
        TaskExecutionError,
        TaskNotFoundError,
        TimeoutError,  # noqa: A004 - the seed's exception name
        ValidationAPIError,
        ValidationError,
        VolumeError,
    )
    from flow.invoke import invoke
    from flow.invoke_task import InvokeTask, invoke_async
    from flow.remote_class import on_enter, on_exit, param, remote
    from flow.secret import Secret
    from flow.task import Task, TaskStatus, WaitUntil
    from flow.volumes import Volume


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        from flow.flow_compute import absent

        raise absent(name)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
