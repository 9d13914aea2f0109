"""Why something was refused: the reasons of the contract's ErrorReason. (A module of its own: the
CLI maps errors with it at start-up, without loading the rest of the core.)"""

from __future__ import annotations

import enum


class ErrorReason(enum.Enum):
    """Why something was refused. Mirrors `flowapi.v1.ErrorReason` (one name each)."""

    VALIDATION_FAILED = "VALIDATION_FAILED"
    TASK_NOT_FOUND = "TASK_NOT_FOUND"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    RESOURCE_NOT_AVAILABLE = "RESOURCE_NOT_AVAILABLE"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    VOLUME_ERROR = "VOLUME_ERROR"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    TIMEOUT = "TIMEOUT"
    TASK_EXECUTION_FAILED = "TASK_EXECUTION_FAILED"
    ILLEGAL_STATE = "ILLEGAL_STATE"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    NETWORK_ERROR = "NETWORK_ERROR"
    API_ERROR = "API_ERROR"
    INTERNAL = "INTERNAL"
    API_VALIDATION_FAILED = "API_VALIDATION_FAILED"
