"""Times choosing the files a task uploads, each against a floor measured in the same run.

Run: python bench/bench_code_selection.py [--quick]

A realistic 10,000-file project is generated under /tmp (sources, tests with their own
.gitignore, data and logs the root .gitignore excludes, __pycache__, node_modules, a .venv, a
virtualenv under another name, a .git) and removed afterwards.

- walk + select: `walk_code_root` (scandir, ignore files, pruning, stat of each uploaded file)
  against the floor of `os.walk` listing every file of the same tree.
- select_paths alone: the pure selection over all 10,000 relative paths against the floor of one
  precompiled regex `fullmatch` per path.

Each figure is a median of repeated runs. Nothing is asserted; read the table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flow.code_walk import walk_code_root
from flow.domain.code.selection import IgnoreRules, select_paths

FILE_COUNT = 10_000
ROOT_GITIGNORE = "# generated\n/data/raw/\n*.log\nbuild/\n/dist\n*.tmp\n!keep.tmp\n"
TESTS_GITIGNORE = "fixtures/big/\n!*.tmp\n"


def project_layout() -> dict[str, str]:
    """Relative path -> content for a 10,000-file project."""
    files: dict[str, str] = {".gitignore": ROOT_GITIGNORE, "tests/.gitignore": TESTS_GITIGNORE}
    groups = [
        ("src/pkg{a:02d}/mod{b:03d}.py", 40, 110, "x = 1\n"),
        ("src/pkg{a:02d}/__pycache__/mod{b:03d}.cpython-311.pyc", 10, 80, "bytecode"),
        ("tests/unit{a}/test_{b:03d}.py", 5, 100, "def test(): pass\n"),
        ("tests/fixtures/big/blob{a}_{b:03d}.bin", 2, 100, "blob"),
        ("tests/tmp{a}/t{b:03d}.tmp", 2, 50, "tmp"),
        ("data/raw/shard{a}/part{b:03d}.csv", 5, 200, "a,b\n"),
        ("logs/run{a}/step{b:03d}.log", 5, 100, "log\n"),
        ("node_modules/lib{a:02d}/file{b:03d}.js", 10, 100, "module.exports = 1\n"),
        (".venv/lib/python3.11/site-packages/p{a:02d}/m{b:02d}.py", 10, 40, "venv\n"),
        ("tools-env/lib/p{a}/m{b:02d}.py", 4, 50, "venv\n"),
        (".git/objects/{a:02x}/{b:038x}", 20, 10, "object"),
        ("docs/section{a}/page{b:03d}.md", 10, 50, "# page\n"),
    ]
    for template, outer, inner, content in groups:
        for a in range(outer):
            for b in range(inner):
                files[template.format(a=a, b=b)] = content
    files["tools-env/pyvenv.cfg"] = "home = /usr/bin\n"
    extra = 0
    while len(files) < FILE_COUNT:
        files[f"src/extra/e{extra // 100:02d}/f{extra % 100:02d}.py"] = "y = 2\n"
        extra += 1
    return files


def generate(root: Path) -> None:
    for path, content in project_layout().items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def median_seconds(action: Callable[[], object], runs: int) -> float:
    action()  # warm the page cache and imports
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def os_walk_every_file(root: Path) -> list[str]:
    listed: list[str] = []
    for directory, _, names in os.walk(root):
        listed.extend(os.path.join(directory, name) for name in names)
    return listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    runs = 3 if args.quick else 11
    select_runs = 5 if args.quick else 31

    root = Path(tempfile.mkdtemp(prefix="flow-bench-code-", dir="/tmp"))
    try:
        generate(root)
        every_file = [os.path.relpath(path, root).replace(os.sep, "/") for path in os_walk_every_file(root)]
        result = walk_code_root(root)

        walk = median_seconds(lambda: walk_code_root(root), runs)
        walk_floor = median_seconds(lambda: os_walk_every_file(root), runs)

        texts = {"": ROOT_GITIGNORE, "tests": TESTS_GITIGNORE}
        rules = IgnoreRules.from_texts(texts)
        virtualenvs = ["tools-env"]
        selection = select_paths(every_file, rules, virtualenvs)
        select = median_seconds(lambda: select_paths(every_file, rules, virtualenvs), select_runs)
        one_regex = re.compile(r"(?:.*/)?[^/]*\.log")
        select_floor = median_seconds(lambda: [one_regex.fullmatch(path) for path in every_file], select_runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"code selection over a {len(every_file):,}-file tree: walk uploads {len(result.files):,} files, "
        f"prunes {len(result.pruned_dirs)} directories; select_paths keeps {len(selection.included):,}"
    )
    print(f"medians of {runs} (walk) and {select_runs} (select) runs")
    print()
    header = f"{'case':<34}{'median':>11}  {'floor':<38}{'floor med.':>11}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    rows = [
        ("walk_code_root (walk + select)", walk, "os.walk listing every file", walk_floor),
        (f"select_paths, {len(every_file):,} paths", select, "one regex fullmatch per path", select_floor),
    ]
    for name, seconds, floor_name, floor_seconds in rows:
        ratio = seconds / floor_seconds
        print(f"{name:<34}{seconds * 1000:>9.2f}ms  {floor_name:<38}{floor_seconds * 1000:>9.2f}ms{ratio:>7.1f}x")


if __name__ == "__main__":
    main()
