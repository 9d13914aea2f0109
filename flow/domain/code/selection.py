"""Which files of a code root are uploaded with a task: ignore files with git's exact semantics.

Everything here is pure: functions take POSIX relative paths and the text of ignore files, and
never touch the file system (`flow.code_walk` is the effectful walker that feeds them).

Where the rules come from
-------------------------
- If the code root has a `.flowignore`, files named `.flowignore` are read at every depth and
  `.gitignore` files are not read at all (a `.flowignore` replaces git's rules, it does not add
  to them).
- Otherwise `.gitignore` files are read at every depth, exactly like git.

`rules_file_name` makes that choice from the names of the regular files at the root.

Semantics (those of git 2.x, `dir.c` and `wildmatch.c`)
--------------------------------------------------------
- Blank lines and lines starting with `#` are ignored; `\\#` and `\\!` escape a leading `#`
  or `!`; trailing spaces are dropped unless escaped with a backslash; a trailing CR is dropped;
  a UTF-8 BOM at the start of the file is skipped.
- `!pattern` re-includes; a trailing `/` matches directories only; a pattern with a `/` at the
  start or in the middle is anchored to the directory of its ignore file, one without matches the
  name at any depth below it. `*`, `?` and `[...]` (ranges, `!`/`^` negation, `[:alpha:]` classes)
  never match `/`; `**/`, `/**/` and `/**` match across directories. Matching is on bytes (UTF-8),
  case-sensitive, as git does on Linux.
- For a path, ignore files are consulted from the deepest directory to the root and, inside one
  file, from the last line to the first; the first pattern that matches decides.
- A directory that is excluded is never entered, so nothing below it can be re-included, whatever
  a later or deeper `!pattern` says (and its own ignore file is not read).

Patterns are compiled here, following git's wildmatch, rather than with `pathspec`: its
GitIgnoreSpec (1.1.1) re-includes files under excluded directories (`d/` then `!d/f`), reads
`a/**/` and `a**/b` differently from git, and raises on a trailing backslash. The differential test
in tests/domain/test_code_selection.py holds this module to `git ls-files` on random trees.

Defaults (the only departure from git's matching)
-------------------------------------------------
Flow adds rules users expect, with the LOWEST precedence, as if they were git's
`core.excludesFile`: any rule of the user's can override them (`!node_modules/` uploads
`node_modules`). They are `DEFAULT_PATTERNS`, plus every directory that holds a `pyvenv.cfg` (a
virtualenv under any name; the walker says which directories those are). `.git` is excluded at
every depth, as a file or a directory, and cannot be re-included; the rest of a nested repository
is selected like any other directory (git would list it as one opaque entry).

Scope: the snapshot is decided by the tree alone. Only ignore files inside the code root count
(not `.git/info/exclude`, `core.excludesFile`, or a `.gitignore` above the root), and whether git
tracks a file does not matter (a tracked file that a rule ignores is still left out).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence

import attrs

GITIGNORE = ".gitignore"
FLOWIGNORE = ".flowignore"
VIRTUALENV_MARKER = "pyvenv.cfg"
GIT_DIR = ".git"

DEFAULT_PATTERNS: tuple[str, ...] = (
    "__pycache__/",
    "*.pyc",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    "node_modules/",
    ".DS_Store",
    ".venv/",
    "venv/",
)
DEFAULTS_SOURCE = "flow's defaults"
GIT_DIR_RULE = "git"
VIRTUALENV_RULE = "virtualenv"

_UTF8_BOM = b"\xef\xbb\xbf"
_GLOB_SPECIAL = frozenset(b"*?[\\")
_SLASH = ord("/")

# git's own ctype tables (ASCII only), as wildmatch.c uses them.
_DIGIT = frozenset(range(0x30, 0x3A))
_UPPER = frozenset(range(0x41, 0x5B))
_LOWER = frozenset(range(0x61, 0x7B))
_ALPHA = _UPPER | _LOWER
_ALNUM = _ALPHA | _DIGIT
_SPACE = frozenset(b" \t\n\r")
_PRINT = frozenset(range(0x20, 0x7F))
_GRAPH = _PRINT - _SPACE
_CHAR_CLASSES: dict[bytes, frozenset[int]] = {
    b"alnum": _ALNUM,
    b"alpha": _ALPHA,
    b"blank": frozenset(b" \t"),
    b"cntrl": frozenset(range(0x20)) | {0x7F},
    b"digit": _DIGIT,
    b"graph": _GRAPH,
    b"lower": _LOWER,
    b"print": _PRINT,
    b"punct": _GRAPH - _ALNUM,
    b"space": _SPACE,
    b"upper": _UPPER,
    b"xdigit": _DIGIT | frozenset(b"abcdefABCDEF"),
}


@attrs.frozen
class IgnorePattern:
    """One effective line of an ignore file."""

    source: str  # the ignore file, relative to the code root ("a/.gitignore"), or DEFAULTS_SOURCE
    line: int  # 1-based line number in that file
    text: str  # the line as written, without its line ending
    negated: bool  # `!pattern`: re-includes what it matches
    directory_only: bool  # `pattern/`: matches directories only


@attrs.frozen
class IgnoreFile:
    """The compiled patterns of one ignore file, which apply below `directory` ("" is the root)."""

    directory: str
    source: str
    patterns: tuple[IgnorePattern, ...]
    # One alternation per kind of path, last line first, so the first alternative that matches is
    # the pattern git would pick; group k of the alternation is pattern k - 1 of the tuple beside it.
    _for_files: re.Pattern[bytes] | None = attrs.field(eq=False, repr=False)
    _file_patterns: tuple[IgnorePattern, ...] = attrs.field(eq=False, repr=False)
    _for_dirs: re.Pattern[bytes] | None = attrs.field(eq=False, repr=False)
    _dir_patterns: tuple[IgnorePattern, ...] = attrs.field(eq=False, repr=False)

    def last_match(self, path: bytes, start: int = 0, *, is_dir: bool = False) -> IgnorePattern | None:
        """The pattern that decides for `path[start:]` (a path below `directory`), if any matches."""
        if is_dir:
            regex, patterns = self._for_dirs, self._dir_patterns
        else:
            regex, patterns = self._for_files, self._file_patterns
        if regex is None:
            return None
        found = regex.fullmatch(path, start)
        if found is None:
            return None
        assert found.lastindex is not None
        return patterns[found.lastindex - 1]


@attrs.frozen
class IgnoreRules:
    """Every ignore file that applies under a code root, keyed by the directory that holds it."""

    file_name: str = GITIGNORE
    files: tuple[IgnoreFile, ...] = ()
    _by_directory: Mapping[str, IgnoreFile] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_directory", {file.directory: file for file in self.files})

    @classmethod
    def from_texts(cls, texts: Mapping[str, str], *, file_name: str = GITIGNORE) -> IgnoreRules:
        """Rules from `{directory relative to the root ("" for the root): ignore file text}`."""
        files = [
            parse_ignore_file(_normalize_directory(directory), text, file_name) for directory, text in texts.items()
        ]
        return cls(file_name, tuple(sorted(files, key=lambda file: file.directory)))

    def with_file(self, directory: str, text: str) -> IgnoreRules:
        """These rules plus (or with a replaced) ignore file in `directory`."""
        added = parse_ignore_file(_normalize_directory(directory), text, self.file_name)
        kept = [file for file in self.files if file.directory != added.directory]
        return IgnoreRules(self.file_name, tuple(sorted([*kept, added], key=lambda file: file.directory)))

    def file_in(self, directory: str) -> IgnoreFile | None:
        return self._by_directory.get(directory)


@attrs.frozen
class Selection:
    """The outcome over a list of files: what is uploaded and what is left behind, each sorted."""

    included: tuple[str, ...]
    excluded: tuple[str, ...]


@attrs.frozen
class Exclusion:
    """Why a path is left out: the rule that excludes it, or that excludes a directory above it."""

    path: str
    excluded_path: str  # `path` itself, or the directory above it that was excluded
    rule: str  # the pattern as written, or what a built-in rule is
    source: str  # ignore file relative to the root, DEFAULTS_SOURCE, GIT_DIR_RULE or VIRTUALENV_RULE
    line: int | None  # line in `source` when it is an ignore file

    def describe(self) -> str:
        if self.excluded_path == self.path:
            head = f"{self.path}: excluded"
        else:
            head = f"{self.path}: excluded with its directory {self.excluded_path}/"
        if self.source == DEFAULTS_SOURCE:
            return f"{head} by '{self.rule}' ({DEFAULTS_SOURCE}; '!{self.rule}' in an ignore file uploads it)"
        if self.line is None:
            return f"{head} ({self.rule})"
        return f"{head} by '{self.rule}' ({self.source}:{self.line})"


def rules_file_name(root_file_names: Collection[str]) -> str:
    """The ignore files honored under a root whose regular files are `root_file_names`."""
    return FLOWIGNORE if FLOWIGNORE in root_file_names else GITIGNORE


def parse_ignore_file(directory: str, text: str, file_name: str = GITIGNORE) -> IgnoreFile:
    """Compile the text of the ignore file `file_name` held by `directory` ("" for the root)."""
    source = f"{directory}/{file_name}" if directory else file_name
    return _compile_file(directory, source, text)


def select_paths(files: Sequence[str], rules: IgnoreRules, virtualenv_dirs: Collection[str] = ()) -> Selection:
    """Split `files` (POSIX paths relative to the code root, of files and symlinks) into uploaded and not.

    `virtualenv_dirs` are the directories that hold a `pyvenv.cfg`. Raises ValueError on a path
    that is absolute or not normalized.
    """
    decider = _Decider(rules, virtualenv_dirs)
    included: list[str] = []
    excluded: list[str] = []
    for path in files:
        _check_path(path)
        (excluded if decider.file_excluded(path) else included).append(path)
    included.sort()
    excluded.sort()
    return Selection(tuple(included), tuple(excluded))


def exclusion(
    path: str, rules: IgnoreRules, virtualenv_dirs: Collection[str] = (), *, is_dir: bool = False
) -> Exclusion | None:
    """Why `path` is excluded (the first excluded directory above it, else the path itself), or None."""
    _check_path(path)
    decider = _Decider(rules, virtualenv_dirs)
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        current = "/".join(parts[:depth])
        current_is_dir = is_dir or depth < len(parts)
        found = decider.decide(current, is_dir=current_is_dir)
        if found is not None:
            return attrs.evolve(found, path=path)
    return None


def explain(
    path: str, rules: IgnoreRules, virtualenv_dirs: Collection[str] = (), *, is_dir: bool = False
) -> str | None:
    """A one-line reason why `path` is not uploaded (file and line of the rule), or None if it is."""
    found = exclusion(path, rules, virtualenv_dirs, is_dir=is_dir)
    return None if found is None else found.describe()


def is_excluded(path: str, rules: IgnoreRules, virtualenv_dirs: Collection[str] = (), *, is_dir: bool = False) -> bool:
    """Whether `path` (a file, or a directory with `is_dir`) is left out, directories above it included."""
    return exclusion(path, rules, virtualenv_dirs, is_dir=is_dir) is not None


# -- deciding ---------------------------------------------------------------------------------------


class _Decider:
    """Decisions for one rule set, remembering each directory's so every directory is decided once."""

    def __init__(self, rules: IgnoreRules, virtualenv_dirs: Collection[str]) -> None:
        self._rules = rules
        self._virtualenvs = frozenset(_normalize_directory(directory) for directory in virtualenv_dirs)
        self._dir_excluded: dict[str, bool] = {"": False}
        self._stacks: dict[str, tuple[tuple[IgnoreFile, int], ...]] = {}

    def file_excluded(self, path: str) -> bool:
        parent, _, name = path.rpartition("/")
        if self.dir_excluded(parent) or name == GIT_DIR:
            return True
        found = self._last_match(path, parent, is_dir=False)
        return found is not None and not found.negated

    def dir_excluded(self, directory: str) -> bool:
        known = self._dir_excluded.get(directory)
        if known is not None:
            return known
        parent, _, name = directory.rpartition("/")
        excluded = self.dir_excluded(parent) or name == GIT_DIR or self._own_decision(directory, parent) is not None
        self._dir_excluded[directory] = excluded
        return excluded

    def decide(self, path: str, *, is_dir: bool) -> Exclusion | None:
        """Why `path` itself is excluded, assuming the directories above it are not."""
        parent, _, name = path.rpartition("/")
        if name == GIT_DIR:
            return Exclusion(path, path, ".git is never uploaded", GIT_DIR_RULE, None)
        if is_dir:
            return self._own_decision(path, parent)
        found = self._last_match(path, parent, is_dir=False)
        if found is None or found.negated:
            return None
        return Exclusion(path, path, found.text, found.source, found.line)

    def _own_decision(self, directory: str, parent: str) -> Exclusion | None:
        found = self._last_match(directory, parent, is_dir=True)
        if found is not None:
            return None if found.negated else Exclusion(directory, directory, found.text, found.source, found.line)
        if directory in self._virtualenvs:
            return Exclusion(directory, directory, f"a virtualenv: it holds {VIRTUALENV_MARKER}", VIRTUALENV_RULE, None)
        return None

    def _last_match(self, path: str, parent: str, *, is_dir: bool) -> IgnorePattern | None:
        encoded = path.encode("utf-8", "surrogateescape")
        for ignore_file, offset in self._stack(parent):
            found = ignore_file.last_match(encoded, offset, is_dir=is_dir)
            if found is not None:
                return found
        return None

    def _stack(self, directory: str) -> tuple[tuple[IgnoreFile, int], ...]:
        """Ignore files that apply to entries of `directory`, deepest first, then the defaults."""
        known = self._stacks.get(directory)
        if known is not None:
            return known
        if directory:
            parent = directory.rpartition("/")[0]
            own = self._rules.file_in(directory)
            above = self._stack(parent)
            offset = len(directory.encode("utf-8", "surrogateescape")) + 1
            stack = above if own is None else ((own, offset), *above)
        else:
            root = self._rules.file_in("")
            stack = ((_DEFAULT_FILE, 0),) if root is None else ((root, 0), (_DEFAULT_FILE, 0))
        self._stacks[directory] = stack
        return stack


def _check_path(path: str) -> None:
    wrapped = f"/{path}/"
    if not path or "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise ValueError(f"not a normalized relative POSIX path: {path!r}")


def _normalize_directory(directory: str) -> str:
    stripped = directory.strip("/")
    if stripped in ("", "."):
        return ""
    _check_path(stripped)
    return stripped


# -- compiling: git's add_patterns_from_buffer, parse_path_pattern and wildmatch --------------------


def _compile_file(directory: str, source: str, text: str) -> IgnoreFile:
    data = text.encode("utf-8", "surrogateescape")
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    patterns: list[IgnorePattern] = []
    for_files: list[tuple[IgnorePattern, bytes]] = []
    for_dirs: list[tuple[IgnorePattern, bytes]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw or raw.startswith(b"#"):
            continue
        written = raw[:-1] if raw.endswith(b"\r") else raw
        # git reads C strings: a NUL byte ends the line.
        compiled = _compile_pattern(_trim_trailing_spaces(written.partition(b"\0")[0]))
        if compiled is None:
            continue
        negated, directory_only, regex = compiled
        pattern = IgnorePattern(source, number, written.decode("utf-8", "surrogateescape"), negated, directory_only)
        patterns.append(pattern)
        for_dirs.append((pattern, regex))
        if not directory_only:
            for_files.append((pattern, regex))
    file_regex, file_patterns = _alternation(for_files)
    dir_regex, dir_patterns = _alternation(for_dirs)
    return IgnoreFile(directory, source, tuple(patterns), file_regex, file_patterns, dir_regex, dir_patterns)


def _alternation(
    alternatives: list[tuple[IgnorePattern, bytes]],
) -> tuple[re.Pattern[bytes] | None, tuple[IgnorePattern, ...]]:
    """One regex trying the last line first; its group k is the k-th pattern of the tuple."""
    if not alternatives:
        return None, ()
    last_first = alternatives[::-1]
    regex = re.compile(b"|".join(b"(%s)" % regex for _, regex in last_first), re.DOTALL)
    return regex, tuple(pattern for pattern, _ in last_first)


def _trim_trailing_spaces(line: bytes) -> bytes:
    """git's trim_trailing_spaces: drop unescaped trailing spaces."""
    last_space: int | None = None
    index = 0
    while index < len(line):
        char = line[index]
        if char == 0x20:
            if last_space is None:
                last_space = index
        elif char == 0x5C:  # backslash: the next byte is escaped
            index += 1
            if index >= len(line):
                return line
            last_space = None
        else:
            last_space = None
        index += 1
    return line if last_space is None else line[:last_space]


def _compile_pattern(line: bytes) -> tuple[bool, bool, bytes] | None:
    """(negated, directory_only, regex to fullmatch against the path relative to the file's directory)."""
    negated = line.startswith(b"!")
    body = line[1:] if negated else line
    directory_only = body.endswith(b"/")
    if directory_only:
        body = body[:-1]
    if b"/" not in body:
        # No slash: git matches the basename, at any depth.
        name_regex = _translate(body, basename=True, prefix=0)
        return None if name_regex is None else (negated, directory_only, b"(?:.*/)?" + name_regex)
    if body.startswith(b"/"):
        body = body[1:]
    # git strips the longest literal prefix before calling wildmatch, so a `**` right after it
    # counts as "at the start of the pattern" (`d/ab**/x` matches `d/abc/e/x`).
    prefix = next((index for index, char in enumerate(body) if char in _GLOB_SPECIAL), len(body))
    path_regex = _translate(body, basename=False, prefix=prefix)
    return None if path_regex is None else (negated, directory_only, path_regex)


def _translate(pattern: bytes, *, basename: bool, prefix: int) -> bytes | None:
    """A regex equivalent to git's wildmatch(pattern, text, WM_PATHNAME), or None if it never matches."""
    out: list[bytes] = []
    index = 0
    end = len(pattern)
    while index < end:
        char = pattern[index]
        if char == 0x5C:  # backslash
            if index + 1 >= end:
                return None
            out.append(re.escape(pattern[index + 1 : index + 2]))
            index += 2
        elif char == 0x3F:  # ?
            out.append(b"[^/]")
            index += 1
        elif char == 0x2A:  # *
            stop = index
            while stop < end and pattern[stop] == 0x2A:
                stop += 1
            if stop - index >= 2 and not basename:
                at_start = index in (0, prefix) or pattern[index - 1] == _SLASH
                if at_start and stop == end:
                    out.append(b".*")
                    index = stop
                    continue
                if at_start and pattern[stop] == _SLASH:
                    out.append(b"(?:.*/)?")
                    index = stop + 1
                    continue
                if at_start and pattern[stop : stop + 2] == b"\\/":
                    out.append(b".*")  # no zero-directory shortcut before an escaped slash
                    index = stop
                    continue
            out.append(b"[^/]*")
            index = stop
        elif char == 0x5B:  # [
            bracket = _bracket(pattern, index)
            if bracket is None:
                return None
            members, index = bracket
            if not members:
                return None
            out.append(b"[" + b"".join(b"\\x%02x" % member for member in sorted(members)) + b"]")
        else:
            out.append(re.escape(pattern[index : index + 1]))
            index += 1
    return b"".join(out)


def _bracket(pattern: bytes, start: int) -> tuple[set[int], int] | None:
    """Parse `[...]` at `start` as wildmatch does: (bytes it matches, index after it), None if malformed."""
    end = len(pattern)
    index = start + 1
    if index >= end:
        return None
    negated = pattern[index] in b"!^"
    if negated:
        index += 1
    if index >= end:
        return None
    members: set[int] = set()
    previous = 0
    char = pattern[index]
    while True:
        if char == 0x5C:  # backslash: the next byte is literal
            index += 1
            if index >= end:
                return None
            char = pattern[index]
            members.add(char)
        elif char == 0x2D and previous and index + 1 < end and pattern[index + 1] != 0x5D:  # a range
            index += 1
            char = pattern[index]
            if char == 0x5C:
                index += 1
                if index >= end:
                    return None
                char = pattern[index]
            members.update(range(previous, char + 1))
            char = 0
        elif char == 0x5B and index + 1 < end and pattern[index + 1] == 0x3A:  # [:class:]
            name_start = index + 2
            close = pattern.find(b"]", name_start)
            if close < 0:
                return None
            if close - name_start - 1 < 0 or pattern[close - 1] != 0x3A:
                members.add(char)  # not a class: a literal '['
            else:
                chars = _CHAR_CLASSES.get(pattern[name_start : close - 1])
                if chars is None:
                    return None
                members.update(chars)
                index = close
                char = 0
        else:
            members.add(char)
        previous = char
        index += 1
        if index >= end:
            return None
        char = pattern[index]
        if char == 0x5D:
            break
    matching = (set(range(256)) - members) if negated else members
    matching.discard(_SLASH)
    return matching, index + 1


def _defaults_text(patterns: Iterable[str]) -> str:
    return "\n".join(patterns) + "\n"


_DEFAULT_FILE = _compile_file("", DEFAULTS_SOURCE, _defaults_text(DEFAULT_PATTERNS))
