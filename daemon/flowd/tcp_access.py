"""The TCP listener's guard: every call must carry the daemon's token (see tcp_settings)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from flow.domain.errors import DomainError, ErrorReason
from flow.wire.error_table import domain_error_to_status
from flowd.tcp_settings import TcpSettings


def credentials(settings: TcpSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])


_REFUSED = DomainError(
    reason=ErrorReason.AUTHENTICATION_FAILED,
    message="flowd's TCP listener needs its token: send 'authorization: Bearer <token>'",
    suggestions=(
        "set FLOW_DAEMON_TOKEN to the content of $FLOW_HOME/daemon-token on the daemon's machine",
        "or connect through the Unix socket on that machine",
    ),
)


def _refuse(_: Any, context: grpc.ServicerContext) -> None:
    status = rpc_status.to_status(domain_error_to_status(_REFUSED))
    context.abort_with_status(status)


_REFUSAL: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(_refuse)


class TokenInterceptor(grpc.ServerInterceptor):
    """Lets a call through only with the right bearer token."""

    def __init__(self, token: str) -> None:
        self._expected = f"bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        value = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(value.lower()[:7] + value[7:], self._expected):
            return continuation(details)
        # The same refusal for every method, known or not and of any shape, decided before the
        # method is looked up: a caller without the token cannot enumerate the methods. (A
        # stream-stream handler answers unary callers too: it aborts before reading a message.)
        return _REFUSAL
