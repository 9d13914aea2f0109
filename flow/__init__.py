"""Flow: the simplest way to run code on GPUs.

    from flow import Flow, TaskConfig
    task = Flow().run("python train.py", instance_type="a100")

Public names are loaded on first use, so `import flow` (and the `flow` CLI) stays fast: gRPC is
imported only when something talks to the daemon.
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
}

__all__ = [
    "APIError",
    "AuthenticationError",
    "DaemonUnavailableError",
    "Flow",
    "FlowApp",
    "FlowError",
    "MountSpec",
    "NetworkError",
    "ProviderError",
    "QuotaExceededError",
    "ResourceNotAvailableError",
    "ResourceNotFoundError",
    "Task",
    "TaskConfig",
    "TaskExecutionError",
    "TaskNotFoundError",
    "TaskStatus",
    "TimeoutError",
    "ValidationAPIError",
    "ValidationError",
    "VolumeError",
    "VolumeSpec",
    "__version__",
    "invoke",
]

if TYPE_CHECKING:
    from flow.app import FlowApp
    from flow.client import Flow
    from flow.config import MountSpec, TaskConfig, VolumeSpec
    from flow.errors import (
        APIError,
        AuthenticationError,
        DaemonUnavailableError,
        FlowError,
        NetworkError,
        ProviderError,
        QuotaExceededError,
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
    from flow.task import Task, TaskStatus


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
