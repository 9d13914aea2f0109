"""`buf breaking` (run by tools/check via tools/buf-breaking against main) really catches a
breaking change: proven in a throwaway git repository holding a copy of proto/, never in ours."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, REPO

GIT_ENV = {
    "GIT_AUTHOR_NAME": "flow-test",
    "GIT_AUTHOR_EMAIL": "flow-test@localhost",
    "GIT_COMMITTER_NAME": "flow-test",
    "GIT_COMMITTER_EMAIL": "flow-test@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}  # no user git config leaks in
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def contract_repo(tmp_path: Path) -> Path:
    """A git repository whose `main` holds today's contract (proto/ and buf.yaml)."""
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    shutil.copy(REPO / "buf.yaml", tmp_path / "buf.yaml")
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "contract"]):
        done = _run(argv, tmp_path)
        assert done.returncode == 0, done.stderr
    return tmp_path


def _breaking(repo: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(BIN / "buf"), "breaking", "--against", ".git#branch=main"], repo)


def _edit(repo: Path, old: str, new: str) -> None:
    path = repo / "proto" / "flowapi" / "v1" / "task.proto"
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in task.proto once: update this test"
    path.write_text(text.replace(old, new))


def test_an_unchanged_contract_passes(contract_repo: Path) -> None:
    done = _breaking(contract_repo)
    assert done.returncode == 0, done.stdout + done.stderr


def test_changing_a_field_type_fails_naming_the_field(contract_repo: Path) -> None:
    _edit(contract_repo, "  int32 num_instances = 14;", "  string num_instances = 14;")
    done = _breaking(contract_repo)
    assert done.returncode == 100, done.stdout + done.stderr
    assert 'Field "14" with name "num_instances" on message "TaskSpec" changed type from "int32" to "string".' in (
        done.stdout
    )
    assert "proto/flowapi/v1/task.proto:" in done.stdout


def test_deleting_a_field_fails_naming_the_field(contract_repo: Path) -> None:
    _edit(contract_repo, "  string region = 13;\n", "")
    done = _breaking(contract_repo)
    assert done.returncode == 100, done.stdout + done.stderr
    assert 'Previously present field "13" with name "region" on message "TaskSpec" was deleted.' in done.stdout


def test_adding_a_field_is_not_breaking(contract_repo: Path) -> None:
    field = "  // New.\n  string flow_test_extra = 536870911;\n"  # the highest field number: never taken
    _edit(contract_repo, "message TaskSpec {\n", "message TaskSpec {\n" + field)
    done = _breaking(contract_repo)
    assert done.returncode == 0, done.stdout + done.stderr
