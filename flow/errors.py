"""The exceptions of the Flow SDK, in one tree.

    FlowError (base)                    .message, .suggestions, .error_code
    ├── AuthenticationError             API key issues
    ├── ResourceNotFoundError           missing resources
    │   └── TaskNotFoundError           task not found
    ├── ValidationError                 invalid configuration (.violations: field problems)
    ├── APIError                        API communication
    │   └── ValidationAPIError          422 errors
    ├── NetworkError                    connection issues (also a builtin ConnectionError)
    │   └── DaemonUnavailableError      flowd cannot be reached
    ├── TimeoutError                    operation timeout (also a builtin TimeoutError)
    ├── ProviderError                   provider failures
    ├── ResourceNotAvailableError       no instances
    ├── QuotaExceededError              limit reached
    ├── VolumeError                     storage issues
    └── TaskExecutionError              runtime failures (.remote() raising, a task failing)

`error_code` is the contract's `ErrorReason` name (e.g. "VALIDATION_FAILED"), the same string that
clients in other languages read from the `google.rpc.ErrorInfo` of a failed call.

ValidationError is also a builtin ValueError, as in the Mithril platform's SDK (flow-compute).
The other names that SDK exports are here too, under the class that already covers them, so
`except` clauses written for it work unchanged: FlowTimeoutError is TimeoutError; those marked
"never raised here" name cases this project does not tell apart from their parent class.
"""

from __future__ import annotations

import builtins
from typing import NamedTuple


class Violation(NamedTuple):
    """One invalid field: its path (e.g. ``volumes[0].mount_path``) and what to do about it.
    (A NamedTuple, not attrs: every CLI command imports this module, so it must load fast.)"""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class FlowError(Exception):
    default_code = "INTERNAL"

    def __init__(
        self,
        message: str,
        suggestions: list[str] | tuple[str, ...] | None = None,
        error_code: str | None = None,
        violations: list[Violation] | tuple[Violation, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.suggestions: list[str] = list(suggestions or [])
        self.error_code: str = error_code or self.default_code
        self.violations: list[Violation] = list(violations or [])

    def __str__(self) -> str:
        if not self.suggestions:
            return self.message
        tips = "\n".join(f"  - {s}" for s in self.suggestions)
        return f"{self.message}\nSuggestions:\n{tips}"


class AuthenticationError(FlowError):
    default_code = "AUTHENTICATION_FAILED"


class ResourceNotFoundError(FlowError):
    default_code = "RESOURCE_NOT_FOUND"


class TaskNotFoundError(ResourceNotFoundError):
    default_code = "TASK_NOT_FOUND"


class ValidationError(FlowError, ValueError):
    default_code = "VALIDATION_FAILED"


class APIError(FlowError):
    default_code = "API_ERROR"


class ValidationAPIError(APIError):
    default_code = "VALIDATION_FAILED"


class NetworkError(FlowError, builtins.ConnectionError):
    default_code = "NETWORK_ERROR"


class DaemonUnavailableError(NetworkError):
    default_code = "NETWORK_ERROR"


class TimeoutError(FlowError, builtins.TimeoutError):  # noqa: A001 - the seed's name, on purpose
    default_code = "TIMEOUT"


class ProviderError(FlowError):
    default_code = "PROVIDER_ERROR"


class ResourceNotAvailableError(FlowError):
    default_code = "RESOURCE_NOT_AVAILABLE"


class QuotaExceededError(FlowError):
    default_code = "QUOTA_EXCEEDED"


class VolumeError(FlowError):
    default_code = "VOLUME_ERROR"


class TaskExecutionError(FlowError):
    default_code = "TASK_EXECUTION_FAILED"
    # What a function raised in a task (`.remote()`, `invoke`): set by flow.remote_call.
    remote_type: str = ""
    remote_traceback: str = ""
    task_id: str = ""


# --- the names of flow-compute's exceptions ----------------------------------------------------

FlowTimeoutError = TimeoutError


class AuthorizationError(AuthenticationError):
    """Never raised here: a refused permission is an AuthenticationError."""


class RateLimitError(APIError):
    """Never raised here: flowd retries a provider's rate limits itself."""


class InsufficientBidPriceError(ResourceNotAvailableError, ValidationAPIError):
    """Never raised here: a price below the market is a ResourceNotAvailableError."""


class ConfigParserError(ValidationError):
    """Never raised here: a config file that does not parse is a ValidationError."""


class NameConflictError(FlowError):
    """Never raised here: task names need not be unique, and a volume name's conflicts are
    VolumeError or ValidationError."""


class InstanceNotReadyError(FlowError):
    """Never raised here: exec and ssh wait for the task to run."""


class FlowOperationError(FlowError):
    """Never raised here: errors keep their own class."""


class RemoteExecutionError(FlowError):
    """A command run in a task by `task.shell(command, capture_output=True)` exited non-zero."""

    default_code = "TASK_EXECUTION_FAILED"
    exit_code: int | None = None


class ProviderCapabilityError(FlowError, NotImplementedError):
    """An operation of flow-compute's API that this project does not offer; the message names
    the alternative."""

    default_code = "VALIDATION_FAILED"  # the request names something not offered


__all__ = [
    "APIError",
    "AuthenticationError",
    "AuthorizationError",
    "ConfigParserError",
    "DaemonUnavailableError",
    "FlowError",
    "FlowOperationError",
    "FlowTimeoutError",
    "InstanceNotReadyError",
    "InsufficientBidPriceError",
    "NameConflictError",
    "NetworkError",
    "ProviderCapabilityError",
    "ProviderError",
    "QuotaExceededError",
    "RateLimitError",
    "RemoteExecutionError",
    "ResourceNotAvailableError",
    "ResourceNotFoundError",
    "TaskExecutionError",
    "TaskNotFoundError",
    "TimeoutError",
    "ValidationAPIError",
    "ValidationError",
    "Violation",
    "VolumeError",
]
