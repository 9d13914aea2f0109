"""A code snapshot as one gzipped tar, for providers that carry it to the task themselves (in a
startup script, a ConfigMap, an exec stream) rather than materialising it from flowd's blobs."""

from __future__ import annotations

import io
import tarfile

from returns.result import Failure

from flow.domain.code.manifest import parse_manifest
from flowd.blobs import BlobStore
from flowd.providers.base import LaunchError


def snapshot_archive(blobs: BlobStore, digest: str | None, compresslevel: int) -> bytes | None:
    """The snapshot `digest` as a .tar.gz (None: the task has no code). Each file keeps its
    executable bit; nothing else of the user's machine (owners, times) travels. Raises
    LaunchError when the manifest is unreadable."""
    if not digest:
        return None
    parsed = parse_manifest(blobs.read(digest))
    if isinstance(parsed, Failure):
        raise LaunchError(f"the code snapshot {digest} is unreadable: {parsed.failure().message}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=compresslevel) as tar:
        for entry in parsed.unwrap().entries:
            info = tarfile.TarInfo(entry.path)
            info.size = entry.size
            info.mode = 0o755 if entry.executable else 0o644
            with open(blobs.path(entry.digest), "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()
