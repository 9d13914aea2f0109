"""The TypeScript and Go clients drive a real flowd: their examples run a task, stream its logs,
wait for it, decode errors, and call a Python function (code upload, invoke, the remote error);
their conformance programs check every instance-type vector through the daemon's own validation.

Node and Go are required, never skipped: `make test` installs node_modules and the Go modules
first (and fails loudly when node or go is missing).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Daemon, short_tmpdir
from flow import Flow, TaskStatus
from flow.domain.task.dependencies import Condition, Dependency

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
        builds = (
            ("examples/go", ["./run_task", "./validation_error", "./invoke", "./pipeline"]),
            ("clients/go", ["./cmd/conformance"]),
        )
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


# --- a pipeline: depends_on from TypeScript and Go ------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_pipeline_example_holds_the_second_step_until_the_first_completes(
    language: str, shared_daemon: Daemon, flow: Flow, go_bins: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    argv = [*_program(language, "pipeline", go_bins), f"while [ ! -e {gate} ]; do sleep 0.05; done; echo step one"]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=shared_daemon.env
    ) as run:
        assert run.stdout is not None
        first = re.fullmatch(r"created (t-[a-z0-9]+)\n", run.stdout.readline())
        second = re.fullmatch(
            rf"created (t-[a-z0-9]+) after {first.group(1) if first else ''}:"
            r"DEPENDENCY_CONDITION_AFTER_OK\n",
            run.stdout.readline(),
        )
        assert first and second, run.communicate()
        one, two = first.group(1), second.group(1)
        # Held by flowd while the first step runs: PENDING, saying what it waits for.
        waiting = f"{two}: state=TASK_STATE_PENDING reason=waiting for {one} to complete (afterok)\n"
        assert run.stdout.readline() == waiting
        gate.touch()
        out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    assert out.splitlines() == [
        f"{one}: state=TASK_STATE_COMPLETED reason=exited with code 0",
        f"{two}: state=TASK_STATE_COMPLETED reason=exited with code 0",
    ]
    later = flow.get_task(two)
    assert later.started_at is not None and later.started_at >= flow.get_task(one).completed_at  # type: ignore[operator]
    assert later.logs() == "step two\n"
    assert later.config.depends_on == (Dependency(one, Condition.AFTER_OK),)
    assert later.config.priority == 5


@pytest.mark.parametrize("language", LANGUAGES)
def test_pipeline_example_cancels_the_second_step_when_the_first_fails(
    language: str, shared_daemon: Daemon, go_bins: Path
) -> None:
    done = _run([*_program(language, "pipeline", go_bins), "exit 3"], env=shared_daemon.env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    one, two = lines[0].removeprefix("created "), lines[1].split(" ")[1]
    assert lines[-2:] == [
        f"{one}: state=TASK_STATE_FAILED reason=exited with code 3",
        f"{two}: state=TASK_STATE_CANCELLED reason=dependency {one} ended FAILED (afterok)",
    ]


# --- invoke: a Python function called from TypeScript and Go ---------------------------------------


def _train_model() -> Callable[..., Any]:
    """examples/train.py's train_model, imported here to compute what the task must return."""
    spec = importlib.util.spec_from_file_location("example_train", REPO / "examples" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[..., Any] = module.train_model
    return function


@pytest.fixture(scope="module")
def invoke_outputs(shared_daemon: Daemon, go_bins: Path) -> dict[str, list[str]]:
    """Each language's invoke example, run once with its default code root (examples/)."""
    outputs = {}
    for language in LANGUAGES:
        done = _run(_program(language, "invoke", go_bins), env=shared_daemon.env)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs[language] = done.stdout.splitlines()
    return outputs


@pytest.mark.parametrize("language", LANGUAGES)
def test_invoke_example_prints_the_json_result_and_the_remote_error(
    language: str, invoke_outputs: dict[str, list[str]]
) -> None:
    train_model = _train_model()
    expected = train_model("s3://bucket/data", epochs=2, steps=1)
    with pytest.raises(TypeError) as raised:
        train_model("s3://bucket/data", epochs="not a number")
    lines = invoke_outputs[language]
    assert len(lines) == 4, lines
    assert re.fullmatch(r"snapshot=sha256:[0-9a-f]{64}", lines[0]), lines
    assert lines[1] == "result=" + json.dumps(expected, sort_keys=True, separators=(",", ":"))
    assert lines[1] == 'result={"accuracy":0.1813,"loss":1.62}'
    assert lines[2] == f"remote_error type=builtins.TypeError message={raised.value}"
    assert re.fullmatch(r'remote_traceback=File ".*/train\.py", line \d+, in train_model', lines[3]), lines[3]


def test_invoke_examples_agree_across_languages(invoke_outputs: dict[str, list[str]]) -> None:
    """The same snapshot digest, the same result line and the same error in both languages (the
    traceback names each task's own directory)."""
    assert invoke_outputs["ts"][:3] == invoke_outputs["go"][:3]


def _tricky_tree(root: Path) -> None:
    """train.py plus what a snapshot must get right: nesting, modes, an empty file, a file of
    several pieces, duplicate content, names that need JSON escapes or sort differently by UTF-16
    than by code point, symlinks, and directories every client skips."""
    shutil.copy(REPO / "examples" / "train.py", root / "train.py")
    (root / "pkg" / "sub").mkdir(parents=True)
    script = root / "pkg" / "sub" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "empty.txt").write_bytes(b"")
    big = os.urandom(2 * 1024 * 1024 + 12_345)  # fresh bytes: this tree's blobs are new to flowd
    (root / "big.bin").write_bytes(big)
    (root / "pkg" / "same-as-big.bin").write_bytes(big)
    (root / "a.txt").write_text("a")
    (root / "a-b").write_text("ab")
    (root / "a").mkdir()
    (root / "a" / "b.txt").write_text("a/b")
    (root / "donn\u00e9es").mkdir()
    (root / "donn\u00e9es" / "\u00e9t\u00e9.txt").write_text("\u00e9t\u00e9")
    (root / "z\uff5e.txt").write_text("fullwidth tilde")
    (root / "z\U0001f600.txt").write_text("emoji")
    (root / 'q"t\tt.txt').write_text("escapes")  # flowd refuses a backslash in a path
    (root / "link.txt").symlink_to("a.txt")  # a file symlink uploads its target
    (root / "dangling").symlink_to("nowhere")  # skipped
    (root / "dirlink").symlink_to("pkg")  # directory links are not followed
    for skipped in (".git/config", "node_modules/x/index.js", "pkg/__pycache__/m.cpython-311.pyc"):
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        (root / skipped).write_text("never uploaded")
    (root / "env" / "lib").mkdir(parents=True)  # a virtualenv under any name
    (root / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "env" / "lib" / "site.py").write_text("never uploaded")


UPLOADED = (
    "a-b",
    "a.txt",
    "a/b.txt",
    "big.bin",
    "donn\u00e9es/\u00e9t\u00e9.txt",
    "empty.txt",
    "link.txt",
    "pkg/same-as-big.bin",
    "pkg/sub/run.sh",
    'q"t\tt.txt',
    "train.py",
    "z\uff5e.txt",
    "z\U0001f600.txt",
)


@pytest.mark.parametrize("language", LANGUAGES)
def test_uploaded_snapshot_is_the_one_the_python_sdk_makes(
    language: str, shared_daemon: Daemon, flow: Flow, go_bins: Path
) -> None:
    root = short_tmpdir(f"flow-tree-{language}-")
    try:
        _tricky_tree(root)
        done = _run([*_program(language, "invoke", go_bins), str(root)], env=shared_daemon.env)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert lines[1] == 'result={"accuracy":0.1813,"loss":1.62}'  # train.py ran in this snapshot
        # The same manifest bytes as Python's, and every blob already in flowd: the client sent
        # them all (flowd checks each digest), so Python sends nothing.
        python = flow.upload_code(root)
        assert lines[0] == f"snapshot={python.digest}"
        assert (python.sent_files, python.sent_bytes) == (0, 0)
        manifest = json.loads((shared_daemon.home.root / "blobs" / "sha256" / python.digest[7:]).read_bytes())
        by_path = {f["path"]: f for f in manifest["files"]}
        assert sorted(by_path) == sorted(UPLOADED), "link.txt is a file symlink; the rest are skipped"
        assert by_path["pkg/sub/run.sh"]["executable"] is True
        assert by_path["train.py"]["executable"] is False
        assert by_path["big.bin"]["digest"] == by_path["pkg/same-as-big.bin"]["digest"]
        assert (by_path["empty.txt"]["size"], by_path["link.txt"]["size"]) == (0, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
