"""The public surface users code against: names, the exception tree, and a fast `import flow`."""

from __future__ import annotations

import subprocess
import sys

import flow
from flow import errors

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
