"""Uploading a code root as a content-addressed snapshot (the SDK side of CodeService).

1. Walk the root and select files (`.flowignore` / `.gitignore`, see flow.domain.code.selection).
2. Hash them, reusing a local cache keyed by (path, size, mtime, ctime, inode) as the walk's
   stat saw them, so an unchanged tree costs one stat per file (the walk's).
3. Ask flowd which blobs it lacks; send only those; send the manifest; its digest names the
   snapshot. A task runs in a copy of exactly these bytes, so edits made after submit never
   reach it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, NamedTuple, TypeVar

from flow.code_index import (
    RACY_NS,
    TreeIndex,
    decode,
    encode,
    index_key,
    last_change_ns,
    recorded_index,
    settled,
    still_holds,
)
from flow.errors import FlowError, ValidationError
from flow.wire.code_codec import BlobChunk, find_missing_blobs_call, upload_blobs_call

if TYPE_CHECKING:
    from flow.code_walk import WalkResult
    from flow.connection import DaemonConnection

# The values here are NamedTuples, and the walk, the ignore rules and the manifest (attrs,
# pathspec, returns) are imported only when a tree is walked: an unchanged tree's upload (the
# tree index) is on the path of `flow run`, whose start-up is most of what it costs.

DEFAULT_MAX_UPLOAD_BYTES: Final = 2 * 2**30
CHUNK_BYTES: Final = 1024 * 1024
HASH_WORKERS: Final = 4
# Called as an upload goes (bytes sent, bytes to send): the SDK reports, the caller shows (flow.cli.progress).
Progress = Callable[[int, int], None]


class PlannedFile(NamedTuple):
    path: str
    size: int
    executable: bool
    source: str  # what to read, absolute (a symlink's target file)
    identity: str  # what stat said of `source` when it was listed (CodeFile.identity_of)


class UploadPlan(NamedTuple):
    root: Path
    files: tuple[PlannedFile, ...]
    excluded: int  # files and directories left out

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


class Upload(NamedTuple):
    digest: str
    files: int
    total_bytes: int
    sent_files: int
    sent_bytes: int
    seconds: float


def max_upload_bytes() -> int:
    """2 GiB unless FLOW_MAX_UPLOAD_MB says otherwise."""
    raw = os.environ.get("FLOW_MAX_UPLOAD_MB", "")
    return int(raw) * 2**20 if raw.isdigit() else DEFAULT_MAX_UPLOAD_BYTES


def _planned(root: Path, walked: WalkResult) -> tuple[list[PlannedFile], list[str]]:
    """The files to upload. A symlink to a file inside the root goes as that file's content
    (read from its resolved path, the one checked); one to a file outside the root is refused
    (ValidationError naming every such link); links to directories and dangling links are left
    out: nothing is ever read from outside the code root."""
    from flow.code_walk import CodeFile

    files: list[PlannedFile] = []
    skipped: list[str] = []  # symlinks left out
    leaving: list[str] = []
    prefix = f"{root}/" if str(root) != "/" else "/"
    for item in walked.files:
        source = prefix + item.path  # a string: a Path per file costs more than the rest of the plan
        if item.is_symlink:
            try:
                real = Path(os.path.realpath(source, strict=True))
                target = real.stat()
            except OSError:  # dangling, a loop, or gone since the walk
                skipped.append(item.path)
                continue
            if not stat.S_ISREG(target.st_mode):
                skipped.append(item.path)
                continue
            if not real.is_relative_to(root):
                leaving.append(f"{item.path} -> {real}")
                continue
            files.append(
                PlannedFile(
                    item.path, target.st_size, bool(target.st_mode & 0o111), str(real), CodeFile.identity_of(target)
                )
            )
        else:
            files.append(PlannedFile(item.path, item.size, bool(item.mode & 0o111), source, item.identity))
    if leaving:
        raise _links_leave_root(root, leaving)
    return files, skipped


def _links_leave_root(root: Path, leaving: Sequence[str]) -> ValidationError:
    shown = "\n".join(f"  {line}" for line in leaving[:20])
    more = f"\n  and {len(leaving) - 20} more" if len(leaving) > 20 else ""
    first = leaving[0].split(" -> ", 1)[0]
    return ValidationError(
        f"The code in {root} has symlinks to files outside it, which Flow never uploads (a "
        f"cloned repository could otherwise ship your keys):\n{shown}{more}",
        suggestions=[
            f"leave them out with a line in {root / '.flowignore'} (e.g. '{first}')",
            "or copy the files they name into the project",
            "or give the task the data with a data mount or a volume instead",
        ],
    )


def _too_large(root: Path, files: Sequence[PlannedFile], limit: int) -> ValidationError:
    total = sum(f.size for f in files)
    by_dir: dict[str, int] = {}
    for f in files:
        top = f.path.split("/", 1)[0] + ("/" if "/" in f.path else "")
        by_dir[top] = by_dir.get(top, 0) + f.size
    largest = sorted(by_dir.items(), key=lambda kv: -kv[1])[:5]
    biggest_files = sorted(files, key=lambda f: -f.size)[:5]
    lines = [f"  {mb(size)}  {name}" for name, size in largest]
    lines += [f"  {mb(f.size)}  {f.path}" for f in biggest_files if f.path not in by_dir]
    first = largest[0][0] if largest else "data/"
    return ValidationError(
        f"The code in {root} is {mb(total)}, above the upload limit of {mb(limit)}. Largest:\n" + "\n".join(lines),
        suggestions=[
            f"add what the task does not need to {root / '.flowignore'} (e.g. a line '{first}')",
            "put datasets on a volume or a data mount instead of uploading them",
            "raise the limit with FLOW_MAX_UPLOAD_MB, or pass upload_code=False",
        ],
    )


def mb(size: int) -> str:
    """A size as people read it in upload messages: '12.3 MB'."""
    return f"{size / 1e6:,.1f} MB"


def _checked_root(root: Path) -> Path:
    root = root.resolve()
    if not root.is_dir():
        raise ValidationError(
            f"code_root {str(root)!r} is not a directory",
            suggestions=["run from your project directory, or pass code_root=... or upload_code=False"],
        )
    return root


def _private_prefixes(root: Path, private: Sequence[Path]) -> list[str]:
    """The private directories inside `root`, as path prefixes relative to it ("dir/")."""
    inside = (directory.resolve() for directory in private)
    return [d.relative_to(root).as_posix() + "/" for d in inside if d.is_relative_to(root)]


class _Walked(NamedTuple):
    plan: UploadPlan
    walked: WalkResult
    skipped_links: tuple[str, ...]
    private_prefixes: tuple[str, ...]


def _walk_plan(root: Path, limit: int | None, private: Sequence[Path]) -> _Walked:
    from flow.code_walk import walk_code_root

    walked = walk_code_root(root)
    files, skipped_links = _planned(root, walked)
    skipped = len(skipped_links)
    prefixes = _private_prefixes(root, private)
    for prefix in prefixes:
        kept = [f for f in files if not f.path.startswith(prefix)]
        skipped += len(files) - len(kept)
        files = kept
    cap = max_upload_bytes() if limit is None else limit
    if sum(f.size for f in files) > cap:
        raise _too_large(root, files, cap)
    plan = UploadPlan(
        root=root, files=tuple(files), excluded=len(walked.selection.excluded) + len(walked.pruned_dirs) + skipped
    )
    return _Walked(plan, walked, tuple(skipped_links), tuple(prefixes))


def plan_upload(root: Path, limit: int | None = None, private: Sequence[Path] = ()) -> UploadPlan:
    """What a task submitted from `root` would upload; raises ValidationError above the limit.
    Files under `private` (flowd's state directory, when it lies inside the root) never go."""
    return _walk_plan(_checked_root(root), limit, private).plan


class HashCache:
    """Digests of files already hashed, keyed by what stat says about them ($FLOW_HOME), with
    what this process has seen kept in memory too (a repeated call costs no query)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, identity TEXT NOT NULL, digest TEXT NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS trees (key TEXT PRIMARY KEY, data BLOB NOT NULL)")
        os.chmod(path, 0o600)
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, str]] = {}  # path -> (identity, digest), as in the table

    def lookup(self, paths: Sequence[str]) -> dict[str, tuple[str, str]]:
        with self._lock:
            found = {p: self._seen[p] for p in paths if p in self._seen}
            if len(found) == len(paths):
                return found
            rest = [p for p in paths if p not in found]
            for start in range(0, len(rest), 500):
                batch = rest[start : start + 500]
                marks = ",".join("?" * len(batch))
                for path, identity, digest in self._db.execute(
                    f"SELECT path, identity, digest FROM digests WHERE path IN ({marks})", batch
                ):
                    found[path] = self._seen[path] = (identity, digest)
            return found

    def store(self, rows: Sequence[tuple[str, str, str]]) -> None:
        if not rows:
            return
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)", rows)
            for path, identity, digest in rows:
                self._seen[path] = (identity, digest)

    def tree(self, key: str) -> TreeIndex | None:
        """The tree index last recorded under `key` (flow.code_index), if one can be read."""
        try:
            with self._lock:
                row = self._db.execute("SELECT data FROM trees WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:  # busy beyond the timeout, or damaged: the upload walks instead
            return None
        return None if row is None or not isinstance(row[0], bytes) else decode(row[0])

    def store_tree(self, key: str, index: TreeIndex | None) -> None:
        """Records `index` under `key`; None forgets what was recorded. An index that cannot be
        written (a full disk, another process holding the database) is only a slower next upload."""
        with contextlib.suppress(sqlite3.Error), self._lock, self._db:
            if index is None:
                self._db.execute("DELETE FROM trees WHERE key = ?", (key,))
            else:
                self._db.execute("INSERT OR REPLACE INTO trees VALUES (?, ?)", (key, encode(index)))

    def close(self) -> None:
        self._db.close()


_open_caches: dict[Path, HashCache] = {}  # one per cache file, open for the life of the process
_open_caches_lock = threading.Lock()
_abandoned: list[HashCache] = []


def _forget_open_caches() -> None:
    """In a forked child: SQLite connections must not cross a fork, and the lock may be held."""
    global _open_caches_lock
    _abandoned.extend(_open_caches.values())  # never used, nor closed, here: they are the parent's
    _open_caches.clear()
    _open_caches_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_open_caches)


def _hash_cache(path: Path) -> HashCache:
    with _open_caches_lock:
        cache = _open_caches.get(path)
        if cache is None:
            cache = _open_caches[path] = HashCache(path)
        return cache


def _hash_file(path: str, size: int) -> tuple[str | None, bool]:
    """The digest of the file's first `size` bytes (its size when the walk listed it: what the
    upload sends of a file that grew since), and whether that is the whole file; (None, False)
    once deleted. A file now shorter changed under us: _TreeChangedError."""
    digest = hashlib.sha256()
    left = size
    try:
        with open(path, "rb") as source:
            while left and (chunk := source.read(min(CHUNK_BYTES, left))):
                digest.update(chunk)
                left -= len(chunk)
            whole = not left and not source.read(1)
    except (FileNotFoundError, NotADirectoryError):
        return None, False
    except IsADirectoryError:
        raise _TreeChangedError(path) from None
    if left:
        raise _TreeChangedError(path)
    return "sha256:" + digest.hexdigest(), whole


def hash_files(files: Sequence[PlannedFile], cache: HashCache) -> list[str | None]:
    """Digest of each file (None: deleted since the walk listed it), hashing only those whose
    identity (as the walk's stat saw it) the cache does not know: no second stat. A file changed
    after the walk is hashed as it is now (the upload sends what it reads), and cached under the
    walk's identity, which it no longer has. Raises _TreeChangedError for a file that shrank."""
    # A digest of a racily clean file (flow.code_index.RACY_NS) is used, never cached.
    racy_after = time.time_ns() - RACY_NS
    keys = [f.source for f in files]  # absolute: plan_upload resolved the root
    known = cache.lookup(keys)
    digests: list[str | None] = []
    stale: list[int] = []
    for i, (key, planned) in enumerate(zip(keys, files, strict=True)):
        seen = known.get(key)
        if seen is not None and seen[0] == planned.identity and seen[1]:
            digests.append(seen[1])
        else:
            digests.append(None)
            stale.append(i)
    kept: list[tuple[str, str, str]] = []
    if stale:  # an unchanged tree hashes nothing, and skips importing a pool (and `logging`, its import)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(HASH_WORKERS) as pool:  # hashlib releases the GIL on large buffers
            hashed = pool.map(lambda i: _hash_file(files[i].source, files[i].size), stale)
            for i, (digest, whole) in zip(stale, hashed, strict=True):
                digests[i] = digest
                # A file that grew was hashed in part: not its digest.
                if digest is not None and whole and last_change_ns(files[i].identity) < racy_after:
                    kept.append((keys[i], files[i].identity, digest))
    cache.store(kept)
    return digests


def _without_deleted(plan: UploadPlan, digests: Sequence[str | None]) -> tuple[UploadPlan, list[str]]:
    """The plan without the files deleted since the walk (as if deleted before it)."""
    kept = [(f, d) for f, d in zip(plan.files, digests, strict=True) if d is not None]
    gone = len(plan.files) - len(kept)
    return plan._replace(files=tuple(f for f, _ in kept), excluded=plan.excluded + gone), [d for _, d in kept]


def _batches(
    blobs: Sequence[tuple[str, str | bytes, int]],
    progress: Progress | None,
    total: int,
    vanished: list[str] | None = None,
) -> Iterator[list[BlobChunk]]:
    """Packs blobs into batches (one message each) of about CHUNK_BYTES: many small files per
    message, a large file over several (one gRPC message per small file costs more than sending it)."""
    pending: list[BlobChunk] = []
    pending_bytes = 0
    sent = 0
    for digest, source, size in blobs:
        with contextlib.ExitStack() as stack:
            try:
                reader: IO[bytes] = (
                    io.BytesIO(source) if isinstance(source, bytes) else stack.enter_context(open(source, "rb"))
                )
            except FileNotFoundError:
                # Deleted since it was hashed. (An exception here would reach the caller only as
                # grpc's "Exception iterating requests!"; upload_code takes a new snapshot.)
                if vanished is not None:
                    vanished.append(str(source))
                return
            offset = 0
            while True:
                # Exactly `size` bytes: those hashed, even of a file that grew since.
                want = min(CHUNK_BYTES, size - offset)
                data = reader.read(want)
                if len(data) < want:  # shorter than when it was hashed: the snapshot is stale
                    if vanished is not None:
                        vanished.append(str(source))
                    return
                pending.append(BlobChunk(digest=digest, size=size, offset=offset, data=data))
                pending_bytes += len(data) + 100
                offset += len(data)
                if pending_bytes >= CHUNK_BYTES:
                    yield pending
                    sent += pending_bytes
                    pending, pending_bytes = [], 0
                    if progress is not None:
                        progress(min(sent, total), total)
                if offset >= size:
                    break
    if pending:
        yield pending
    if progress is not None:
        progress(total, total)


def _send(
    conn: DaemonConnection, plan: UploadPlan, digests: Sequence[str], progress: Progress | None
) -> tuple[str, int, int]:
    """Sends what flowd lacks; returns (manifest digest, blobs sent, bytes sent)."""
    from flow.domain.code.manifest import ManifestEntry, digest_of, manifest_bytes

    entries = [
        ManifestEntry(path=f.path, digest=d, size=f.size, executable=f.executable)
        for f, d in zip(plan.files, digests, strict=True)
    ]
    manifest = manifest_bytes(entries)
    manifest_digest = digest_of(manifest)
    lacking = conn.unary(find_missing_blobs_call(sorted({*digests, manifest_digest})), timeout=60)
    missing = set(lacking)
    blobs: list[tuple[str, str | bytes, int]] = []
    for f, d in zip(plan.files, digests, strict=True):
        if d in missing:
            blobs.append((d, f.source, f.size))
            missing.discard(d)  # the same content under two names goes once
    if manifest_digest in missing:
        blobs.append((manifest_digest, manifest, len(manifest)))
    total = sum(size for _, _, size in blobs)
    if blobs:
        vanished: list[str] = []
        try:
            conn.client_stream(upload_blobs_call(lambda: _batches(blobs, progress, total, vanished)), timeout=3600)
        except FlowError:
            if vanished:
                raise _TreeChangedError(vanished[0]) from None
            raise
        if vanished:
            raise _TreeChangedError(vanished[0])
    return manifest_digest, len(blobs), total


class _TreeChangedError(Exception):
    """A file of the snapshot was deleted or shrank while it was being hashed or sent."""


Submitted = TypeVar("Submitted")

_ATTEMPTS: Final = 3


def upload_code(
    conn: DaemonConnection,
    root: Path,
    cache_path: Path,
    progress: Progress | None = None,
    *,
    ask_daemon: bool = True,
) -> Upload:
    """Uploads the snapshot of `root` and returns its digest (only unseen files are sent).
    `ask_daemon=False`: an unchanged tree's last snapshot is named without asking flowd whether
    it still holds it whole (for `submitted_with_snapshot`, whose CreateTask checks it anyway)."""
    started = time.monotonic()
    root = _checked_root(root)
    cache = _hash_cache(cache_path)
    private = [cache_path.parent]
    key = index_key(root, private)
    unchanged = _unchanged_snapshot(conn, cache, key, root, ask_daemon)
    if unchanged is not None:
        return Upload(unchanged.snapshot, len(unchanged.files), unchanged.total_bytes, 0, 0, time.monotonic() - started)
    # A tree that changes under us (a running task writing into the project, an editor saving)
    # gets a fresh snapshot: files deleted meanwhile are left out, changed ones hashed again;
    # a file that grows (a log) goes as it was when listed.
    for attempt in range(_ATTEMPTS):
        walk = _walk_plan(root, None, private)
        plan = walk.plan
        try:
            plan, digests = _without_deleted(plan, hash_files(plan.files, cache))
            digest, sent_files, sent_bytes = _send(conn, plan, digests, progress)
            break
        except (_TreeChangedError, ValidationError) as exc:
            # ValidationError: flowd found a blob whose content no longer matches its digest.
            cache.store([(f.source, "", "") for f in plan.files])  # forget what we knew
            cache.store_tree(key, None)
            if attempt == _ATTEMPTS - 1:
                if isinstance(exc, ValidationError):
                    raise
                raise ValidationError(
                    f"code_root {root} kept changing during the upload ({exc} shrank or was "
                    f"deleted while it was being read, {_ATTEMPTS} times)",
                    suggestions=[
                        "stop what writes into the project while you submit, or list the files it "
                        "writes in .flowignore",
                        "or point code_root at a directory that does not change",
                    ],
                ) from None
    files = [(f.path, f.identity, f.source, f.size) for f in plan.files]
    index = recorded_index(
        walk.walked, files, digests, digest, walk.skipped_links, walk.private_prefixes, time.time_ns()
    )
    cache.store_tree(key, index)
    return Upload(
        digest=digest,
        files=len(plan.files),
        total_bytes=plan.total_size,
        sent_files=sent_files,
        sent_bytes=sent_bytes,
        seconds=time.monotonic() - started,
    )


def _unchanged_snapshot(
    conn: DaemonConnection, cache: HashCache, key: str, root: Path, ask_daemon: bool
) -> TreeIndex | None:
    """The snapshot last uploaded from `root`, when the tree is still exactly that and flowd still
    holds it whole (flow.code_index; asked only with `ask_daemon`); else None, and the upload walks."""
    index = cache.tree(key)
    if index is None or index.total_bytes > max_upload_bytes():
        return None

    def digest_of(path: str, size: int) -> str | None:
        try:
            digest, whole = _hash_file(path, size)
        except _TreeChangedError:
            return None
        return digest if whole else None

    checked_at = time.time_ns()  # before the checks: what changed after has a later time
    if not still_holds(index, root, digest_of):
        return None
    if ask_daemon and conn.unary(find_missing_blobs_call((), snapshots=[index.snapshot]), timeout=60):
        return None
    now_settled = settled(index, checked_at)
    if now_settled != index:  # racily clean entries have settled: no more hashing them each time
        cache.store_tree(key, now_settled)
    return index


def submitted_with_snapshot(
    conn: DaemonConnection,
    root: Path,
    cache_path: Path,
    progress: Progress | None,
    create: Callable[[str], Submitted],
) -> Submitted:
    """`create(digest)` with the snapshot of `root`: what submitting from a project does. An
    unchanged project's last snapshot is named without a FindMissingBlobs first (one round trip
    fewer for each task): CreateTask checks the snapshot anyway, and if flowd no longer holds it
    (collected by `flow daemon gc`), the project is uploaded again and `create` runs once more
    (a refused CreateTask created nothing)."""
    digest = upload_code(conn, root, cache_path, progress, ask_daemon=False).digest
    try:
        return create(digest)
    except ValidationError as exc:
        if not any(v.field == "code_digest" for v in exc.violations):
            raise
    return create(upload_code(conn, root, cache_path, progress).digest)


__all__ = ["Progress", "Upload", "UploadPlan", "mb", "plan_upload", "submitted_with_snapshot", "upload_code"]
