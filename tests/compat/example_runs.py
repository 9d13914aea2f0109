"""Running a flow-compute usage example (compat.flow_compute_examples) as its user would: a script
in a project directory that holds the example's helper modules, `python example.py`, with
FLOW_HOME naming the test's daemon. $FLOW_COMPAT_PYTHON runs the scripts with another
interpreter (another checkout's SDK), to measure how it fares."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from compat.flow_compute_examples import MODULES, Example

SECRET = "k-123"  # WANDB_API_KEY in the examples' environment


def make_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in MODULES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "train.py").write_text("print('training')\n")
    return root


def run_example(
    example: Example, home: Path, project: Path, python: str = "", timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    python = python or os.environ.get("FLOW_COMPAT_PYTHON") or sys.executable
    script = project / f"{example.name.lower()}.py"
    script.write_text(example.script)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FLOW_", "MITHRIL_"))}
    environment.update(FLOW_HOME=str(home), WANDB_API_KEY=SECRET, **env)
    return subprocess.run(
        [python, script.name], cwd=project, env=environment, capture_output=True, text=True, timeout=timeout
    )


def _value(line: str) -> Any:
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError):
        return line


def matches(expected: Any, line: str) -> bool:
    """A str is compared as text (or as the literal the line prints); anything else as the
    Python literal the line prints (dict key order and 1 vs 1.0 do not matter)."""
    if isinstance(expected, str) and line == expected:
        return True
    return bool(_value(line) == expected)


def outcome(example: Example, done: subprocess.CompletedProcess[str]) -> str:
    """How the run went: "unchanged" (printed what it should), "refused" (printed what it should
    up to the documented refusal) or "needs edits" (anything else)."""
    lines = done.stdout.splitlines()
    printed = len(lines) == len(example.expected) and all(map(matches, example.expected, lines))
    if example.refused:
        return "refused" if printed and done.returncode != 0 and example.refused in done.stderr else "needs edits"
    return "unchanged" if printed and done.returncode == 0 else "needs edits"


def explain(example: Example, done: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{example.name} ({example.origin})\n--- script\n{example.script}--- exit {done.returncode}\n"
        f"--- stdout\n{done.stdout}--- stderr\n{done.stderr[-4000:]}"
    )
