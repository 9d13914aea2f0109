"""The one table that maps every error reason to its gRPC status code and SDK exception.

Codes are google.rpc.Code numbers (identical to grpc.StatusCode), so this module does not need
grpc itself and stays cheap to import for code that only validates configs.

flowd turns a `DomainError` into a `google.rpc.Status` with exactly one `ErrorInfo` (reason,
domain "flow", metadata), a `BadRequest` listing field violations when there are any, and our
`ErrorSuggestions`. The SDK turns such a status back into the exception of the same row. Clients
in other languages read the same details.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from flow import errors
from flow.domain.error_reasons import ErrorReason

if TYPE_CHECKING:
    from flow.domain.errors import DomainError
from flowapi.v1 import error_reason_pb2

ERROR_DOMAIN: Final = "flow"

# reason -> (gRPC status code, SDK exception class)
ERROR_TABLE: Final[dict[ErrorReason, tuple[int, type[errors.FlowError]]]] = {
    ErrorReason.VALIDATION_FAILED: (code_pb2.INVALID_ARGUMENT, errors.ValidationError),
    ErrorReason.TASK_NOT_FOUND: (code_pb2.NOT_FOUND, errors.TaskNotFoundError),
    ErrorReason.RESOURCE_NOT_FOUND: (code_pb2.NOT_FOUND, errors.ResourceNotFoundError),
    ErrorReason.RESOURCE_NOT_AVAILABLE: (
        code_pb2.FAILED_PRECONDITION,
        errors.ResourceNotAvailableError,
    ),
    ErrorReason.QUOTA_EXCEEDED: (code_pb2.RESOURCE_EXHAUSTED, errors.QuotaExceededError),
    ErrorReason.AUTHENTICATION_FAILED: (
        code_pb2.UNAUTHENTICATED,
        errors.AuthenticationError,
    ),
    ErrorReason.VOLUME_ERROR: (code_pb2.FAILED_PRECONDITION, errors.VolumeError),
    ErrorReason.PROVIDER_ERROR: (code_pb2.UNAVAILABLE, errors.ProviderError),
    ErrorReason.TIMEOUT: (code_pb2.DEADLINE_EXCEEDED, errors.TimeoutError),
    ErrorReason.TASK_EXECUTION_FAILED: (code_pb2.ABORTED, errors.TaskExecutionError),
    ErrorReason.ILLEGAL_STATE: (code_pb2.FAILED_PRECONDITION, errors.FlowError),
    ErrorReason.ALREADY_EXISTS: (code_pb2.ALREADY_EXISTS, errors.ValidationError),
    ErrorReason.NETWORK_ERROR: (code_pb2.UNAVAILABLE, errors.NetworkError),
    ErrorReason.API_ERROR: (code_pb2.UNKNOWN, errors.APIError),
    ErrorReason.INTERNAL: (code_pb2.INTERNAL, errors.FlowError),
    ErrorReason.API_VALIDATION_FAILED: (code_pb2.INVALID_ARGUMENT, errors.ValidationAPIError),
}

# For statuses that carry no ErrorInfo (a proxy, grpc itself): the closest exception by code.
_BY_CODE: Final[dict[int, type[errors.FlowError]]] = {
    code_pb2.INVALID_ARGUMENT: errors.ValidationError,
    code_pb2.NOT_FOUND: errors.ResourceNotFoundError,
    code_pb2.UNAUTHENTICATED: errors.AuthenticationError,
    code_pb2.PERMISSION_DENIED: errors.AuthenticationError,
    code_pb2.DEADLINE_EXCEEDED: errors.TimeoutError,
    code_pb2.UNAVAILABLE: errors.NetworkError,
    code_pb2.RESOURCE_EXHAUSTED: errors.QuotaExceededError,
}


def proto_reason_name(reason: ErrorReason) -> str:
    """The ErrorInfo.reason string: the contract's enum name without its prefix."""
    return reason.value


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_code_of(error: DomainError) -> int:
    """The google.rpc.Code number (the same numbers as grpc.StatusCode)."""
    return ERROR_TABLE[error.reason][0]


# gRPC carries a status in trailing metadata (grpc-message, percent-encoded, and
# grpc-status-details-bin), which clients refuse above ~8 KiB: a status too large for that
# would reach the caller as a bare RESOURCE_EXHAUSTED "metadata size exceeds limit" instead.
MAX_STATUS_COST: Final = 6144
_MAX_ITEMS: Final = 10
_MAX_ITEM_CHARS: Final = 300
_CUT: Final = " [...]"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(_CUT))] + _CUT


def _status_cost(status: status_pb2.Status) -> int:
    """What the status costs in trailing metadata: the percent-encoded message and the details
    (counted as base64, as some transports send binary headers)."""
    encoded = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in status.message.encode())
    return encoded + len(status.SerializeToString()) * 4 // 3 + 128


def _bounded(error: DomainError) -> DomainError:
    """The error cut down to fit MAX_STATUS_COST (only ever needed for huge user values): each
    part shortened, then violations and suggestions dropped from the end, then the message cut."""
    import attrs  # only for errors this large; every CLI command loads this module

    violations = [
        attrs.evolve(
            v,
            field=_clip(v.field, 100),
            value=_clip(v.value, 100),
            problem=_clip(v.problem, _MAX_ITEM_CHARS),
            fix=_clip(v.fix, _MAX_ITEM_CHARS),
        )
        for v in error.violations[:_MAX_ITEMS]
    ]
    suggestions = [_clip(s, _MAX_ITEM_CHARS) for s in error.suggestions[:_MAX_ITEMS]]
    metadata = tuple((_clip(k, 64), _clip(v, 64)) for k, v in error.metadata[:4])
    limit = min(len(error.message), 2000)

    def build() -> DomainError:
        message = error.message if limit >= len(error.message) else _clip(error.message, limit)
        hidden = len(error.violations) - len(violations)
        if hidden:
            message += f"\n  ({hidden} more problems not shown)"
        return attrs.evolve(
            error, message=message, violations=tuple(violations), suggestions=tuple(suggestions), metadata=metadata
        )

    while _status_cost(_status_of(build())) > MAX_STATUS_COST:
        if len(violations) > 1 and len(violations) >= len(suggestions):
            violations.pop()
        elif len(suggestions) > 1:
            suggestions.pop()
        elif limit > 0:
            limit //= 2
        else:
            break
    return build()


def domain_error_to_status(error: DomainError) -> status_pb2.Status:
    if len(error.message) <= MAX_STATUS_COST:
        status = _status_of(error)
        if _status_cost(status) <= MAX_STATUS_COST:
            return status
    return _status_of(_bounded(error))


def _status_of(error: DomainError) -> status_pb2.Status:
    code = status_code_of(error)
    info = error_details_pb2.ErrorInfo(
        reason=proto_reason_name(error.reason), domain=ERROR_DOMAIN, metadata=dict(error.metadata)
    )
    details = [_pack(info)]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    if error.suggestions:
        details.append(_pack(error_reason_pb2.ErrorSuggestions(suggestions=error.suggestions)))
    return status_pb2.Status(code=code, message=error.message, details=details)


def exception_from_domain_error(error: DomainError) -> errors.FlowError:
    """The SDK exception for an error the core returned in this process (no wire involved)."""
    cls = ERROR_TABLE[error.reason][1]
    return cls(
        error.message,
        suggestions=error.suggestions,
        error_code=error.reason.value,
        violations=[errors.Violation(field=v.field, description=v.description) for v in error.violations],
    )


def exception_from_status(code: int, message: str, status: status_pb2.Status | None) -> errors.FlowError:
    """The SDK exception for a failed call: by ErrorInfo.reason when flowd sent one, else by code."""
    reason_name: str | None = None
    suggestions: list[str] = []
    violations: list[errors.Violation] = []
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == ERROR_DOMAIN:
                    reason_name = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(
                    errors.Violation(field=v.field, description=v.description) for v in bad.field_violations
                )
            elif detail.Is(error_reason_pb2.ErrorSuggestions.DESCRIPTOR):
                tips = error_reason_pb2.ErrorSuggestions()
                detail.Unpack(tips)
                suggestions.extend(tips.suggestions)
    reason = ErrorReason.__members__.get(reason_name or "")
    if reason is not None:
        cls = ERROR_TABLE[reason][1]
        code_name = reason.value
    else:
        cls = _BY_CODE.get(code, errors.FlowError)
        code_name = cls.default_code
    return cls(message, suggestions=suggestions, error_code=code_name, violations=violations)


def exception_from_call(code: int, message: str, details: bytes | None) -> errors.FlowError:
    """The SDK exception for a failed call as every transport sees it: the grpc-status code, the
    grpc-message and, when sent, the grpc-status-details-bin trailer (a google.rpc.Status). Like
    grpc_status.rpc_status.from_call, a status that is garbled or disagrees with the call is ignored."""
    status: status_pb2.Status | None = None
    if details is not None:
        status = status_pb2.Status()
        try:
            status.ParseFromString(details)
        except DecodeError:
            status = None
        if status is not None and (status.code != code or status.message != message):
            status = None
    return exception_from_status(code, message, status)


__all__ = [
    "ERROR_DOMAIN",
    "ERROR_TABLE",
    "domain_error_to_status",
    "exception_from_call",
    "exception_from_domain_error",
    "exception_from_status",
    "status_code_of",
]
