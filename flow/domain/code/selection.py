"""Which files of a code root are uploaded with a task: ignore files with git's semantics.

Everything here is pure: functions take POSIX relative paths and the text of ignore files, and
never touch the file system (`flow.code_walk` is the effectful walker that feeds them).

Where the rules come from
-------------------------
- If the code root has a `.flowignore`, files named `.flowignore` are read at every depth and
  `.gitignore` files are not read at all (a `.flowignore` replaces git's rules, it does not add
  to them).
- Otherwise `.gitignore` files are read at every depth, exactly like git.

`rules_file_name` makes that choice from the names of the regular files at the root.

Semantics (those of git 2.x)
----------------------------
Patterns are compiled by `pathspec` (its GitIgnoreSpec); this module adds what git does around
them, which pathspec leaves to its caller or reads otherwise:
- For a path, ignore files are consulted from the deepest directory to the root and, inside one
  file, from the last line to the first; the first pattern that matches the path itself decides
  (pathspec's patterns also match everything below a matching directory; git never asks about
  those paths, see the next point, so such matches are not counted).
- A directory that is excluded is never entered, so nothing below it can be re-included, whatever
  a later or deeper `!pattern` says (and its own ignore file is not read).
- `pattern/` matches directories only: the pattern without its slash, asked about directories.
- Matching is on bytes (UTF-8), case-sensitive, as git does on Linux: `?` is one byte.
- Where pathspec 1.1.1 reads a line otherwise than git, the line is rewritten before pathspec
  sees it (`_pathspec_line` and the functions it calls, each naming the case it fixes; each case
  is a `pathspec-*` row of the table in tests/domain/test_code_selection.py, checked against git,
  and the differential test holds the whole to `git ls-files` on random trees).

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

import itertools
import re
from collections.abc import Collection, Mapping, Sequence

import attrs
from pathspec import GitIgnoreSpec

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

_UTF8_BOM = "\ufeff"
_GLOBS = frozenset("*?[\\")
_ANY_DIRS = "(?:.+/)?"  # how pathspec begins a pattern that matches a name at any depth
_DIR_MARK = "(?P<ps_d>/)"  # pathspec's mark of a match that ends at a directory above the path
_WHOLE_SEGMENT_STARS = re.compile(r"(?:(?<=/)|^)\*{3,}(?=/|$)")
# POSIX classes as git's wildmatch knows them (ASCII only).
_DIGIT = frozenset(range(0x30, 0x3A))
_ALPHA = frozenset(range(0x41, 0x5B)) | frozenset(range(0x61, 0x7B))
_SPACE = frozenset(b" \t\n\r")
_PRINT = frozenset(range(0x20, 0x7F))
_CHAR_CLASSES: dict[str, frozenset[int]] = {
    "alnum": _ALPHA | _DIGIT,
    "alpha": _ALPHA,
    "blank": frozenset(b" \t"),
    "cntrl": frozenset(range(0x20)) | {0x7F},
    "digit": _DIGIT,
    "graph": _PRINT - _SPACE,
    "lower": frozenset(range(0x61, 0x7B)),
    "print": _PRINT,
    "punct": _PRINT - _SPACE - _ALPHA - _DIGIT,
    "space": _SPACE,
    "upper": frozenset(range(0x41, 0x5B)),
    "xdigit": _DIGIT | frozenset(b"abcdefABCDEF"),
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
    # Last line first: (pattern, its regexes from pathspec); the first that matches decides.
    _matchers: tuple[tuple[IgnorePattern, tuple[re.Pattern[str], ...]], ...] = attrs.field(eq=False, repr=False)
    # Every regex in one: most paths match none, and one search says so.
    _any: re.Pattern[str] | None = attrs.field(eq=False, repr=False)

    def last_match(self, path: str, *, is_dir: bool = False) -> IgnorePattern | None:
        """The pattern that decides for `path` (relative to `directory`, in `_git_text` form)."""
        if self._any is None or self._any.match(path) is None:
            return None
        for pattern, regexes in self._matchers:
            if pattern.directory_only and not is_dir:
                continue
            for regex in regexes:
                found = regex.search(path)  # as pathspec matches (its regexes anchor themselves)
                # A match that ends at a directory above `path` (pathspec's "ps_d" mark) is
                # not one: git matches a pattern against the path itself.
                if found is not None and not found.groupdict().get("ps_d"):
                    return pattern
        return None


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
        text = _git_text(path)
        for ignore_file, offset in self._stack(parent):
            found = ignore_file.last_match(text[offset:], is_dir=is_dir)
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
            offset = len(_git_text(directory)) + 1
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


def _git_text(text: str) -> str:
    """`text` as git sees it, one character per UTF-8 byte: what pathspec's regexes match on, so
    that `?` and `[...]` take one byte, as in git (`?` does not match `é`, two bytes)."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


# -- compiling: git's reading of a line, then pathspec's patterns -----------------------------------


def _compile_file(directory: str, source: str, text: str) -> IgnoreFile:
    patterns: list[IgnorePattern] = []
    bodies: list[tuple[IgnorePattern, list[str]]] = []
    for number, raw in enumerate(text.removeprefix(_UTF8_BOM).split("\n"), start=1):
        if not raw or raw.startswith("#"):
            continue
        written = raw.removesuffix("\r")
        # git reads C strings: a NUL byte ends the line.
        line = _trim_trailing_spaces(_git_text(written.partition("\0")[0]))
        negated = line.startswith("!")
        body = line[1:] if negated else line
        directory_only = body.endswith("/")
        alternatives = _pathspec_line(body[:-1] if directory_only else body)
        if not alternatives:
            continue
        pattern = IgnorePattern(source, number, written, negated, directory_only)
        patterns.append(pattern)
        bodies.append((pattern, alternatives))
    compiled = iter(_regexes([alternative for _, alternatives in bodies for alternative in alternatives]))
    matchers = []
    for pattern, alternatives in bodies:
        regexes = tuple(regex for regex in (next(compiled) for _ in alternatives) if regex is not None)
        if regexes:
            matchers.append((pattern, regexes))
    # One regex anchored at the start (`match`) that finds what any of them would (`search`).
    every = [regex.pattern.replace(_DIR_MARK, "/") for _, regexes in matchers for regex in regexes]
    starts = [each[1:] if each.startswith("^") else ".*?" + each for each in every]
    # Names at any depth (`(?:.+/)?name`) share one look for the directories before the name.
    names = [each.removeprefix(_ANY_DIRS) for each in starts if each.startswith(_ANY_DIRS)]
    starts = [each for each in starts if not each.startswith(_ANY_DIRS)]
    starts += [f"{_ANY_DIRS}(?:{'|'.join(names)})"] if names else []
    any_regex = re.compile("|".join(f"(?:{each})" for each in starts), re.DOTALL) if every else None
    return IgnoreFile(directory, source, tuple(patterns), tuple(reversed(matchers)), any_regex)


def _regexes(lines: list[str]) -> list[re.Pattern[str] | None]:
    """pathspec's regex for each line (None for one that matches nothing)."""
    try:
        spec = GitIgnoreSpec.from_lines(lines)
    except ValueError:  # a line pathspec refuses (GitIgnorePatternError): find it, keep the rest
        return [None] if len(lines) == 1 else [regex for line in lines for regex in _regexes([line])]
    # DOTALL: a file name may hold a newline, which pathspec's `.+` would not cross.
    return [
        re.compile(pattern.regex.pattern, re.DOTALL) if isinstance(pattern.regex, re.Pattern) else None
        for pattern in spec.patterns
    ]


def _pathspec_line(body: str) -> list[str]:
    """The pathspec lines whose union matches what git matches with `body` (a pattern without
    its `!` and trailing `/`, in `_git_text` form); none when git's pattern can never match."""
    if not body or (len(body) - len(body.rstrip("\\"))) % 2:
        return []  # a trailing backslash: git's wildmatch never matches (pathspec raises)
    # pathspec would read these as its own syntax; in git they are literal after the `!`.
    if body.startswith(("!", "#")):
        body = "\\" + body
    units: list[list[str]] = []  # the pattern, one glob unit at a time, each with its spellings
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            escaped = body[index + 1]
            # git: `\/` is a slash (pathspec splits segments before it reads escapes).
            units.append(["/" if escaped == "/" else char + escaped])
            index += 2
        elif char == "[":
            bracket = _bracket(body, index)
            if bracket is None:
                return []  # a malformed or empty bracket: git's pattern never matches
            spellings, index = bracket
            units.append(spellings)
        else:
            units.append([char])
            index += 1
    units[-1] = [_kept_at_the_end(unit) for unit in units[-1]]
    if "/" in body and not any("/" in spelling for unit in units for spelling in unit):
        units.insert(0, ["/"])  # git anchors a pattern with a slash, even one in a bracket (`[a/b]c`)
    return [line for spelled in itertools.product(*units) for line in _literal_prefix_double_star("".join(spelled))]


def _kept_at_the_end(unit: str) -> str:
    """pathspec strips any trailing whitespace (str.rstrip) where git has stripped unescaped
    spaces only, before the `/` of `a /` too: a last character it would strip (a space left
    there, a tab, or byte 0x85 or 0xa0 of a UTF-8 character here) goes escaped or bracketed."""
    char = unit[-1]
    if not char.isspace() or len(unit) > 2 or (len(unit) == 2 and char == " "):
        return unit
    return "\\ " if char == " " else f"[{char}]"


def _literal_prefix_double_star(pattern: str) -> list[str]:
    """git strips a pattern's literal prefix before calling wildmatch, so a `**` right after it
    counts as at the start of the pattern: `d/ab**/x` matches `d/abc/e/x` and `d/abx`, and
    `d/ab**` matches `d/abc/e`; pathspec reads such a `**` as `*` within one segment. The same
    set as pathspec patterns: `d/ab*/**/x` with `d/abx`, and `d/ab*` with `d/ab*/**`."""
    # git: any run of stars that is a whole segment is `**` (`/***` matches everything);
    # pathspec gives only `**` itself that meaning.
    pattern = _WHOLE_SEGMENT_STARS.sub("**", pattern)
    if "/" not in pattern.rstrip("/"):
        return [pattern]  # a basename pattern: git matches the name alone, where `**` is `*`
    # Still anchored where the slash that anchored it went away (`.**/x` -> `/.x`).
    return [line if "/" in line else "/" + line for line in _after_literal_prefix(pattern)]


def _after_literal_prefix(pattern: str) -> list[str]:
    start = next((i for i, char in enumerate(pattern) if char in _GLOBS), len(pattern))
    if pattern[start : start + 2] != "**" or start == 0 or pattern[start - 1] == "/":
        return [pattern]
    stop = start
    while stop < len(pattern) and pattern[stop] == "*":
        stop += 1
    head, rest = pattern[:start], pattern[stop:]
    if not rest:
        return [head + "*", head + "*/**"]
    if rest.startswith("/"):
        # No directory between: what follows starts afresh (`b**/**/x` is `b**/x` there too).
        return [*_after_literal_prefix(head + rest[1:]), head + "*/**" + rest]
    return [pattern]


def _bracket(pattern: str, start: int) -> tuple[list[str], int] | None:
    """`[...]` at `start` read as git's wildmatch reads it (ranges and classes on bytes, `\\`
    escapes, `!`/`^` negation, never `/`), spelled as brackets pathspec passes to its regex
    unchanged (it keeps the text, so POSIX classes, escapes and a negation that would match `/`
    are spelled out here): (spellings, index after it), None when git's pattern never matches."""
    end = len(pattern)
    index = start + 1
    if index >= end:
        return None
    negated = pattern[index] in "!^"
    if negated:
        index += 1
    if index >= end:
        return None
    members: set[int] = set()
    previous = 0
    char = ord(pattern[index])
    while True:
        if char == 0x5C:  # backslash: the next byte is literal
            index += 1
            if index >= end:
                return None
            char = ord(pattern[index])
            members.add(char)
        elif char == 0x2D and previous and index + 1 < end and pattern[index + 1] != "]":  # a range
            index += 1
            char = ord(pattern[index])
            if char == 0x5C:
                index += 1
                if index >= end:
                    return None
                char = ord(pattern[index])
            members.update(range(previous, char + 1))
            char = 0
        elif char == 0x5B and index + 1 < end and pattern[index + 1] == ":":  # [:class:]
            close = pattern.find("]", index + 2)
            if close < 0:
                return None
            if close - index - 3 < 0 or pattern[close - 1] != ":":
                members.add(char)  # not a class: a literal '['
            else:
                chars = _CHAR_CLASSES.get(pattern[index + 2 : close - 1])
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
        char = ord(pattern[index])
        if char == 0x5D:
            break
    matching = (set(range(256)) - members) if negated else members
    matching.discard(ord("/"))
    if not matching:
        return None
    return _bracket_text(matching), index + 1


def _bracket_text(matching: set[int]) -> list[str]:
    """A bracket that pathspec turns into a regex class of exactly `matching` (bytes, no `/`):
    `]` or `-` first, `-` otherwise last, never `!`, `^` or `[` first (a negation, or a nested
    set to `re`); a set of only those three goes as one escaped character per spelling."""
    chars = sorted(chr(member) for member in matching)
    if len(chars) == 1 or set(chars) <= set("!^["):
        return ["\\" + char for char in chars]
    first = next(c for c in ("]", "-", *chars) if c in chars and c not in "!^[")
    rest = [c for c in chars if c not in (first, "-")]
    return ["[" + first + "".join(rest) + ("-" if "-" in chars and first != "-" else "") + "]"]


def _trim_trailing_spaces(line: str) -> str:
    """git's trim_trailing_spaces: drop unescaped trailing spaces (pathspec keeps `a\\  ` whole
    when it ends in an escaped space, and strips tabs too)."""
    last_space: int | None = None
    index = 0
    while index < len(line):
        char = line[index]
        if char == " ":
            if last_space is None:
                last_space = index
        elif char == "\\":  # the next character is escaped
            index += 1
            if index >= len(line):
                return line
            last_space = None
        else:
            last_space = None
        index += 1
    return line if last_space is None else line[:last_space]


_DEFAULT_FILE = _compile_file("", DEFAULTS_SOURCE, "".join(f"{pattern}\n" for pattern in DEFAULT_PATTERNS))
