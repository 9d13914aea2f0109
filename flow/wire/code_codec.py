"""Code snapshots at the wire: the CodeService calls the SDK makes (FindMissingBlobs, UploadBlobs,
CollectBlobs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Final, NamedTuple

from flow.wire.calls import Call, StreamingCall, ignore_reply, method_path
from flowapi.v1 import code_service_pb2

_SERVICE: Final = code_service_pb2.DESCRIPTOR.services_by_name["CodeService"]
FIND_MISSING_BLOBS: Final = method_path(_SERVICE, "FindMissingBlobs")
UPLOAD_BLOBS: Final = method_path(_SERVICE, "UploadBlobs")
COLLECT_BLOBS: Final = method_path(_SERVICE, "CollectBlobs")


class BlobChunk(NamedTuple):
    """Bytes of one blob (a file's content, or a manifest) starting at `offset`."""

    digest: str
    size: int  # of the whole blob
    offset: int
    data: bytes


def find_missing_blobs_call(digests: Sequence[str], snapshots: Sequence[str] = ()) -> Call[frozenset[str]]:
    """The digests, of those given, whose blobs flowd does not have, and the snapshots
    (manifest digests) it does not have whole (the manifest and every blob it lists)."""
    request = code_service_pb2.FindMissingBlobsRequest(digests=list(digests), snapshots=list(snapshots))
    return Call(
        FIND_MISSING_BLOBS,
        request.SerializeToString(),
        lambda raw: frozenset(code_service_pb2.FindMissingBlobsResponse.FromString(raw).missing_digests),
    )


def upload_blobs_call(batches: Callable[[], Iterator[Sequence[BlobChunk]]]) -> StreamingCall[None]:
    """One request per batch of chunks (many small files in one message, a large file over several)."""

    def requests() -> Iterator[bytes]:
        for batch in batches():
            chunks = [
                code_service_pb2.BlobChunk(digest=c.digest, size=c.size, offset=c.offset, data=c.data) for c in batch
            ]
            yield code_service_pb2.UploadBlobsRequest(chunks=chunks).SerializeToString()

    return StreamingCall(UPLOAD_BLOBS, requests, ignore_reply)


class CollectedBlobs(NamedTuple):
    """What CollectBlobs removed from the daemon's blob store, and what it still holds."""

    removed_blobs: int
    removed_bytes: int
    kept_blobs: int
    kept_bytes: int


def collect_blobs_call() -> Call[CollectedBlobs]:
    """Removes the blobs no unfinished task uses and nobody used within the daemon's default age."""

    def reply(raw: bytes) -> CollectedBlobs:
        done = code_service_pb2.CollectBlobsResponse.FromString(raw)
        return CollectedBlobs(done.removed_blobs, done.removed_bytes, done.kept_blobs, done.kept_bytes)

    return Call(COLLECT_BLOBS, code_service_pb2.CollectBlobsRequest().SerializeToString(), reply)


__all__ = ["BlobChunk", "CollectedBlobs", "collect_blobs_call", "find_missing_blobs_call", "upload_blobs_call"]
