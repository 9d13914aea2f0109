"""The TypeScript and Go clients drive a real flowd: their examples run a task, stream its logs,
wait for it and decode errors, and their conformance programs check every instance-type vector
through the daemon's own validation.

Node and Go are required, never skipped: `make test` installs node_modules and the Go modules
first (and fails loudly when node or go is missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, Daemon, short_tmpdir
from flow import Flow, TaskStatus

TSX = REPO / "node_modules" / ".bin" / "tsx"
TSC = REPO / "node_modules" / ".bin" / "tsc"
VECTORS = REPO / "tests" / "conformance" / "instance_types.json"
LANGUAGES = ("ts", "go")


def _run(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is not on PATH: the Go client needs Go 1.24+ (`make test` checks this)")
    return go


@pytest.fixture(scope="module")
def go_bins() -> Iterator[Path]:
    """The Go examples and the conformance program, built once (a warm cache makes this quick)."""
    if not TSX.exists():
        pytest.fail("node_modules is missing: run `make test` (it runs npm ci)")
    out = short_tmpdir("flow-go-bin-")
    try:
        builds = (("examples/go", ["./run_task", "./validation_error"]), ("clients/go", ["./cmd/conformance"]))
        for module, packages in builds:
            done = _run([_go(), "build", "-buildvcs=false", "-o", f"{out}/", *packages], cwd=REPO / module, timeout=280)
            assert done.returncode == 0, done.stderr
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _program(language: str, name: str, go_bins: Path) -> list[str]:
    if language == "ts":
        return [str(TSX), f"examples/ts/{name}.ts"]
    return [str(go_bins / name)]


# --- static checks ------------------------------------------------------------------------------


def test_typescript_client_and_examples_type_check() -> None:
    assert TSC.exists(), "node_modules is missing: run `make test` (it runs npm ci)"
    done = _run([str(TSC), "--noEmit", "-p", "clients/ts"])
    assert done.returncode == 0, done.stdout + done.stderr


# gen/go is vetted from clients/go, whose go.sum covers it (gen/go/go.mod is generated, without one).
@pytest.mark.parametrize(
    ("module", "packages"), [("clients/go", ["./...", "flow.local/gen/go/..."]), ("examples/go", ["./..."])]
)
def test_go_modules_vet_clean(module: str, packages: list[str]) -> None:
    done = _run([_go(), "vet", *packages], cwd=REPO / module, timeout=280)
    assert done.returncode == 0, done.stderr


def test_go_client_unit_tests_pass() -> None:
    done = _run([_go(), "test", "./..."], cwd=REPO / "clients" / "go", timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the examples against a real daemon -----------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_run_task_example_streams_logs_and_reports_the_exit_code(
    language: str, shared_daemon: Daemon, flow: Flow, go_bins: Path
) -> None:
    done = _run(_program(language, "run_task", go_bins), env=shared_daemon.env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    created = re.fullmatch(r"created tasks/(t-[a-z0-9]+)", lines[0])
    assert created, lines
    assert lines[1:] == ["hello from flow", "bye from flow", "state=TASK_STATE_FAILED exit_code=3"]
    # The Python SDK sees the very same task.
    task = flow.get_task(created.group(1))
    assert (task.status, task.exit_code) == (TaskStatus.FAILED, 3)


@pytest.mark.parametrize("language", LANGUAGES)
def test_run_task_example_runs_any_command(language: str, shared_daemon: Daemon, go_bins: Path) -> None:
    argv = [*_program(language, "run_task", go_bins), "printf 'a\\nb\\n'; printf 'no newline'"]
    done = _run(argv, env=shared_daemon.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["a", "b", "no newline", "state=TASK_STATE_COMPLETED exit_code=0"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_validation_error_example_prints_every_field_violation(
    language: str, shared_daemon: Daemon, go_bins: Path
) -> None:
    done = _run(_program(language, "validation_error", go_bins), env=shared_daemon.env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "code=INVALID_ARGUMENT reason=VALIDATION_FAILED"
    assert lines[1] == "message: Invalid task configuration: 3 problems"
    violations = [line.removeprefix("violation: ") for line in lines if line.startswith("violation: ")]
    assert [v.split(": ", 1)[0] for v in violations] == ["name", "instance_type", "num_instances"]
    assert "unknown GPU model 'a1000'" in violations[1]
    assert "must be at least 1 (got -1)" in violations[2]
    suggestions = [line.removeprefix("suggestion: ") for line in lines if line.startswith("suggestion: ")]
    assert any("did you mean 'a100'?" in tip for tip in suggestions), lines


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_missing_daemon_is_unavailable_with_a_hint(language: str, go_bins: Path) -> None:
    home = short_tmpdir("flow-none-")
    try:
        env = dict(os.environ, FLOW_HOME=str(home))
        done = _run(_program(language, "run_task", go_bins), env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert done.returncode == 1
    assert re.search("UNAVAILABLE|Unavailable", done.stderr), done.stderr
    assert f"no flowd is listening on {home}/flowd.sock" in done.stderr
    assert "flow daemon start" in done.stderr


# --- conformance vectors through the daemon's validation -----------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_instance_type_vectors_conform_through_the_daemon(language: str, shared_daemon: Daemon, go_bins: Path) -> None:
    vectors = json.loads(VECTORS.read_text())
    sendable = sum(1 for v in vectors if v["input"] != "")  # "" is an unset field in proto3
    argv = [str(TSX), "clients/ts/conformance.ts"] if language == "ts" else [str(go_bins / "conformance")]
    done = _run([*argv, str(VECTORS)], env=shared_daemon.env)
    summary = f"conformance: {len(vectors)} vectors, {sendable} checked, 0 mismatches"
    assert done.stdout.splitlines()[-1:] == [summary], done.stdout + done.stderr
    assert done.returncode == 0
