"""Lists the files of a code root that a task uploads: the effectful shell over `flow.domain.code.selection`.

The walk reads only what it needs: it never enters `.git` or a directory the rules exclude (git
cannot re-include anything below an excluded directory, so pruning changes no answer), reads the
ignore files of the directories it enters, and spots virtualenvs by their `pyvenv.cfg`. Directory
symlinks are not followed; symlinks (to anything) are listed as files, as git lists them. Other
special files (sockets, FIFOs, devices) are skipped. An unreadable directory raises OSError.

A tree may change while it is walked (submitting from /tmp, a task writing into the project):
what vanishes before the walk reads it is left out, as if it had never been there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import attrs

from flow.code_index import identity_of
from flow.domain.code.selection import (
    GIT_DIR,
    VIRTUALENV_MARKER,
    IgnoreRules,
    Selection,
    is_excluded,
    rules_file_name,
    select_paths,
)


@attrs.frozen
class CodeFile:
    """One uploaded file, as `lstat` saw it (a symlink keeps its own mode and size)."""

    path: str  # POSIX, relative to the code root
    size: int
    mode: int
    identity: str = ""  # what else lstat said (see `identity`): the upload's hash cache key

    @staticmethod
    def identity_of(status: os.stat_result) -> str:
        """Size, modification and change times, inode (flow.code_index.identity_of)."""
        return identity_of(status)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@attrs.frozen
class DirectorySeen:
    """A directory the walk entered, as it saw it: what tells the next upload it is unchanged
    (flow.code_index)."""

    path: str  # relative to the code root ("" for the root)
    identity: str  # its stat before its entries were listed (CodeFile.identity_of)
    names: tuple[str, ...]  # its entries, as listed


@attrs.frozen
class WalkResult:
    root: Path
    rules: IgnoreRules
    virtualenv_dirs: tuple[str, ...]  # directories holding a pyvenv.cfg, sorted
    pruned_dirs: tuple[str, ...]  # excluded directories the walk did not enter (and `.git`s), sorted
    selection: Selection  # over every file the walk listed (nothing inside `pruned_dirs`)
    files: tuple[CodeFile, ...]  # the included files, sorted by path
    directories: tuple[DirectorySeen, ...] = ()  # every directory entered
    ignore_files: tuple[tuple[str, str], ...] = ()  # (path, identity) of each ignore file read

    @property
    def total_size(self) -> int:
        return sum(file.size for file in self.files)


def walk_code_root(root: Path) -> WalkResult:
    """Walk `root` (a directory) and select the files to upload with it."""
    directories: list[DirectorySeen] = []
    root_entries = _scan(root, "", directories)
    file_name = rules_file_name([entry.name for entry in root_entries if entry.is_file(follow_symlinks=False)])
    rules = IgnoreRules(file_name)
    virtualenvs: list[str] = []
    pruned: list[str] = []
    listed: dict[str, os.DirEntry[str]] = {}
    ignore_files: list[tuple[str, str]] = []

    pending: list[tuple[str, list[os.DirEntry[str]]]] = [("", root_entries)]
    while pending:
        directory, entries = pending.pop()
        ignore_file = next((entry for entry in entries if entry.name == file_name), None)
        if ignore_file is not None and ignore_file.is_file(follow_symlinks=False):
            # git does not follow a symlinked .gitignore inside the tree; neither do we.
            read = _read_ignore_file(ignore_file.path)
            if read is not None:
                rules = rules.with_file(directory, read[1])
                ignore_files.append((f"{directory}/{file_name}" if directory else file_name, read[0]))
        for entry in entries:
            path = f"{directory}/{entry.name}" if directory else entry.name
            if entry.name == GIT_DIR:
                pruned.append(path)
            elif entry.is_dir(follow_symlinks=False):
                if is_excluded(path, rules, virtualenvs, is_dir=True):
                    pruned.append(path)
                    continue
                inside = _scan(Path(entry.path), path, directories)
                if any(child.name == VIRTUALENV_MARKER and not child.is_dir() for child in inside):
                    virtualenvs.append(path)
                    if is_excluded(path, rules, virtualenvs, is_dir=True):
                        pruned.append(path)
                        continue
                pending.append((path, inside))
            elif entry.is_symlink() or entry.is_file(follow_symlinks=False):
                listed[path] = entry

    selection = select_paths(list(listed), rules, virtualenvs)
    files = []
    for path in selection.included:
        try:
            status = listed[path].stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted since it was listed
            continue
        files.append(CodeFile(path, status.st_size, status.st_mode, CodeFile.identity_of(status)))
    return WalkResult(
        root,
        rules,
        tuple(sorted(virtualenvs)),
        tuple(sorted(pruned)),
        selection,
        tuple(files),
        tuple(directories),
        tuple(ignore_files),
    )


def _scan(directory: Path, path: str, seen: list[DirectorySeen]) -> list[os.DirEntry[str]]:
    """The directory's entries, noted in `seen` with its identity (taken first: a change while
    it is listed makes the next upload look again); none when it vanished (or became a file)
    since it was listed."""
    try:
        identity = CodeFile.identity_of(os.stat(directory))
        with os.scandir(directory) as scanned:
            entries = list(scanned)
    except (FileNotFoundError, NotADirectoryError):
        return []
    seen.append(DirectorySeen(path, identity, tuple(entry.name for entry in entries)))
    return entries


def _read_ignore_file(path: str) -> tuple[str, str] | None:
    """The file's identity (taken first, as for directories) and text; None when it vanished
    since it was listed."""
    try:
        with open(path, "rb") as handle:
            identity = CodeFile.identity_of(os.fstat(handle.fileno()))
            return identity, handle.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, IsADirectoryError):
        return None
