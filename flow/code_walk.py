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
        """Size, modification and change times, inode: a file with the same identity is taken
        to hold the same bytes (as git's index does)."""
        return f"{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}:{status.st_ino}"

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@attrs.frozen
class WalkResult:
    root: Path
    rules: IgnoreRules
    virtualenv_dirs: tuple[str, ...]  # directories holding a pyvenv.cfg, sorted
    pruned_dirs: tuple[str, ...]  # excluded directories the walk did not enter (and `.git`s), sorted
    selection: Selection  # over every file the walk listed (nothing inside `pruned_dirs`)
    files: tuple[CodeFile, ...]  # the included files, sorted by path

    @property
    def total_size(self) -> int:
        return sum(file.size for file in self.files)


def walk_code_root(root: Path) -> WalkResult:
    """Walk `root` (a directory) and select the files to upload with it."""
    root_entries = _scan(root)
    file_name = rules_file_name([entry.name for entry in root_entries if entry.is_file(follow_symlinks=False)])
    rules = IgnoreRules(file_name)
    virtualenvs: list[str] = []
    pruned: list[str] = []
    listed: dict[str, os.DirEntry[str]] = {}

    pending: list[tuple[str, list[os.DirEntry[str]]]] = [("", root_entries)]
    while pending:
        directory, entries = pending.pop()
        ignore_file = next((entry for entry in entries if entry.name == file_name), None)
        if ignore_file is not None and ignore_file.is_file(follow_symlinks=False):
            # git does not follow a symlinked .gitignore inside the tree; neither do we.
            text = _read_text(ignore_file.path)
            if text is not None:
                rules = rules.with_file(directory, text)
        for entry in entries:
            path = f"{directory}/{entry.name}" if directory else entry.name
            if entry.name == GIT_DIR:
                pruned.append(path)
            elif entry.is_dir(follow_symlinks=False):
                if is_excluded(path, rules, virtualenvs, is_dir=True):
                    pruned.append(path)
                    continue
                inside = _scan(Path(entry.path))
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
    return WalkResult(root, rules, tuple(sorted(virtualenvs)), tuple(sorted(pruned)), selection, tuple(files))


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    """The directory's entries; none when it vanished (or became a file) since it was listed."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_text(path: str) -> str | None:
    """The file's text; None when it vanished since it was listed."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, IsADirectoryError):
        return None
