"""The README's two commands say up front what they need: `make test` without root stops before
installing anything, with one line per missing piece and the way out (`make test-user`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

PREREQS = REPO / "tools" / "prereqs"


def as_another_user(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """argv as a user without root: this one, or `nobody` when the tests run as root."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop root")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


def test_make_test_without_root_says_so_before_installing_anything() -> None:
    # A copy the other user can reach (a clone, and pytest's tmp_path, may sit in directories only
    # their owner can enter).
    with tempfile.TemporaryDirectory(prefix="flow-prereqs-") as top:
        checkout = Path(top)
        (checkout / "tools").mkdir()
        shutil.copy(PREREQS, checkout / "tools" / "prereqs")
        for path in (checkout, checkout / "tools"):
            path.chmod(0o755)
        done = as_another_user(["bash", str(checkout / "tools" / "prereqs"), "test"], cwd=checkout)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    root = [line for line in lines if line.startswith("make test: needs root:")]
    assert len(root) == 1, done.stderr
    assert "Slurm and sshd" in root[0] and "`make test-user`" in root[0]
    assert lines[-1] == "make test: stopped before installing anything"
    assert all(line.startswith("make test: ") for line in lines)  # one line per missing piece


def test_each_missing_tool_is_one_line_naming_the_version_needed() -> None:
    env = {**os.environ, "PYTHON": "no-such-python", "GO": "no-such-go", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", str(PREREQS), "test-user"], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert done.returncode == 1
    assert "make test-user: needs Python 3.11 or newer" in done.stderr
    assert "make test-user: needs Go 1.24 or newer" in done.stderr
    assert "needs root" not in done.stderr  # test-user is for accounts without root
    if shutil.which("node", path="/usr/bin:/bin") is None:
        assert "make test-user: needs Node.js 20 or newer with npm" in done.stderr


def test_the_check_comes_first_in_each_command() -> None:
    for goal in ("run", "test", "test-user"):
        # -B: as if nothing were installed yet, so every install step is listed after the check.
        alone = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        planned = subprocess.run(
            ["make", "--no-print-directory", "-n", "-B", goal],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=alone,
        ).stdout.splitlines()
        assert f"tools/prereqs {goal}" in planned[0], (goal, planned[:3])
        assert any("pip install" in line for line in planned), goal
