"""The submitit frontend's tests (flow.submitit); examples/ holds submitit's documentation examples."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
EXAMPLES = ("add", "arrays", "errors", "multitask", "checkpoint")


def run_example(name: str, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs examples/NAME.py as a script in `workdir` (a fresh directory), as a user would."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "examples" / f"{name}.py", workdir / f"{name}.py")
    return subprocess.run(
        [sys.executable, f"{name}.py"], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
