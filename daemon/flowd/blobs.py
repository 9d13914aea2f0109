"""flowd's content-addressed blob store: $FLOW_HOME/blobs/sha256/<hex>.

Blobs are written to a temporary file, checked against their digest, then renamed into place,
so a blob that exists is complete and correct; concurrent uploads of the same blob are harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from pathlib import Path
from typing import NoReturn

from flow.domain.code.manifest import Manifest, is_digest
from flow.domain.errors import FieldViolation, violation
from flowd.store import state_write_error

_serial = itertools.count()  # next() on a count is atomic under the GIL


class BlobError(Exception):
    """An upload that does not match its digest or size."""


def _write_failed(exc: OSError, root: Path) -> NoReturn:
    """A full or read-only disk as a StateWriteError (its message says so); else exc as it came."""
    error = state_write_error(exc, root)
    if error is None:
        raise exc
    raise error from exc


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / "incoming").mkdir(exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise BlobError(f"{digest!r} is not a sha256 digest")
        return self.root / "sha256" / digest.removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        return is_digest(digest) and self.path(digest).is_file()

    def size(self, digest: str) -> int | None:
        """The stored blob's size in bytes; None when it is not stored."""
        try:
            return self.path(digest).stat().st_size if is_digest(digest) else None
        except FileNotFoundError:
            return None

    def manifest_violations(self, digest: str, manifest: Manifest) -> list[FieldViolation]:
        """What the store says against a manifest: files never uploaded, and entries whose
        declared size is not their blob's (a size is a claim the daemon checks, not trusts)."""
        fix = "upload the code with CodeService (FindMissingBlobs, UploadBlobs) before CreateTask"
        sizes = [self.size(entry.digest) for entry in manifest.entries]
        missing = sorted(e.path for e, size in zip(manifest.entries, sizes, strict=True) if size is None)
        problems = [
            violation(
                f"manifest.files[{index}].size",
                entry.size,
                f"is not the size of {entry.path!r}, whose content is {size} bytes",
                "list each file with its real size (upload the code again with the Flow SDK)",
            )
            for index, (entry, size) in enumerate(zip(manifest.entries, sizes, strict=True))
            if size is not None and size != entry.size
        ][:10]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            problems.insert(0, violation("code_digest", digest, f"lists files never uploaded: {shown}", fix))
        return problems

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def writer(self, digest: str, size: int) -> BlobWriter:
        return BlobWriter(self, digest, size)


class BlobWriter:
    """Receives one blob's chunks; `commit` verifies and publishes it."""

    def __init__(self, store: BlobStore, digest: str, size: int) -> None:
        self._target = store.path(digest)
        self._digest = digest
        self._size = size
        self._hash = hashlib.sha256()
        self._written = 0
        # A name no other writer uses (tempfile.mkstemp costs ~10x more, for thousands of blobs).
        self._partial = store.root / "incoming" / f"{digest[7:23]}.{os.getpid()}.{next(_serial)}"
        self._root = store.root
        try:
            fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            _write_failed(exc, store.root)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._written += len(data)
        if self._written > self._size:
            raise BlobError(f"blob {self._digest} is larger than its declared {self._size} bytes")
        self._hash.update(data)
        try:
            self._file.write(data)
        except OSError as exc:  # a full disk: StateWriteError says so
            _write_failed(exc, self._root)

    def commit(self) -> None:
        actual = "sha256:" + self._hash.hexdigest()
        if self._written != self._size or actual != self._digest:
            self.abort()
            raise BlobError(
                f"blob {self._digest} arrived as {self._written} bytes hashing to {actual} "
                f"(declared {self._size} bytes): it changed while uploading, or was corrupted"
            )
        try:
            self._file.close()
            os.replace(self._partial, self._target)  # atomic: a blob that exists is always whole
        except OSError as exc:
            _write_failed(exc, self._root)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._partial.unlink()
