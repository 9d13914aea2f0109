"""The tree index: what the last upload of a code root saw, so that the next upload of an
unchanged tree costs one stat per file and directory and one question to flowd (as git's index
makes `git status` fast), instead of a walk, a selection and a manifest.

After an upload, the index records every directory the walk entered (its identity), every
ignore file it read, every uploaded file (its identity; a symlink's target and the target's
identity), the symlinks it left out, and the snapshot's digest. The next upload of the root with
the same private directories checks them, and the recorded snapshot is the answer when:
- every directory has its identity: adding, removing or renaming an entry changes a directory's
  mtime, so no file or directory appeared, and the walk would enter the same directories, read
  the same ignore files and find the same virtualenvs;
- every ignore file and uploaded file has its identity (size, mtime, ctime, inode: an edit,
  a chmod or a replacement changes one), and every symlink resolves as it did;
- what was racily clean when recorded (changed within RACY_NS of then) is
  checked by content: a directory's names are listed again, a file is hashed again; a racy
  ignore file is not trusted at all;
and flowd still holds the snapshot whole (FindMissingBlobs' `snapshots`). Anything else falls
back to the full upload, which records a new index. An index that still holds is right however
old it is: it describes the tree as it is now.
"""

from __future__ import annotations

import marshal
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from flow.code_walk import WalkResult

FORMAT: Final = 1  # bumped whenever the recorded shape changes: an older index is not read
# A file or directory changed within RACY_NS of when it was looked at may change again within the
# same tick of the filesystem's clock without its identity changing ("racily clean", as git calls
# it): what such an identity vouches for is used, never remembered.
RACY_NS: Final = 2_000_000_000  # coarser than any filesystem's timestamps (FAT: 2 s) and kernel tick


def identity_of(status: os.stat_result) -> str:
    """Size, modification and change times, inode: a file with the same identity is taken to hold
    the same bytes (as git's index does). CodeFile.identity_of, for the walk."""
    return f"{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}:{status.st_ino}"


def last_change_ns(identity: str) -> int:
    """The later of the modification and change times in a CodeFile identity."""
    _, mtime, ctime, _ = identity.split(":")
    return max(int(mtime), int(ctime))


# An uploaded file: (path relative to the root; identity of the file, or of a symlink's target;
# a symlink's resolved target, absolute, or "" for a file read at its own path; its digest when it
# was racily clean when recorded (then hashed again), else ""). Plain tuples: an index of 10,000
# files is read back in a few milliseconds.
IndexedFile = tuple[str, str, str, str]


class TreeIndex(NamedTuple):
    """A NamedTuple, not attrs: this module is on the path of `flow run` from a project that has
    not changed, and importing attrs would cost that command a third of its time."""

    snapshot: str  # the manifest digest
    total_bytes: int
    directories: tuple[tuple[str, str, tuple[str, ...] | None], ...]  # (path, identity, names if racy)
    ignore_files: tuple[tuple[str, str], ...]  # (path, identity)
    files: tuple[IndexedFile, ...]  # in manifest order
    skipped_links: tuple[str, ...]  # symlinks left out: dangling, or to something not a file


def index_key(root: Path, private: Sequence[Path]) -> str:
    """What an index is recorded under: the resolved root and the private directories left out."""
    return "\0".join([str(root), *sorted(str(p) for p in private)])


def recorded_index(
    walked: WalkResult,
    files: Sequence[tuple[str, str, str, int]],
    digests: Sequence[str],
    snapshot: str,
    skipped_links: Sequence[str],
    private_prefixes: Sequence[str],
    now_ns: int,
) -> TreeIndex | None:
    """The index of an upload: `files` are (path, identity, source, size) of the uploaded files
    in manifest order with their `digests`; `now_ns` a time taken after every stat. None when an
    ignore file was racily clean (the rules it gave cannot be vouched for)."""
    racy_after = now_ns - RACY_NS
    if any(last_change_ns(identity) >= racy_after for _, identity in walked.ignore_files):
        return None
    prefix = f"{walked.root}/" if str(walked.root) != "/" else "/"
    directories = tuple(
        (seen.path, seen.identity, tuple(sorted(seen.names)) if last_change_ns(seen.identity) >= racy_after else None)
        for seen in walked.directories
        if not any(f"{seen.path}/".startswith(inside) for inside in private_prefixes)
    )
    indexed = tuple(
        (
            path,
            identity,
            "" if source == prefix + path else source,
            digest if last_change_ns(identity) >= racy_after else "",
        )
        for (path, identity, source, _), digest in zip(files, digests, strict=True)
    )
    total = sum(size for *_, size in files)
    return TreeIndex(snapshot, total, directories, walked.ignore_files, indexed, tuple(skipped_links))


def settled(index: TreeIndex, now_ns: int) -> TreeIndex:
    """`index` after `still_holds` vouched for it at `now_ns`, with what was racily clean when it
    was recorded and has not changed since RACY_NS ago no longer checked by content: it was just
    checked, and a change from now on gives it a new identity."""
    racy_after = now_ns - RACY_NS
    directories = tuple(
        (path, identity, names if names is not None and last_change_ns(identity) >= racy_after else None)
        for path, identity, names in index.directories
    )
    files = tuple(
        (path, identity, source, digest if digest and last_change_ns(identity) >= racy_after else "")
        for path, identity, source, digest in index.files
    )
    return index._replace(directories=directories, files=files)


def encode(index: TreeIndex) -> bytes:
    return marshal.dumps(
        (
            FORMAT,
            index.snapshot,
            index.total_bytes,
            index.directories,
            index.ignore_files,
            index.files,
            index.skipped_links,
        )
    )


def decode(data: bytes) -> TreeIndex | None:
    """The index in `data`; None for one of another format or damaged (then the upload walks)."""
    try:
        form, snapshot, total, directories, ignore_files, files, skipped = marshal.loads(data)
    except (ValueError, TypeError, EOFError):
        return None
    # marshal gives back the tuples and strings it was given; checked all the same, as cheaply
    # as a check can be (`still_holds` compares these strings with what stat says).
    shapes = (
        form == FORMAT
        and isinstance(snapshot, str)
        and isinstance(total, int)
        and all(type(d) is tuple and len(d) == 3 and type(d[0]) is type(d[1]) is str for d in directories)
        and all(type(f) is tuple and len(f) == 2 and type(f[0]) is type(f[1]) is str for f in ignore_files)
        and type(files) is tuple
        and all(type(f) is tuple and len(f) == 4 for f in files)
        and all(type(p) is str for p in skipped)
    )
    if not shapes:
        return None
    return TreeIndex(snapshot, total, directories, ignore_files, files, skipped)


def _identity(path: str, follow: bool = False) -> str | None:
    try:
        return identity_of(os.stat(path) if follow else os.lstat(path))
    except OSError:
        return None


def still_holds(index: TreeIndex, root: Path, digest_of: Callable[[str, int], str | None]) -> bool:
    """Whether the tree under `root` is still the one `index` recorded. `digest_of(path, size)`
    hashes a racily clean file again (None: it is not `size` bytes any more)."""
    prefix = f"{root}/" if str(root) != "/" else "/"
    for path, identity, names in index.directories:
        where = prefix + path if path else str(root)
        if _identity(where, follow=True) != identity:
            return False
        if names is not None:
            try:
                if tuple(sorted(os.listdir(where))) != names:
                    return False
            except OSError:
                return False
    for path, identity in index.ignore_files:
        if _identity(prefix + path) != identity:
            return False
    lstat = os.lstat
    for path, identity, source, racy_digest in index.files:
        if source:
            try:
                if os.path.realpath(prefix + path, strict=True) != source:
                    return False
            except (OSError, ValueError):
                return False
            if _identity(source, follow=True) != identity:
                return False
        else:
            try:
                status = lstat(prefix + path)
            except (OSError, ValueError):  # ValueError: a NUL in a damaged index's path
                return False
            # identity_of, spelled out: this loop is the fast path, and a call per file costs.
            if f"{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}:{status.st_ino}" != identity:
                return False
        if racy_digest and digest_of(source or prefix + path, int(identity.split(":")[0])) != racy_digest:
            return False
    for path in index.skipped_links:
        try:
            if os.path.isfile(os.path.realpath(prefix + path, strict=True)):
                return False  # it names a file now: the walk would upload it
        except OSError:
            continue  # still dangling
    return True


__all__ = ["IndexedFile", "TreeIndex", "decode", "encode", "index_key", "recorded_index", "settled", "still_holds"]
