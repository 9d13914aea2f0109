"""What the reliability tests share: raw gRPC access to a daemon, the protobuf wire format by
hand (for bytes no client library would send), and the crash-soak and load drivers of
bench/bench_reliability.py (the tests run short versions of the same code and assert on it)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import Daemon, pid_alive

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_reliability

__all__ = ["bench_reliability"]

# What a client library may say about a call flowd refused: never UNKNOWN, never a traceback.
CLEAN_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message above gRPC's 4 MB limit, refused by gRPC itself
    }
)


def channel(daemon: Daemon) -> grpc.Channel:
    return grpc.insecure_channel(
        daemon.home.address,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
    )


def healthy(daemon: Daemon, timeout: float = 30) -> bool:
    """flowd's process is alive and answers grpc.health.v1 Check with SERVING."""
    if daemon.pid is None or not pid_alive(daemon.pid):
        return False
    with channel(daemon) as chan:
        reply = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def clean_failure(code: grpc.StatusCode, details: str) -> str | None:
    """Why a call's outcome is not a clean answer (None when it is)."""
    # (flowd decodes requests itself: one it cannot parse is INVALID_ARGUMENT naming the type,
    # never gRPC's INTERNAL "Exception deserializing request!"; tests/reliability/test_garbage_requests.py)
    if code not in CLEAN_CODES:
        return f"status {code.name}: {details[:300]!r}"
    if "Traceback" in details or 'File "' in details:
        return f"a traceback in the details: {details[:300]!r}"
    return None


# --- the protobuf wire format, by hand ---------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers as two's complement, as protobuf encodes int64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def raw_unary(chan: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    """A unary method that sends and receives bytes exactly as given (no serializer)."""
    return chan.unary_unary(method, request_serializer=None, response_deserializer=None)
