"""Times at the wire: google.protobuf.Timestamp <-> seconds since the epoch (the core's times)."""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp


def seconds_to_proto(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    whole = math.floor(seconds)  # not int(): nanos must be non-negative before 1970 too
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:  # x.9999999999 rounds up to the next whole second
        whole, nanos = whole + 1, nanos - 1_000_000_000
    stamp.seconds = whole
    stamp.nanos = nanos
    return stamp


def seconds_from_proto(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


__all__ = ["seconds_from_proto", "seconds_to_proto"]
