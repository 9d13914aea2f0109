"""The one error table: every reason maps to a status code and the seed's exception, and a
google.rpc.Status made by flowd turns back into the same exception with every detail."""

from __future__ import annotations

import builtins
import inspect

import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

import flow.errors
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, not_found, validation_error, violation
from flow.wire.error_table import (
    ERROR_DOMAIN,
    ERROR_TABLE,
    domain_error_to_status,
    exception_from_domain_error,
    exception_from_status,
    status_code_of,
)
from flowapi.v1 import error_reason_pb2

# The contract: what each reason means to a gRPC client, and to a Python user.
EXPECTED = {
    ErrorReason.VALIDATION_FAILED: (code_pb2.INVALID_ARGUMENT, flow.errors.ValidationError),
    ErrorReason.TASK_NOT_FOUND: (code_pb2.NOT_FOUND, flow.errors.TaskNotFoundError),
    ErrorReason.RESOURCE_NOT_FOUND: (code_pb2.NOT_FOUND, flow.errors.ResourceNotFoundError),
    ErrorReason.RESOURCE_NOT_AVAILABLE: (code_pb2.FAILED_PRECONDITION, flow.errors.ResourceNotAvailableError),
    ErrorReason.QUOTA_EXCEEDED: (code_pb2.RESOURCE_EXHAUSTED, flow.errors.QuotaExceededError),
    ErrorReason.AUTHENTICATION_FAILED: (code_pb2.UNAUTHENTICATED, flow.errors.AuthenticationError),
    ErrorReason.VOLUME_ERROR: (code_pb2.FAILED_PRECONDITION, flow.errors.VolumeError),
    ErrorReason.PROVIDER_ERROR: (code_pb2.UNAVAILABLE, flow.errors.ProviderError),
    ErrorReason.TIMEOUT: (code_pb2.DEADLINE_EXCEEDED, flow.errors.TimeoutError),
    ErrorReason.TASK_EXECUTION_FAILED: (code_pb2.ABORTED, flow.errors.TaskExecutionError),
    ErrorReason.ILLEGAL_STATE: (code_pb2.FAILED_PRECONDITION, flow.errors.FlowError),
    ErrorReason.ALREADY_EXISTS: (code_pb2.ALREADY_EXISTS, flow.errors.ValidationError),
    ErrorReason.NETWORK_ERROR: (code_pb2.UNAVAILABLE, flow.errors.NetworkError),
    ErrorReason.API_ERROR: (code_pb2.UNKNOWN, flow.errors.APIError),
    ErrorReason.INTERNAL: (code_pb2.INTERNAL, flow.errors.FlowError),
    ErrorReason.API_VALIDATION_FAILED: (code_pb2.INVALID_ARGUMENT, flow.errors.ValidationAPIError),
}


def test_every_reason_has_a_row() -> None:
    assert set(ERROR_TABLE) == set(ErrorReason)
    assert ERROR_TABLE == EXPECTED


def test_domain_reasons_are_the_contracts_enum() -> None:
    prefix = "ERROR_REASON_"
    names = [v.name for v in error_reason_pb2.ErrorReason.DESCRIPTOR.values]
    assert all(name.startswith(prefix) for name in names)
    contract = {name.removeprefix(prefix) for name in names} - {"UNSPECIFIED"}
    assert {r.name for r in ErrorReason} == contract
    assert all(r.value == r.name for r in ErrorReason)


def _error(reason: ErrorReason) -> DomainError:
    return DomainError(
        reason=reason,
        message=f"{reason.value} happened: ✓ naïve",
        suggestions=("try this", "or that"),
        violations=(violation("volumes[0].size_gb", 0, "must be at least 1", "give size_gb, e.g. 100"),),
        metadata=(("task", "t-1"), ("provider", "local")),
    )


def _details(status: status_pb2.Status) -> list[str]:
    return [d.TypeName() for d in status.details]


@pytest.mark.parametrize("reason", list(ErrorReason))
def test_status_round_trip(reason: ErrorReason) -> None:
    error = _error(reason)
    code, cls = EXPECTED[reason]
    status = status_pb2.Status.FromString(domain_error_to_status(error).SerializeToString())
    assert status.code == code == status_code_of(error)
    assert status.message == error.message
    assert _details(status) == ["google.rpc.ErrorInfo", "google.rpc.BadRequest", "flowapi.v1.ErrorSuggestions"]
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert (info.reason, info.domain) == (reason.name, ERROR_DOMAIN)
    assert dict(info.metadata) == {"task": "t-1", "provider": "local"}

    exc = exception_from_status(status.code, "", status)
    assert type(exc) is cls
    assert exc.message == error.message
    assert exc.suggestions == ["try this", "or that"]
    assert exc.error_code == reason.value
    assert exc.violations == [
        flow.errors.Violation(
            field="volumes[0].size_gb", description="must be at least 1 (got 0); give size_gb, e.g. 100"
        )
    ]
    assert str(exc).startswith(error.message + "\nSuggestions:\n  - try this")
    # The same exception without the wire.
    local = exception_from_domain_error(error)
    assert type(local) is cls
    assert (local.message, local.suggestions, local.error_code, local.violations) == (
        exc.message,
        exc.suggestions,
        exc.error_code,
        exc.violations,
    )


def test_status_has_exactly_one_error_info_and_only_the_details_it_needs() -> None:
    status = domain_error_to_status(DomainError(reason=ErrorReason.INTERNAL, message="boom"))
    assert _details(status) == ["google.rpc.ErrorInfo"]
    exc = exception_from_status(status.code, "", status)
    assert (exc.suggestions, exc.violations, exc.error_code) == ([], [], "INTERNAL")


def test_validation_error_keeps_every_violation() -> None:
    problems = [violation(f"env['V{i}']", i, "is bad", f"fix {i}") for i in range(5)]
    error = validation_error(problems, subject="task configuration")
    exc = exception_from_status(code_pb2.INVALID_ARGUMENT, "", domain_error_to_status(error))
    assert isinstance(exc, flow.errors.ValidationError)
    assert [v.field for v in exc.violations] == [p.field for p in problems]
    assert exc.suggestions == [f"fix {i}" for i in range(5)]
    assert exc.message == error.message


def test_not_found_maps_to_task_not_found() -> None:
    exc = exception_from_status(code_pb2.NOT_FOUND, "", domain_error_to_status(not_found("task", "t-x")))
    assert type(exc) is flow.errors.TaskNotFoundError
    assert isinstance(exc, flow.errors.ResourceNotFoundError)
    exc = exception_from_status(code_pb2.NOT_FOUND, "", domain_error_to_status(not_found("volume", "v")))
    assert type(exc) is flow.errors.ResourceNotFoundError


BY_CODE = [
    (code_pb2.INVALID_ARGUMENT, flow.errors.ValidationError, "VALIDATION_FAILED"),
    (code_pb2.NOT_FOUND, flow.errors.ResourceNotFoundError, "RESOURCE_NOT_FOUND"),
    (code_pb2.UNAUTHENTICATED, flow.errors.AuthenticationError, "AUTHENTICATION_FAILED"),
    (code_pb2.PERMISSION_DENIED, flow.errors.AuthenticationError, "AUTHENTICATION_FAILED"),
    (code_pb2.DEADLINE_EXCEEDED, flow.errors.TimeoutError, "TIMEOUT"),
    (code_pb2.UNAVAILABLE, flow.errors.NetworkError, "NETWORK_ERROR"),
    (code_pb2.RESOURCE_EXHAUSTED, flow.errors.QuotaExceededError, "QUOTA_EXCEEDED"),
    (code_pb2.INTERNAL, flow.errors.FlowError, "INTERNAL"),
    (code_pb2.UNKNOWN, flow.errors.FlowError, "INTERNAL"),
    (code_pb2.UNIMPLEMENTED, flow.errors.FlowError, "INTERNAL"),
]


@pytest.mark.parametrize(("code", "cls", "error_code"), BY_CODE)
def test_status_without_error_info_maps_by_code(code: int, cls: type[flow.errors.FlowError], error_code: str) -> None:
    # No status at all (grpc itself failed): the call's own message is kept.
    exc = exception_from_status(code, "connection reset", None)
    assert (type(exc), exc.message, exc.error_code) == (cls, "connection reset", error_code)
    # A status from a proxy, without our ErrorInfo.
    exc = exception_from_status(code, "fallback", status_pb2.Status(code=code, message="from proxy"))
    assert (type(exc), exc.message, exc.error_code) == (cls, "from proxy", error_code)


def test_error_info_from_another_domain_is_ignored() -> None:
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason="TASK_NOT_FOUND", domain="googleapis.com"))
    exc = exception_from_status(
        code_pb2.UNAVAILABLE, "", status_pb2.Status(code=code_pb2.UNAVAILABLE, details=[packed])
    )
    assert type(exc) is flow.errors.NetworkError


def test_unknown_reason_from_a_newer_daemon_maps_by_code() -> None:
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason="SOMETHING_NEW", domain=ERROR_DOMAIN))
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="gone", details=[packed])
    exc = exception_from_status(code_pb2.NOT_FOUND, "", status)
    assert (type(exc), exc.message) == (flow.errors.ResourceNotFoundError, "gone")


@given(
    st.sampled_from(list(ErrorReason)),
    st.text(),
    st.lists(st.text(), max_size=3),
    st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=3),
)
def test_any_text_survives_the_round_trip(
    reason: ErrorReason, message: str, suggestions: list[str], problems: list[tuple[str, str]]
) -> None:
    error = DomainError(
        reason=reason,
        message=message,
        suggestions=tuple(suggestions),
        violations=tuple(FieldViolation(field=f, value="v", problem=p, fix="x") for f, p in problems),
    )
    status = status_pb2.Status.FromString(domain_error_to_status(error).SerializeToString())
    exc = exception_from_status(status.code, "", status)
    assert type(exc) is EXPECTED[reason][1]
    assert exc.suggestions == suggestions
    assert [(v.field, v.description) for v in exc.violations] == [(v.field, v.description) for v in error.violations]
    assert exc.message == message


# --- the seed's exception tree ------------------------------------------------------------------

SEED_TREE = {
    "FlowError": Exception,
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


@pytest.mark.parametrize(("name", "parent"), SEED_TREE.items())
def test_exception_hierarchy_is_the_seeds(name: str, parent: str | type) -> None:
    cls = getattr(flow.errors, name)
    expected_parent = parent if isinstance(parent, type) else getattr(flow.errors, parent)
    assert cls.__bases__[0] is expected_parent
    assert issubclass(cls, flow.errors.FlowError)
    # No seed class is filed under another seed class it does not belong to.
    seed_ancestors = {c.__name__ for c in cls.__mro__[1:] if c.__module__ == "flow.errors"}
    chain = set()
    walk = parent
    while isinstance(walk, str):
        chain.add(walk)
        walk = SEED_TREE[walk]
    assert seed_ancestors == chain


def test_builtin_compatibility() -> None:
    assert issubclass(flow.errors.TimeoutError, builtins.TimeoutError)
    assert flow.errors.TimeoutError is not builtins.TimeoutError
    assert issubclass(flow.errors.NetworkError, ConnectionError)
    assert issubclass(flow.errors.DaemonUnavailableError, flow.errors.NetworkError)
    with pytest.raises(TimeoutError):
        raise flow.errors.TimeoutError("too slow")
    with pytest.raises(ConnectionError):
        raise flow.errors.NetworkError("down")


def test_every_public_exception_is_in_the_tree() -> None:
    public = {
        name
        for name, obj in inspect.getmembers(flow.errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == "flow.errors"
    }
    # flow-compute's exception names, each under the seed class that covers it (tests/sdk/test_public_api.py)
    flow_compute = {
        "FlowTimeoutError",  # the name of TimeoutError there
        "AuthorizationError",
        "ConfigParserError",
        "FlowOperationError",
        "InstanceNotReadyError",
        "InsufficientBidPriceError",
        "NameConflictError",
        "ProviderCapabilityError",
        "RateLimitError",
        "RemoteExecutionError",
    }
    assert public == set(SEED_TREE) | {"DaemonUnavailableError"} | flow_compute


def test_structured_error_attributes() -> None:
    exc = flow.errors.ResourceNotAvailableError("no a100", suggestions=["try h100"])
    assert (exc.message, exc.suggestions, exc.error_code) == ("no a100", ["try h100"], "RESOURCE_NOT_AVAILABLE")
    assert str(exc) == "no a100\nSuggestions:\n  - try h100"
    assert str(flow.errors.FlowError("plain")) == "plain"
    for cls in (getattr(flow.errors, n) for n in SEED_TREE):
        assert cls("m").error_code in {r.value for r in ErrorReason}
