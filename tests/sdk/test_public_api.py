"""The public surface users code against: names, the exception tree, and a fast `import flow`."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import attrs

import flow
from flow import errors
from flow.app import FlowApp, RemoteFunction
from flow.domain.task import config as core

DESIGN = [
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
# The names of the Mithril platform's SDK (flow-compute) provided too (README, "Coming from
# flow-compute"; the ones not provided are in flow.flow_compute.ABSENT).
FLOW_COMPUTE = [
    "AuthorizationError",
    "ConfigParserError",
    "FlowOperationError",
    "FlowTimeoutError",
    "InstanceNotReadyError",
    "InsufficientBidPriceError",
    "InvokeTask",
    "NameConflictError",
    "ProviderCapabilityError",
    "RateLimitError",
    "RemoteExecutionError",
    "Secret",
    "Volume",
    "WaitUntil",
    "invoke_async",
    "on_enter",
    "on_exit",
    "param",
    "remote",
    "run",
]
PUBLIC = sorted([*DESIGN, *FLOW_COMPUTE])


def test_public_names_are_pinned() -> None:
    assert sorted(flow.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(flow, name) is not None


def test_the_seed_exception_tree() -> None:
    parent = {
        "AuthenticationError": "FlowError",
        "ResourceNotFoundError": "FlowError",
        "TaskNotFoundError": "ResourceNotFoundError",
        "ValidationError": "FlowError",
        "APIError": "FlowError",
        "ValidationAPIError": "APIError",
        "NetworkError": "FlowError",
        "TimeoutError": "FlowError",
        "ProviderError": "FlowError",
        "ResourceNotAvailableError": "FlowError",
        "QuotaExceededError": "FlowError",
        "VolumeError": "FlowError",
        "TaskExecutionError": "FlowError",
    }
    for child, base in parent.items():
        cls = getattr(errors, child)
        assert cls.__mro__[1] is getattr(errors, base), child
    assert issubclass(errors.TimeoutError, TimeoutError)  # the builtin too
    assert issubclass(errors.NetworkError, ConnectionError)
    assert issubclass(errors.ValidationError, ValueError)  # as in flow-compute
    error = errors.ResourceNotAvailableError("no a100", suggestions=["try h100"], error_code="RESOURCE_NOT_AVAILABLE")
    assert (error.message, error.suggestions, error.error_code) == ("no a100", ["try h100"], "RESOURCE_NOT_AVAILABLE")


def test_flow_computes_exception_names_sit_under_the_seed_classes() -> None:
    assert errors.FlowTimeoutError is errors.TimeoutError
    parent = {
        "AuthorizationError": errors.AuthenticationError,
        "RateLimitError": errors.APIError,
        "InsufficientBidPriceError": errors.ResourceNotAvailableError,
        "ConfigParserError": errors.ValidationError,
        "NameConflictError": errors.FlowError,
        "InstanceNotReadyError": errors.FlowError,
        "FlowOperationError": errors.FlowError,
        "RemoteExecutionError": errors.FlowError,
        "ProviderCapabilityError": errors.FlowError,
    }
    for name, base in parent.items():
        assert issubclass(getattr(flow, name), base), name
    assert issubclass(errors.InsufficientBidPriceError, errors.ValidationAPIError)
    assert issubclass(errors.ProviderCapabilityError, NotImplementedError)


# Every call the design document shows, as (callable, args, kwargs); `None` stands in for self.
DESIGN_CALLS: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
    (flow.Flow, (), {}),
    (flow.Flow, (), {"provider": "local"}),
    (flow.Flow.run, (None, "python train.py"), {"instance_type": "a100"}),
    (flow.Flow.run, (None, "python train.py"), {"upload_code": False}),
    (flow.Flow.run, (None, flow.TaskConfig(command="x")), {}),
    (flow.Flow.status, (None, "t-1"), {}),
    (flow.Flow.cancel, (None, "t-1"), {}),
    (flow.Flow.logs, (None, "t-1"), {}),
    (flow.Flow.find_instances, (None, {"gpu_memory_gb": 80, "max_price": 10.0, "region": "us-central1-b"}), {}),
    (flow.Flow.create_volume, (None,), {"size_gb": 100, "name": "checkpoints"}),
    (flow.Flow.list_volumes, (None,), {}),
    (flow.Flow.delete_volume, (None, "vol-abc123"), {}),
    (flow.Task.wait, (None,), {"timeout": 3600}),
    (flow.Task.logs, (None,), {"follow": True}),
    (flow.Task.ssh, (None,), {}),
    (flow.Task.ssh, (None, "nvidia-smi"), {}),
    (flow.Task.cancel, (None,), {}),
    (FlowApp.function, (None,), {"gpu": "a100", "memory": 32768}),
    (RemoteFunction.remote, (None, "s3://bucket/data"), {"epochs": 200}),
    (RemoteFunction.spawn, (None, "s3://bucket/data"), {}),
    (flow.invoke, ("train.py", "train_model"), {"args": ["s3://b/d"], "kwargs": {"epochs": 200}, "gpu": "a100"}),
]


def test_the_design_documents_calls_keep_their_signatures() -> None:
    """The flow-compute layer only adds keyword-only parameters: every call the design document
    shows binds as it did, and the config values take the document's fields, in its order."""
    for fn, args, kwargs in DESIGN_CALLS:
        signature = inspect.signature(fn.__init__ if isinstance(fn, type) else fn)
        bound = signature.bind(*((None, *args) if isinstance(fn, type) else args), **kwargs)
        assert bound is not None, fn
        for parameter in signature.parameters.values():
            if parameter.name not in bound.arguments and parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
                assert parameter.default is not parameter.empty, (fn, parameter)
    fields = ["name", "size_gb", "mount_path", "interface", "iops", "volume_id"]
    assert [f.name for f in attrs.fields(core.VolumeSpec)] == fields
    volume = inspect.signature(flow.VolumeSpec.__init__).parameters.values()
    assert [p.name for p in volume if p.kind is p.POSITIONAL_OR_KEYWORD] == ["self", *fields]
    assert [p.name for p in volume if p.kind is p.KEYWORD_ONLY] == ["create_if_missing", "throughput_mb_s"]
    assert flow.VolumeSpec("datasets", 500, "/data") == flow.VolumeSpec(
        name="datasets", size_gb=500, mount_path="/data"
    )
    assert [f.name for f in attrs.fields(flow.MountSpec)][:2] == ["source", "target"]
    config = {
        "name": "training-job",
        "instance_type": "8xh100",
        "command": ["python", "train.py", "--distributed"],
        "image": "pytorch/pytorch:2.1.0-cuda12.1-cudnn8",
        "volumes": [flow.VolumeSpec(size_gb=500, mount_path="/data", name="datasets")],
        "env": {"BATCH_SIZE": "256"},
        "max_price_per_hour": 50.0,
        "max_run_time_hours": 24.0,
        "region": "us-central1-b",
        "num_instances": 1,
        "ssh_keys": ["my-key"],
        "upload_code": True,
    }
    assert {f.name for f in attrs.fields(flow.TaskConfig)} >= {*config, "min_gpu_memory_gb", "shell", "script"}
    assert flow.TaskConfig(**config).instance_type == "8xh100"
    assert flow.Flow.status.__annotations__["return"] == "TaskStatus"


def test_import_flow_loads_no_grpc() -> None:
    # Building and validating configs must not pay for gRPC (about 0.2 s to import).
    probe = "import sys, flow; flow.TaskConfig(command='x'); print('grpc' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False"], done.stderr


def test_task_status_prints_as_its_name() -> None:
    assert str(flow.TaskStatus.RUNNING) == "RUNNING"
    assert f"{flow.TaskStatus.COMPLETED}" == "COMPLETED"
    assert [s.value for s in flow.TaskStatus] == [
        "PENDING",
        "PROVISIONING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "PREEMPTED",
    ]
