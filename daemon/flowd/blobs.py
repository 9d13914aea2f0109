"""flowd's content-addressed blob store: $FLOW_HOME/blobs/sha256/<hex>.

Blobs are written to a temporary file, checked against their digest, then renamed into place,
so a blob that exists is complete and correct; concurrent uploads of the same blob are harmless.
Partial files a killed daemon left in blobs/incoming are removed when the store opens (flowd
holds $FLOW_HOME's lock by then: no other writer exists).

A blob's mtime is when it was last uploaded or named in FindMissingBlobs (refreshed, at most
every few minutes): `collect` keeps blobs younger than its `min_age`, so an upload whose task is
not created yet is never collected under it, and removes those no unfinished task's snapshot
lists. Finished tasks keep their own copy of their code, never the blobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, NoReturn

from attrs import frozen
from returns.result import Failure, Success

from flow.domain.code.manifest import Manifest, is_digest, parse_manifest
from flow.domain.errors import FieldViolation, violation
from flowd.store import state_write_error

_serial = itertools.count()  # next() on a count is atomic under the GIL
DEFAULT_MIN_AGE: Final = 3600.0  # seconds a blob is kept after it was last uploaded or asked for
_REFRESH_AFTER: Final = 300.0  # a blob asked for is touched again once its mtime is this old
_WHOLE_REMEMBERED: Final = 1024  # snapshots remembered as whole (then forgotten all at once)
_MANIFESTS_REMEMBERED: Final = 64  # checked manifests kept parsed (one of 10,000 files is a few MB)


class BlobError(Exception):
    """An upload that does not match its digest or size."""


def _write_failed(exc: OSError, root: Path) -> NoReturn:
    """A full or read-only disk as a StateWriteError (its message says so); else exc as it came."""
    error = state_write_error(exc, root)
    if error is None:
        raise exc
    raise error from exc


@frozen
class Collected:
    """What `collect` did: blobs removed and blobs kept, with their sizes in bytes."""

    removed_blobs: int
    removed_bytes: int
    kept_blobs: int
    kept_bytes: int


class BlobStore:
    def __init__(self, root: Path, live_snapshots: Callable[[], Iterable[str]] = tuple) -> None:
        """`live_snapshots`: the code digests unfinished tasks run in (collect_unused keeps them)."""
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / "incoming").mkdir(exist_ok=True, mode=0o700)
        for partial in os.scandir(root / "incoming"):  # left by a daemon killed mid-upload
            with contextlib.suppress(OSError):
                os.unlink(partial.path)
        # The code snapshots (manifest digests) of unfinished tasks: set once the store of tasks exists.
        self._live_snapshots = live_snapshots
        self._lock = threading.Lock()  # over publishing, removing and the usage below
        self._usage: list[int] | None = None  # [blobs, bytes], counted on first use
        # Snapshots found whole (manifest and every blob it lists) -> when (monotonic). Only
        # `collect` removes blobs: it bumps the generation as it starts and as it ends, and a
        # check is remembered only if no collection started or ran while it looked.
        self._whole: dict[str, float] = {}
        self._generation = 0  # odd while a collection runs
        # Snapshot -> (generation, its manifest) once checked whole at the sizes it declares;
        # valid in that generation only (`checked_manifest`).
        self._manifests: dict[str, tuple[int, Manifest]] = {}
        # Strings, not Paths, where a path is made per blob: a first upload makes thousands.
        self._blob_dir = f"{root}/sha256/"
        self._incoming_dir = f"{root}/incoming/"

    def usage(self) -> tuple[int, int]:
        """(blobs, bytes) the store holds."""
        with self._lock:
            if self._usage is None:
                sizes = [entry.stat().st_size for entry in os.scandir(self.root / "sha256")]
                self._usage = [len(sizes), sum(sizes)]
            return self._usage[0], self._usage[1]

    def _counted(self, blobs: int, size: int) -> None:
        """Callers hold self._lock."""
        if self._usage is not None:
            self._usage[0] += blobs
            self._usage[1] += size

    def publish(self, partial: str, digest: str, size: int) -> None:
        """Moves a verified blob into place (atomically: a blob that exists is always whole)."""
        target = self._blob_dir + digest.removeprefix("sha256:")
        with self._lock:
            new = not os.path.exists(target)
            os.replace(partial, target)
            if new:
                self._counted(1, size)

    def missing(self, digests: Iterable[str]) -> list[str]:
        """Those of `digests` the store lacks; the others count as just used (see `collect`)."""
        now = time.time()
        absent = []
        directory = f"{self.root}/sha256/"  # strings: a Path per digest costs more than its stat
        for digest in dict.fromkeys(digests):
            if not is_digest(digest):
                raise BlobError(f"{digest!r} is not a sha256 digest")
            path = directory + digest.removeprefix("sha256:")
            with self._lock:  # never between `collect`'s look at a blob and its removal
                try:
                    if os.stat(path).st_mtime < now - _REFRESH_AFTER:
                        os.utime(path)
                except FileNotFoundError:
                    absent.append(digest)
        return absent

    def missing_snapshots(self, snapshots: Iterable[str]) -> list[str]:
        """Those of `snapshots` (manifest digests) the store does not hold whole: the manifest
        and every blob it lists. The blobs of a snapshot held whole count as just used."""
        absent = []
        for snapshot in dict.fromkeys(snapshots):
            now = time.monotonic()
            with self._lock:
                generation = self._generation
                checked = self._whole.get(snapshot)
            # Rechecked every few minutes, which also refreshes the blobs' mtimes for `collect`.
            if checked is not None and now - checked < _REFRESH_AFTER and generation % 2 == 0:
                continue
            if not self._holds_whole(snapshot):
                absent.append(snapshot)
                continue
            with self._lock:
                if self._generation == generation and generation % 2 == 0:
                    if len(self._whole) >= _WHOLE_REMEMBERED:
                        self._whole.clear()
                    self._whole[snapshot] = now
        return absent

    def _holds_whole(self, snapshot: str) -> bool:
        if self.missing([snapshot]):
            return False
        try:
            parsed = parse_manifest(self.read(snapshot))
        except (OSError, BlobError):
            return False
        return isinstance(parsed, Success) and not self.missing(parsed.unwrap().digests)

    def collect(self, min_age: float = DEFAULT_MIN_AGE) -> Collected:
        """Removes the blobs no unfinished task's snapshot lists and nobody used within `min_age`
        seconds."""
        with self._lock:
            self._generation += 1
            self._whole.clear()
            self._manifests.clear()
        try:
            return self._collect(min_age)
        finally:
            with self._lock:
                self._generation += 1

    def _collect(self, min_age: float) -> Collected:
        used: set[str] = set()
        for snapshot in self._live_snapshots():
            used.add(snapshot)
            with contextlib.suppress(OSError, BlobError):
                parsed = parse_manifest(self.read(snapshot))
                if isinstance(parsed, Success):
                    used.update(parsed.unwrap().digests)
        before = time.time() - min_age
        removed = [0, 0]
        for entry in os.scandir(self.root / "sha256"):
            if "sha256:" + entry.name in used:
                continue
            with self._lock, contextlib.suppress(FileNotFoundError):
                status = os.stat(entry.path)  # under the lock: not one published or asked for since
                if status.st_mtime >= before:
                    continue
                os.unlink(entry.path)
                self._counted(-1, -status.st_size)
                removed[0] += 1
                removed[1] += status.st_size
        blobs, size = self.usage()
        return Collected(removed[0], removed[1], blobs, size)

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

    def checked_manifest(self, digest: str) -> tuple[Manifest | None, list[FieldViolation]]:
        """The snapshot's manifest when the store holds it and every blob it lists at the size
        it declares; else None and why. Remembered until a collection starts (only `collect`
        removes blobs, and a stored blob never changes), so each task of one snapshot does not
        read, parse and stat it all again (10,000 files: one stat each). A snapshot a task names
        counts as used, as one FindMissingBlobs asks about does (`collect` keeps it)."""
        with self._lock:
            generation = self._generation
            known = self._manifests.get(digest)
        if known is not None and known[0] == generation and generation % 2 == 0:
            self.missing_snapshots([digest])  # a task named it: its blobs count as just used
            return known[1], []
        fix = "upload the code with CodeService (FindMissingBlobs, UploadBlobs) before CreateTask"
        if not is_digest(digest) or not self.has(digest):
            return None, [violation("code_digest", digest, "names no uploaded code snapshot", fix)]
        parsed = parse_manifest(self.read(digest))
        if isinstance(parsed, Failure):
            return None, list(parsed.failure().violations)
        manifest = parsed.unwrap()
        problems = self.manifest_violations(digest, manifest)  # files missing, sizes that lie
        if problems:
            return None, problems
        self.missing_snapshots([digest])  # a task named it: its blobs count as just used
        with self._lock:
            if self._generation == generation and generation % 2 == 0:
                if len(self._manifests) >= _MANIFESTS_REMEMBERED:
                    self._manifests.clear()
                self._manifests[digest] = (generation, manifest)
        return manifest, []

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
        if not is_digest(digest):
            raise BlobError(f"{digest!r} is not a sha256 digest")
        # A name no other writer uses (tempfile.mkstemp costs ~10x more, for thousands of blobs).
        return BlobWriter(self, digest, size, f"{self._incoming_dir}{digest[7:23]}.{os.getpid()}.{next(_serial)}")


class BlobWriter:
    """Receives one blob's chunks into `partial`; `commit` verifies and publishes it."""

    def __init__(self, store: BlobStore, digest: str, size: int, partial: str) -> None:
        self._digest = digest
        self._size = size
        self._hash = hashlib.sha256()
        self._written = 0
        self._partial = partial
        self._root = store.root
        self._store = store
        try:
            self._fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            _write_failed(exc, store.root)

    def write(self, data: bytes) -> None:
        self._written += len(data)
        if self._written > self._size:
            raise BlobError(f"blob {self._digest} is larger than its declared {self._size} bytes")
        self._hash.update(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
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
            self._close()
            self._store.publish(self._partial, self._digest, self._size)
        except OSError as exc:
            _write_failed(exc, self._root)

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd != -1:
            os.close(fd)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._close()
        with contextlib.suppress(OSError):
            os.unlink(self._partial)
