"""Encoded calls: what the SDK hands its connection instead of protobuf messages.

A converter module of flow.wire builds each call (the method's path and the serialized request)
together with the function that reads the reply into an SDK value; the connection
(flow.connection) sends it over a transport (flow.transport) and returns that value. So the SDK
never touches a generated message, and a transport only ever moves bytes.

Plain classes, neither attrs (~20 ms to import) nor generic NamedTuples (~0.5 ms each to build):
`flow status` imports this module on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

T = TypeVar("T")
Item = TypeVar("Item")


class Call(Generic[T]):
    """A call with one request: unary, or server-streaming (then `read` reads each reply)."""

    __slots__ = ("method", "read", "request")

    def __init__(self, method: str, request: bytes, read: Callable[[bytes], T]) -> None:
        self.method = method  # e.g. "/flowapi.v1.TaskService/GetTask"
        self.request = request
        self.read = read


class StreamingCall(Generic[T]):
    """A call whose requests stream: client-streaming or bidirectional."""

    __slots__ = ("method", "read", "requests")

    def __init__(self, method: str, requests: Callable[[], Iterator[bytes]], read: Callable[[bytes], T]) -> None:
        self.method = method
        self.requests = requests  # a fresh stream per attempt: a retried call sends it again
        self.read = read


class Page(Generic[Item]):
    """One page of a List method and the token of the next ("" after the last)."""

    __slots__ = ("items", "next_page_token")

    def __init__(self, items: tuple[Item, ...], next_page_token: str) -> None:
        self.items = items
        self.next_page_token = next_page_token


def method_path(service: ServiceDescriptor, method: str) -> str:
    """A method's HTTP/2 path, checked against the contract: a misspelt name fails on import."""
    return f"/{service.full_name}/{service.methods_by_name[method].name}"


def ignore_reply(_: bytes) -> None:
    """For calls whose reply says nothing beyond success (failures arrive as exceptions)."""


__all__ = ["Call", "Page", "StreamingCall", "ignore_reply", "method_path"]
