"""Code snapshots as content-addressed manifests.

A snapshot is a manifest blob listing each file's relative path, content digest, size and mode.
Its own digest names the snapshot in TaskSpec.code_digest. The same files give the same
manifest bytes (sorted, canonical JSON), so an unchanged tree is an unchanged snapshot.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation

DIGEST_PATTERN: Final = re.compile(r"sha256:[0-9a-f]{64}")
MANIFEST_VERSION: Final = 1
MAX_PATH_LENGTH: Final = 4096


@frozen
class ManifestEntry:
    path: str  # POSIX, relative to the code root
    digest: str
    size: int
    executable: bool = False


@frozen
class Manifest:
    entries: tuple[ManifestEntry, ...]

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(e.digest for e in self.entries)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    return DIGEST_PATTERN.fullmatch(text) is not None


def path_problem(path: str) -> str | None:
    """Why a manifest path could escape or confuse the snapshot directory, if it could."""
    if not path or len(path) > MAX_PATH_LENGTH:
        return "is empty or too long"
    if "\x00" in path:
        return "contains a NUL byte"
    if path.startswith("/"):
        return "is absolute"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "is not a normalized relative path (empty, '.' or '..' parts)"
    return None


def manifest_bytes(entries: Sequence[ManifestEntry]) -> bytes:
    """The canonical encoding: sorted by path, compact JSON."""
    files = [
        {"path": e.path, "digest": e.digest, "size": e.size, "executable": e.executable}
        for e in sorted(entries, key=lambda e: e.path)
    ]
    return json.dumps({"version": MANIFEST_VERSION, "files": files}, separators=(",", ":"), sort_keys=True).encode()


def _entry(index: int, item: object, out: list[FieldViolation]) -> ManifestEntry | None:
    where = f"manifest.files[{index}]"
    if not isinstance(item, dict):
        out.append(violation(where, item, "is not an object", "upload a manifest made by the Flow SDK"))
        return None
    path, digest, size, executable = item.get("path"), item.get("digest"), item.get("size"), item.get("executable")
    problem = path_problem(path) if isinstance(path, str) else "is not a string"
    if problem:
        out.append(violation(f"{where}.path", path, problem, "list files by their path relative to the code root"))
    if not isinstance(digest, str) or not is_digest(digest):
        out.append(violation(f"{where}.digest", digest, "is not a sha256 digest", "use 'sha256:' and 64 hex digits"))
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        out.append(violation(f"{where}.size", size, "is not a size in bytes", "give the file's size"))
    if not isinstance(executable, bool):
        out.append(violation(f"{where}.executable", executable, "must be true or false", "give the file's mode"))
    if problem or not isinstance(digest, str) or not isinstance(size, int) or not isinstance(executable, bool):
        return None
    return ManifestEntry(path=str(path), digest=digest, size=size, executable=executable)


def parse_manifest(data: bytes) -> Result[Manifest, DomainError]:
    """A manifest from its bytes, refusing anything that could write outside the snapshot."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        document = None
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        return Failure(
            validation_error(
                [
                    violation(
                        "code_digest", "<blob>", "does not name a code manifest", "upload the code with the Flow SDK"
                    )
                ],
                subject="code snapshot",
            )
        )
    files = document.get("files")
    problems: list[FieldViolation] = []
    entries: list[ManifestEntry] = []
    for index, item in enumerate(files if isinstance(files, list) else []):
        entry = _entry(index, item, problems)
        if entry is not None:
            entries.append(entry)
    seen: set[str] = set()
    prefixes = {"/".join(e.path.split("/")[:i]) for e in entries for i in range(1, e.path.count("/") + 1)}
    for entry in entries:
        if entry.path in seen or entry.path in prefixes:
            problems.append(
                violation("manifest.files", entry.path, "is listed twice or is also a directory", "list each file once")
            )
        seen.add(entry.path)
    if problems:
        return Failure(validation_error(problems, subject="code snapshot"))
    return Success(Manifest(entries=tuple(entries)))
