"""FlowApp functions and zero-import invoke, through a real flowd and the local provider."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, Daemon
from flow import Flow, TaskStatus, invoke
from flow.errors import FlowError, TaskExecutionError, ValidationError
from flow.errors import TimeoutError as FlowTimeoutError

MODULE = """
from flow import FlowApp

app = FlowApp()


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


@app.function()
def add(a, b=1):
    return {"sum": a + b, "type": type(a).__name__}


@app.function()
def fail(x):
    raise KeyError(f"no key {x}")


@app.function(encoding="pickle")
def move(p, dx):
    return Point(p.x + dx, p.y)


@app.function(encoding="pickle")
def fail_custom(x):
    class Local(Exception):
        pass
    raise ArithmeticError(x)


@app.function()
def returns_a_set():
    return {1, 2}


@app.function()
def huge():
    return "x" * (20 * 1024 * 1024)


@app.function()
def square(x):
    return x * x


@app.function()
def wait_for(path):
    import os, time
    while not os.path.exists(path):
        time.sleep(0.02)
    return "opened"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_daemon: Daemon) -> Path:
    (tmp_path / "fns.py").write_text(MODULE)
    (tmp_path / "train.py").write_text(
        "def train_model(data_path: str, epochs: int = 100):\n"
        "    return {'accuracy': 0.95, 'epochs': epochs, 'data': data_path, 'epochs_type': type(epochs).__name__}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLOW_HOME", str(shared_daemon.home.root))
    sys.modules.pop("fns", None)
    return tmp_path


def test_remote_returns_the_value_and_a_plain_call_runs_locally(project: Path) -> None:
    import fns

    assert fns.add.remote(2, b=3) == {"sum": 5, "type": "int"}
    assert fns.add(2) == {"sum": 3, "type": "int"}


def test_remote_exception_keeps_its_type_message_and_traceback(project: Path) -> None:
    import fns

    with pytest.raises(KeyError) as caught:
        fns.fail.remote("k")
    error = caught.value
    assert isinstance(error, TaskExecutionError)
    assert error.remote_type == "builtins.KeyError"
    assert "no key k" in str(error)
    assert 'raise KeyError(f"no key {x}")' in error.remote_traceback


def test_pickle_encoding_carries_python_objects_and_exceptions(project: Path) -> None:
    import fns

    moved = fns.move.remote(fns.Point(1, 2), 10)
    assert (type(moved).__name__, moved.x, moved.y) == ("Point", 11, 2)
    with pytest.raises(ArithmeticError) as caught:
        fns.fail_custom.remote("why")
    assert caught.value.args == ("why",)
    assert any("Remote traceback" in note for note in caught.value.__notes__)


def test_spawn_result_from_another_process(project: Path, shared_daemon: Daemon) -> None:
    import fns

    task = fns.add.spawn(40, b=2)
    probe = f"from flow import Flow; print(Flow().get_task({task.task_id!r}).result())"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOW_HOME": str(shared_daemon.home.root)},
    )
    assert done.returncode == 0, done.stderr
    assert ast.literal_eval(done.stdout.strip()) == {"sum": 42, "type": "int"}


def test_map_over_100_inputs_keeps_their_order(project: Path) -> None:
    import fns

    assert fns.square.map(range(100), max_concurrency=16) == [x * x for x in range(100)]


def test_map_raises_the_first_failure(project: Path) -> None:
    import fns

    with pytest.raises(KeyError):
        fns.fail.map(["a", "b"])


def test_unserializable_and_oversized_results_are_clear_errors(project: Path) -> None:
    import fns

    with pytest.raises(TaskExecutionError) as not_json:
        fns.returns_a_set.remote()
    assert "JSON cannot hold" in str(not_json.value) and "encoding='pickle'" in str(not_json.value)
    with pytest.raises(TaskExecutionError) as too_big:
        fns.huge.remote()
    assert "above the 16 MB limit" in str(too_big.value)


def test_wrong_arguments_fail_before_submitting(project: Path) -> None:
    import fns

    before = len(Flow().list_tasks(limit=1000))
    with pytest.raises(ValidationError) as caught:
        fns.add.remote(1, 2, 3)
    assert "add(a, b=1)" in str(caught.value)
    with pytest.raises(ValidationError) as not_json:
        fns.add.remote({1, 2})
    assert "encoding='pickle'" in str(not_json.value)
    assert len(Flow().list_tasks(limit=1000)) == before


def test_invoke_with_json_arguments_from_the_sdk(project: Path) -> None:
    result = invoke("train.py", "train_model", args=["s3://bucket/data"], kwargs={"epochs": 200})
    assert result == {"accuracy": 0.95, "epochs": 200, "data": "s3://bucket/data", "epochs_type": "int"}


def test_invoke_with_pickle_encoding(project: Path) -> None:
    result = invoke("train.py", "train_model", args=["d"], kwargs={"epochs": 3}, encoding="pickle")
    assert result["epochs"] == 3 and result["epochs_type"] == "int"


def test_invoke_checks_file_function_and_signature_before_submitting(project: Path) -> None:
    with pytest.raises(ValidationError, match=r"no file 'missing\.py'"):
        invoke("missing.py", "f")
    with pytest.raises(ValidationError, match="defines no function 'nope'") as caught:
        invoke("train.py", "nope")
    assert "train_model" in caught.value.suggestions[0]
    with pytest.raises(ValidationError, match="unexpected keyword argument 'epoch'"):
        invoke("train.py", "train_model", args=["x"], kwargs={"epoch": 1})
    (project / "broken.py").write_text("def f(:\n")
    with pytest.raises(ValidationError, match="not valid Python"):
        invoke("broken.py", "f")


def test_invoke_from_the_cli(project: Path, shared_daemon: Daemon) -> None:
    env = {**shared_daemon.env}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "flow"),
            "invoke",
            "train.py",
            "train_model",
            "--args",
            '["s3://b"]',
            "--kwargs",
            '{"epochs": 7}',
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=project,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"accuracy": 0.95, "epochs": 7, "data": "s3://b", "epochs_type": "int"}
    failing = subprocess.run(
        [str(Path(sys.executable).parent / "flow"), "invoke", "fns.py", "fail", "--args", '["z"]'],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=project,
        env=env,
    )
    assert failing.returncode == 1
    assert "KeyError" in failing.stderr and "Traceback" in failing.stderr


def test_result_waits_for_the_task_and_leaves_it_finished(project: Path) -> None:
    import fns

    gate = project / "gate"
    task = fns.wait_for.spawn(str(gate))
    with pytest.raises(FlowTimeoutError):  # flowd waited the half second, the function still runs
        task.result(timeout=0.5)
    gate.touch()
    assert task.result(timeout=60) == "opened"
    assert task.last_status is TaskStatus.COMPLETED  # the answer carried the finished task


def test_result_of_a_command_task_is_a_clear_error(project: Path) -> None:
    task = Flow().run("true", upload_code=False).wait(timeout=30)
    with pytest.raises(FlowError, match="runs a command, not a function"):
        task.result()


def test_module_level_remote_call_is_refused_inside_the_task(project: Path) -> None:
    (project / "loop.py").write_text(
        textwrap.dedent(
            """
            from flow import FlowApp
            app = FlowApp()

            @app.function()
            def f():
                return 1

            f.remote()  # unguarded: would launch tasks from inside the task
            """
        )
    )
    with pytest.raises(TaskExecutionError, match="__name__"):
        invoke("loop.py", "f")


def test_examples_train_model_zero_import(shared_daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO / "examples")
    monkeypatch.setenv("FLOW_HOME", str(shared_daemon.home.root))
    result = invoke("train.py", "train_model", args=["s3://bucket/data"], kwargs={"epochs": 2, "steps": 1})
    assert set(result) == {"accuracy", "loss"}


def test_examples_decorated_app_runs_as_written(shared_daemon: Daemon) -> None:
    done = subprocess.run(
        [sys.executable, "decorated.py"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO / "examples",
        env=shared_daemon.env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "local: {'data': './local.csv', 'epochs': 2, 'loss': 0.81}"
    assert lines[1].startswith("remote: {") and "'epochs': 200" in lines[1]
    assert lines[-1] == "map: [0, 1, 4, 9, 16]"


def test_task_status_after_a_raising_function_is_failed(project: Path) -> None:
    import fns

    task = fns.fail.spawn("x")
    with pytest.raises(KeyError):
        task.result()
    assert task.last_status is TaskStatus.FAILED and task.exit_code == 1


def test_a_call_from_another_language_with_wrong_arguments_says_why(project: Path) -> None:
    """Clients in other languages skip the SDK's checks: the runner explains the mismatch."""
    from flow.config import TaskConfig
    from flow.domain.task.function_call import FunctionCall

    flow = Flow()
    call = FunctionCall(function="train_model", path="train.py", args=(), kwargs={"epoch": 3})
    task = flow.submit(TaskConfig(code_root=str(project)), function_call=call)
    with pytest.raises(TaskExecutionError) as caught:
        task.result(timeout=60)
    assert "train_model(data_path: str, epochs: int = 100) cannot take these arguments" in str(caught.value)
    assert task.last_status is TaskStatus.FAILED and task.exit_code == 2


def test_a_missing_function_found_only_in_the_task_is_reported(project: Path) -> None:
    from flow.config import TaskConfig
    from flow.domain.task.function_call import FunctionCall

    flow = Flow()
    task = flow.submit(TaskConfig(code_root=str(project)), function_call=FunctionCall(function="nope", path="train.py"))
    with pytest.raises(TaskExecutionError, match=r"train\.py has no function 'nope'; it defines: train_model"):
        task.result(timeout=60)


def test_a_function_path_missing_from_the_upload_is_refused_before_launch(project: Path) -> None:
    from flow.config import TaskConfig
    from flow.domain.task.function_call import FunctionCall

    with pytest.raises(ValidationError, match="is not in the uploaded code"):
        Flow().submit(TaskConfig(code_root=str(project)), function_call=FunctionCall(function="f", path="ghost.py"))
