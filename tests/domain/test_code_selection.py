"""Which files of a code root are uploaded: git's ignore semantics, Flow's defaults, and the walker.

The gitignore cases are checked twice: against the expected answer written here, and against git
itself (a scratch repository, `git ls-files --others --exclude-standard`), which is also the oracle
of the differential property test over random trees and random ignore files.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.code_walk import walk_code_root
from flow.domain.code.selection import (
    DEFAULT_PATTERNS,
    FLOWIGNORE,
    GITIGNORE,
    IgnoreRules,
    exclusion,
    explain,
    is_excluded,
    rules_file_name,
    select_paths,
)

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


# -- helpers ----------------------------------------------------------------------------------------


def tree_with_ignores(ignores: Mapping[str, str], files: Sequence[str]) -> list[str]:
    """`files` plus the ignore files themselves, which are ordinary files of the tree."""
    return [*files, *(f"{directory}/{GITIGNORE}" if directory else GITIGNORE for directory in ignores)]


def included_without_ignore_files(ignores: Mapping[str, str], files: Sequence[str], **kwargs: object) -> set[str]:
    rules = IgnoreRules.from_texts(ignores)
    selection = select_paths(tree_with_ignores(ignores, files), rules, **kwargs)
    return {path for path in selection.included if not path.endswith(GITIGNORE)}


def materialize(root: Path, files: Mapping[str, bytes]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


@pytest.fixture(scope="module")
def scratch_repo(git_home: Path) -> Iterator[Path]:
    """One empty repository that the differential test refills for every example."""
    with tempfile.TemporaryDirectory(prefix="flow-differential-") as scratch:
        git_init(Path(scratch), git_home)
        yield Path(scratch)


@pytest.fixture(scope="module")
def git_home() -> Iterator[Path]:
    """An empty HOME, so no user or system git configuration can change what git ignores."""
    with tempfile.TemporaryDirectory(prefix="flow-git-home-") as home:
        yield Path(home)


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }


def git_init(root: Path, home: Path) -> None:
    assert GIT is not None
    subprocess.run([GIT, "init", "-q", "--template=", str(root)], env=git_env(home), check=True)


def git_not_ignored(root: Path, home: Path) -> set[str]:
    """What git itself would add from `root` (a repository with no commits): its untracked, unignored files."""
    assert GIT is not None
    listed = subprocess.run(
        [GIT, "-c", f"core.excludesFile={os.devnull}", "ls-files", "-z", "--others", "--exclude-standard"],
        cwd=root,
        env=git_env(home),
        check=True,
        capture_output=True,
    ).stdout
    return {os.fsdecode(name) for name in listed.split(b"\0") if name}


def git_included(ignores: Mapping[str, str], files: Sequence[str], home: Path) -> set[str]:
    with tempfile.TemporaryDirectory(prefix="flow-gitignore-") as scratch:
        root = Path(scratch)
        contents = {path: b"" for path in files}
        contents.update({path: ignores[path.rpartition("/")[0]].encode() for path in tree_with_ignores(ignores, ())})
        materialize(root, contents)
        git_init(root, home)
        return {path for path in git_not_ignored(root, home) if not path.endswith(GITIGNORE)}


# -- gitignore semantics, table ---------------------------------------------------------------------

GIT_CASES = [
    pytest.param(
        {"": "*.log\n!keep.log\n"},
        ["a.log", "keep.log", "d/b.log", "d/keep.log", "notes.txt"],
        {"keep.log", "d/keep.log", "notes.txt"},
        id="negation",
    ),
    pytest.param(
        {"": "!keep.log\n*.log\n"},
        ["a.log", "keep.log", "notes.txt"],
        {"notes.txt"},
        id="later-line-wins",
    ),
    pytest.param(
        {"": "/build\n"},
        ["build/x", "src/build/x", "build.txt"],
        {"src/build/x", "build.txt"},
        id="anchored-leading-slash",
    ),
    pytest.param(
        {"": "src/gen\n"},
        ["src/gen/a", "lib/src/gen/a", "gen/a", "src/generated"],
        {"lib/src/gen/a", "gen/a", "src/generated"},
        id="anchored-middle-slash",
    ),
    pytest.param(
        {"": "gen\n"},
        ["gen/a", "lib/gen/a", "lib/x/gen", "general"],
        {"general"},
        id="no-slash-matches-at-any-depth",
    ),
    pytest.param(
        {"": "out/\n"},
        ["out/a", "sub/out/b", "x/out", "out2"],
        {"x/out", "out2"},
        id="directory-only",
    ),
    pytest.param(
        {"": "**/logs/*.txt\n"},
        ["logs/a.txt", "x/y/logs/b.txt", "logs/sub/c.txt", "logs/a.md"],
        {"logs/sub/c.txt", "logs/a.md"},
        id="leading-double-star",
    ),
    pytest.param(
        {"": "a/**/z\n"},
        ["a/z", "a/b/z", "a/b/c/z", "b/a/z", "a/zz"],
        {"b/a/z", "a/zz"},
        id="inner-double-star",
    ),
    pytest.param(
        {"": "data/**\n!data/keep\n"},
        ["data/x", "data/keep", "data/sub/keep", "database"],
        {"data/keep", "database"},
        id="trailing-double-star",
    ),
    pytest.param(
        {"": "/*.txt\n"},
        ["a.txt", "d/b.txt"],
        {"d/b.txt"},
        id="star-does-not-cross-slash",
    ),
    pytest.param(
        {"": "file?.txt\n[ab].py\n[!c]x\n[[:digit:]]*\n"},
        ["file1.txt", "file10.txt", "a.py", "c.py", "cx", "dx", "7up", "up7"],
        {"file10.txt", "c.py", "cx", "up7"},
        id="question-mark-and-classes",
    ),
    pytest.param(
        {"": "*.log\n", "sub": "!*.log\n"},
        ["a.log", "sub/a.log", "sub/deep/b.log", "other/c.log"],
        {"sub/a.log", "sub/deep/b.log"},
        id="deeper-file-wins",
    ),
    pytest.param(
        {"": "!important.log\n", "sub": "*.log\n"},
        ["important.log", "sub/important.log"],
        {"important.log"},
        id="deeper-file-wins-over-root-negation",
    ),
    pytest.param(
        {"sub": "/only-here\nmid/dle\n"},
        ["sub/only-here", "sub/deeper/only-here", "only-here", "sub/mid/dle", "mid/dle"],
        {"sub/deeper/only-here", "only-here", "mid/dle"},
        id="nested-anchors-to-its-own-directory",
    ),
    pytest.param(
        {"": "build/\n!build/keep.txt\n", "build": "!keep.txt\n"},
        ["build/keep.txt", "build/other.txt"],
        set(),
        id="parent-excluded-cannot-be-re-included",
    ),
    pytest.param(
        {"": "build/*\n!build/keep.txt\n"},
        ["build/keep.txt", "build/other.txt", "build/sub/keep.txt"],
        {"build/keep.txt"},
        id="contents-excluded-can-be-re-included",
    ),
    pytest.param(
        {"": "\\#notcomment\n\\!bang\n# comment\n\n   \n"},
        ["#notcomment", "!bang", "comment", "# comment"],
        {"comment", "# comment"},
        id="escapes-comments-blank-lines",
    ),
    pytest.param(
        {"": "trail   \nsp\\ \n"},
        ["trail", "trail ", "sp", "sp "],
        {"trail ", "sp"},
        id="trailing-spaces",
    ),
    pytest.param(
        {"": "a.log\r\n*.tmp\r\n"},
        ["a.log", "b.tmp", "c"],
        {"c"},
        id="crlf-line-endings",
    ),
    pytest.param(
        {"": "d/ab**/x\n"},
        ["d/ab/x", "d/abc/x", "d/ab/c/x", "d/x"],
        {"d/x"},
        id="double-star-after-a-literal-prefix",
    ),
    # Where pathspec alone reads a line otherwise than git (flow.domain.code.selection corrects each).
    pytest.param(
        {"": "*\n!/***\n"},
        ["a/a", "build/b", "c"],
        {"a/a", "build/b", "c"},
        id="pathspec-a-segment-of-three-stars-is-double-star",
    ),
    pytest.param(
        {"": "**/*/**\n"},
        ["x", "a/b", "c/d/e"],
        {"x"},
        id="star-between-double-stars",
    ),
    pytest.param(
        {"": ".**/**\n"},
        [".h", ".hidden/a", "a/.hidden"],
        {"a/.hidden"},
        id="pathspec-double-star-after-a-prefix-stays-anchored",
    ),
    pytest.param(
        {"": "[\\![]b\n[!a]c\n[[:digit:]x]\n"},
        ["!b", "[b", "^b", "bc", "ac", "a/c", "7", "x", "y"],
        {"^b", "ac", "a/c", "y"},
        id="pathspec-brackets-as-git-reads-them",
    ),
    pytest.param(
        {"": "a\t\n\u00e0\nq?\n"},
        ["a", "a\t", "\u00e0", "\u00e0x", "q\u00e9", "qx"],
        {"a", "\u00e0x", "q\u00e9"},
        id="pathspec-bytes-and-trailing-whitespace",
    ),
    pytest.param(
        {"": "a /\n"},
        ["a /x", "a/x"],
        {"a/x"},
        id="pathspec-a-space-before-the-directory-slash",
    ),
    pytest.param(
        {"": "[ac/[ab]?\n"},
        ["c1", "a/c1"],
        {"a/c1"},
        id="pathspec-a-slash-in-a-bracket-anchors",
    ),
    pytest.param(
        {"": "b**/**/**\n"},
        ["build/a", "b", "xb/a"],
        {"xb/a"},
        id="pathspec-double-stars-after-a-prefix-start-afresh",
    ),
    pytest.param(
        {"": "a\\/b\nc\\\n"},
        ["a/b", "x/a/b", "c", "c\\"],
        {"x/a/b", "c", "c\\"},
        id="pathspec-escaped-slash-and-trailing-backslash",
    ),
]


@pytest.mark.parametrize(("ignores", "files", "expected"), GIT_CASES)
def test_gitignore_semantics(ignores: dict[str, str], files: list[str], expected: set[str]) -> None:
    assert included_without_ignore_files(ignores, files) == expected


@needs_git
@pytest.mark.parametrize(("ignores", "files", "expected"), GIT_CASES)
def test_git_agrees_with_the_table(
    ignores: dict[str, str], files: list[str], expected: set[str], git_home: Path
) -> None:
    assert git_included(ignores, files, git_home) == expected


def test_selection_is_sorted_and_partitions_the_input() -> None:
    files = ["z.py", "b.log", "a.py", "node_modules/x.js", "a/b.log"]
    selection = select_paths(files, IgnoreRules.from_texts({"": "*.log\n"}))
    assert selection.included == ("a.py", "z.py")
    assert selection.excluded == ("a/b.log", "b.log", "node_modules/x.js")


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/./b", "../up", "a/..", "dir/"])
def test_paths_must_be_normalized_relative(bad: str) -> None:
    with pytest.raises(ValueError, match="relative POSIX path"):
        select_paths([bad], IgnoreRules())


# -- Flow's defaults ---------------------------------------------------------------------------------


def test_defaults_exclude_what_users_expect() -> None:
    files = [
        "src/main.py",
        "__pycache__/m.cpython-311.pyc",
        "pkg/__pycache__/x.txt",
        "pkg/mod.pyc",
        "node_modules/left-pad/index.js",
        ".venv/bin/python",
        "venv/lib/site.py",
        "tools/venv/x",
        ".DS_Store",
        "pkg/.DS_Store",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        "nb/.ipynb_checkpoints/a.ipynb",
        ".git/HEAD",
        "vendor/lib/.git",
        "vendor/lib/.git/config",
        "venv.py",
        "node_modules.txt",
    ]
    selection = select_paths(files, IgnoreRules())
    assert selection.included == ("node_modules.txt", "src/main.py", "venv.py")
    assert len(DEFAULT_PATTERNS) == 10


def test_a_user_rule_re_includes_a_default() -> None:
    files = ["node_modules/x.js", "a.pyc", "__pycache__/b.pyc", "src/node_modules/y.js"]
    rules = IgnoreRules.from_texts({"": "!node_modules/\n!*.pyc\n"})
    assert select_paths(files, rules).included == ("a.pyc", "node_modules/x.js", "src/node_modules/y.js")


def test_a_nested_user_rule_re_includes_a_default_below_it_only() -> None:
    files = ["node_modules/x.js", "web/node_modules/y.js"]
    rules = IgnoreRules.from_texts({"web": "!node_modules/\n"})
    assert select_paths(files, rules).included == ("web/node_modules/y.js",)


def test_dot_git_is_never_uploaded() -> None:
    files = [".git/HEAD", "sub/.git", "sub/.git/x", "sub/a"]
    rules = IgnoreRules.from_texts({"": "!.git/\n!.git\n!**/.git/**\n"})
    assert select_paths(files, rules).included == ("sub/a",)


def test_a_virtualenv_under_any_name_is_excluded() -> None:
    files = ["tools-env/pyvenv.cfg", "tools-env/lib/site.py", "src/a.py", "src/tools-env/b.py"]
    assert select_paths(files, IgnoreRules(), ["tools-env"]).included == ("src/a.py", "src/tools-env/b.py")
    assert select_paths(files, IgnoreRules()).included == tuple(sorted(files))
    re_included = IgnoreRules.from_texts({"": "!/tools-env/\n"})
    assert select_paths(files, re_included, ["tools-env"]).included == tuple(sorted(files))


def test_flowignore_is_chosen_when_the_root_has_one() -> None:
    assert rules_file_name([GITIGNORE, FLOWIGNORE, "main.py"]) == FLOWIGNORE
    assert rules_file_name([GITIGNORE, "main.py"]) == GITIGNORE
    assert rules_file_name([]) == GITIGNORE
    rules = IgnoreRules.from_texts({"": "*.md\n", "sub": "!keep.md\n"}, file_name=FLOWIGNORE)
    assert rules.files[1].source == "sub/.flowignore"
    assert select_paths(["a.md", "sub/keep.md", "sub/b.md"], rules).included == ("sub/keep.md",)


# -- explaining ----------------------------------------------------------------------------------------


def test_explain_names_the_file_and_line() -> None:
    rules = IgnoreRules.from_texts({"": "# build output\n/dist/\n", "pkg": "*.tmp\n!keep.tmp\n"})
    assert explain("dist/a/b.js", rules) == "dist/a/b.js: excluded with its directory dist/ by '/dist/' (.gitignore:2)"
    assert explain("pkg/a.tmp", rules) == "pkg/a.tmp: excluded by '*.tmp' (pkg/.gitignore:1)"
    assert explain("pkg/keep.tmp", rules) is None
    assert explain("src/main.py", rules) is None
    assert explain("x/__pycache__/m.pyc", rules) == (
        "x/__pycache__/m.pyc: excluded with its directory x/__pycache__/ by '__pycache__/' "
        "(flow's defaults; '!__pycache__/' in an ignore file uploads it)"
    )
    assert explain("env/bin/python", rules, ["env"]) == (
        "env/bin/python: excluded with its directory env/ (a virtualenv: it holds pyvenv.cfg)"
    )
    assert explain(".git/config", rules) == ".git/config: excluded with its directory .git/ (.git is never uploaded)"


def test_exclusion_is_structured_and_respects_directory_only_rules() -> None:
    rules = IgnoreRules.from_texts({"": "out/\n"})
    found = exclusion("out", rules, is_dir=True)
    assert found is not None
    assert (found.source, found.line, found.rule, found.excluded_path) == (".gitignore", 1, "out/", "out")
    assert exclusion("out", rules) is None  # a file named out
    assert is_excluded("a/out/b", rules)
    assert not is_excluded("a/out", rules)


# -- differential: random trees and random ignore files against git itself ---------------------------

# Names built from the same pieces as the patterns, so patterns often match; none collides with
# Flow's defaults (which git does not have).
NAMES = ["a", "b", "ab", "build", "a.log", "b.txt", "x y", ".hidden", "c1", "#a", "!b", "a ", "[a]", "é", "log"]
PIECES = ["a", "b", "ab", "build", "log", "txt", ".", "x y", "é", "c", "1", " "]
GLOBS = [
    "*",
    "?",
    "[ab]",
    "[!a]",
    "[a-c]",
    "[^b]",
    "[[:alpha:]]",
    "\\#",
    "\\!",
    "\\ ",
    "\\a",
    "**",
    "[]a]",
    "[a",
    "[[:nope:]]",
]

segments = st.one_of(
    st.sampled_from(["*", "**", "build", "a.log", "*.log", "a", "b*"]),
    st.lists(st.sampled_from(PIECES + GLOBS), min_size=1, max_size=3).map("".join),
)
patterns = st.builds(
    lambda negate, lead, middle, trail, spaces: (
        ("!" if negate else "") + ("/" if lead else "") + "/".join(middle) + ("/" if trail else "") + " " * spaces
    ),
    st.booleans(),
    st.booleans(),
    st.lists(segments, min_size=1, max_size=3),
    st.booleans(),
    st.sampled_from([0, 0, 0, 1, 2]),
)
lines = st.one_of(
    patterns,
    patterns,
    patterns,
    st.sampled_from(["", "# comment", "#a", "\\#a", "!b", "\\!b", "**", "*", "/", "!*/", "*/", "a\\", "a.log\r", "!"]),
)
# Common names come up more often, so the same name sits at several depths (anchoring matters).
path_names = st.one_of(st.sampled_from(["a", "build", "a.log"]), st.sampled_from(NAMES))
paths = st.lists(path_names, min_size=1, max_size=4).map("/".join)


def consistent_tree(files: Sequence[str]) -> list[str]:
    """The files that can coexist, in order (no name both a file and a directory)."""
    kept: set[str] = set()
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")
        parents = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
        if path not in dirs and path not in kept and not any(parent in kept for parent in parents):
            kept.add(path)
            dirs.update(parents)
    return sorted(kept)


def directories_of(tree: Sequence[str]) -> list[str]:
    return sorted({""} | {path.rsplit("/", depth)[0] for path in tree for depth in range(1, path.count("/") + 1)})


def escaped(name: str) -> str:
    """`name` as a literal gitignore pattern."""
    body = "".join(f"\\{char}" if char in "\\[]*?" else char for char in name)
    if body.startswith(("#", "!")):
        body = "\\" + body
    return body[:-1] + "\\ " if body.endswith(" ") else body


@st.composite
def mangled(draw: st.DrawFn, name: str) -> str:
    """A pattern for one path segment that often still matches `name`."""
    how = draw(
        st.sampled_from(["literal", "literal", "raw", "question", "star", "class", "negated-class", "**", "x**", "**x"])
    )
    at = draw(st.integers(0, len(name) - 1))
    if how == "raw":  # unescaped: `#a` is a comment, `!b` a negation, `a ` loses its space
        return name
    if how == "x**":  # git treats `**` right after a literal prefix as leading (`ab**/x` matches `abc/d/x`)
        return escaped(name[: at + 1]) + "**"
    if how == "**x":
        return "**" + escaped(name[at:])
    if how == "question":
        return escaped(name[:at]) + "?" + escaped(name[at + 1 :])
    if how == "star":
        stop = draw(st.integers(at, len(name)))
        return escaped(name[:at]) + "*" + escaped(name[stop:])
    if how in ("class", "negated-class"):
        other = draw(st.sampled_from("abé.[]!^-\\"))
        negation = "!" if how == "negated-class" else ""
        return escaped(name[:at]) + f"[{negation}\\{name[at]}{other}]" + escaped(name[at + 1 :])
    return "**" if how == "**" else escaped(name)


@st.composite
def derived_patterns(draw: st.DrawFn, tree: Sequence[str]) -> str:
    """A pattern built from a path of the tree, anchored or not, for files or directories."""
    parts = draw(st.sampled_from(tree)).split("/")
    start = draw(st.integers(0, len(parts) - 1))
    stop = draw(st.integers(start + 1, len(parts)))
    body = "/".join(draw(mangled(part)) for part in parts[start:stop])
    lead = draw(st.sampled_from(["", "", "/", "**/", "*/"]))
    trail = draw(st.sampled_from(["", "", "/", "/**", "/*", "*"]))
    negate = draw(st.sampled_from([False, False, True]))
    return ("!" if negate else "") + lead + body + trail


@needs_git
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(paths, min_size=1, max_size=24), data=st.data())
def test_selection_matches_git(files: list[str], data: st.DataObject, git_home: Path, scratch_repo: Path) -> None:
    tree = consistent_tree(files)
    directories = directories_of(tree)
    ignore_dirs = data.draw(st.lists(st.sampled_from(directories), min_size=1, max_size=3, unique=True))
    texts = {}
    for directory in ignore_dirs:
        # Mostly patterns made from the paths below the ignore file, relative to it, so they match.
        below = [path[len(directory) + 1 :] for path in tree if path.startswith(f"{directory}/")] if directory else tree
        derived = derived_patterns(below or tree)
        any_line = st.one_of(lines, derived, derived, derived)
        texts[directory] = "".join(f"{line}\n" for line in data.draw(st.lists(any_line, min_size=1, max_size=10)))
    tree = sorted([*tree, *tree_with_ignores(texts, ())])
    root = scratch_repo
    for child in root.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    materialize(root, {path: b"" for path in tree})
    for directory, text in texts.items():
        (root / directory / GITIGNORE).write_bytes(text.encode())
    expected = git_not_ignored(root, git_home)
    selected = set(select_paths(tree, IgnoreRules.from_texts(texts)).included)
    walked = set(walk_code_root(root).selection.included)
    assert selected == expected, texts
    assert walked == expected, texts


# -- the walker ----------------------------------------------------------------------------------------


def test_walk_code_root_lists_exactly_what_is_uploaded(tmp_path: Path) -> None:
    materialize(
        tmp_path,
        {
            ".gitignore": b"/data/\n*.log\n",
            "main.py": b"print('hi')\n",
            "app.log": b"noise",
            "data/big.bin": b"\0" * 100,
            "pkg/.gitignore": b"*.tmp\n!keep.tmp\n",
            "pkg/__init__.py": b"x = 1\n",
            "pkg/a.tmp": b"tmp",
            "pkg/keep.tmp": b"kept",
            "pkg/__pycache__/m.cpython-311.pyc": b"bytecode",
            "__pycache__/main.cpython-311.pyc": b"bytecode",
            ".git/HEAD": b"ref: refs/heads/main\n",
            ".git/objects/ab/cdef": b"object",
            ".venv/pyvenv.cfg": b"home = /usr/bin\n",
            ".venv/lib/site.py": b"site",
            "tools-env/pyvenv.cfg": b"home = /usr/bin\n",
            "tools-env/bin/python": b"elf",
            "node_modules/left-pad/index.js": b"module.exports = 1",
            "vendor/lib/.git": b"gitdir: ../../.git/modules/lib\n",
            "vendor/lib/lib.py": b"lib",
        },
    )
    (tmp_path / "main.py").chmod(0o755)
    (tmp_path / "link.py").symlink_to("main.py")
    (tmp_path / "linkdir").symlink_to("pkg", target_is_directory=True)

    result = walk_code_root(tmp_path)

    sizes = {file.path: file.size for file in result.files}
    assert sizes == {
        ".gitignore": 13,
        "link.py": len("main.py"),
        "linkdir": len("pkg"),
        "main.py": 12,
        "pkg/.gitignore": 16,
        "pkg/__init__.py": 6,
        "pkg/keep.tmp": 4,
        "vendor/lib/lib.py": 3,
    }
    assert result.selection.included == tuple(sizes)
    assert result.total_size == sum(sizes.values())
    modes = {file.path: file.mode for file in result.files}
    assert stat.S_IMODE(modes["main.py"]) == 0o755
    assert stat.S_ISREG(modes["main.py"])
    assert {file.path for file in result.files if file.is_symlink} == {"link.py", "linkdir"}
    # Excluded directories are pruned, never entered: their files are not even listed.
    assert result.pruned_dirs == (
        ".git",
        ".venv",
        "__pycache__",
        "data",
        "node_modules",
        "pkg/__pycache__",
        "tools-env",
        "vendor/lib/.git",
    )
    assert result.selection.excluded == ("app.log", "pkg/a.tmp")
    assert result.virtualenv_dirs == ("tools-env",)  # .venv is pruned by name before it is looked into


def test_walk_honors_flowignore_instead_of_gitignore(tmp_path: Path) -> None:
    materialize(
        tmp_path,
        {
            ".flowignore": b"*.md\n",
            ".gitignore": b"*.txt\n",
            "a.md": b"",
            "a.txt": b"",
            "sub/.gitignore": b"*.py\n",
            "sub/.flowignore": b"!keep.md\n",
            "sub/keep.md": b"",
            "sub/b.md": b"",
            "sub/x.py": b"",
        },
    )
    result = walk_code_root(tmp_path)
    assert result.rules.file_name == FLOWIGNORE
    assert result.selection.included == (
        ".flowignore",
        ".gitignore",
        "a.txt",
        "sub/.flowignore",
        "sub/.gitignore",
        "sub/keep.md",
        "sub/x.py",
    )
    assert result.selection.excluded == ("a.md", "sub/b.md")


def test_walk_re_includes_a_virtualenv_the_user_asks_for(tmp_path: Path) -> None:
    materialize(
        tmp_path,
        {".gitignore": b"!/env/\n", "env/pyvenv.cfg": b"", "env/lib/x.py": b"", "other/pyvenv.cfg": b""},
    )
    result = walk_code_root(tmp_path)
    assert result.virtualenv_dirs == ("env", "other")
    assert result.selection.included == (".gitignore", "env/lib/x.py", "env/pyvenv.cfg")
    assert result.pruned_dirs == ("other",)
