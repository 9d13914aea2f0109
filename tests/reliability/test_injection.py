"""Quotes, $(), backticks, newlines and globs in a task's arguments and environment reach the
program exactly as the user gave them, through flowd and the local provider's real shell wrapper,
and are never executed (a canary `$(touch ...)` must not create its file); a shell string is
evaluated exactly once, by the bash the user asked for; NUL bytes are refused with a validation
error naming the field."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import channel

from conftest import Daemon
from flow_strategies import any_text
from flowapi.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

# Prints what the program received: its arguments and the INJ_* variables, as ASCII JSON.
PROBE = (
    "import json, os, sys; "
    "sys.stdout.write(json.dumps({'argv': sys.argv[1:], "
    "'env': {k: v for k, v in os.environ.items() if k.startswith('INJ_')}}))"
)


def hostile_values(canary: Path) -> list[str]:
    return [
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"'; touch {canary}; '",
        f'"; touch {canary}; "',
        f"\ntouch {canary}\n",
        f"$(touch {canary})\n$(touch {canary})",
        f"> {canary}",
        f"| touch {canary}",
        f"&& touch {canary}",
        f"; touch {canary}",
        "${HOME}",
        "$((6*7))",
        "$'\\x41'",
        "$IFS",
        "*",
        "~",
        "!!",
        "-c",
        "--",
        "",
        " ",
        "a  b\tc",
        "\\",
        "\\'\\\"",
        "%s%n",
        "\r\n",
        "é😀\u202e",
        "=",
        "x=y",
    ]


class Runner:
    def __init__(self, daemon: Daemon) -> None:
        self.channel = channel(daemon)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)

    def run(self, spec: task_pb2.TaskSpec) -> tuple[task_pb2.Task, bytes]:
        spec.upload_code = False
        created = self.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=60).task
        wait = task_service_pb2.WaitTaskRequest(name=created.name)
        wait.timeout.seconds = 60
        final = self.tasks.WaitTask(wait, timeout=70).task
        logs = b"".join(
            c.data
            for c in self.tasks.StreamTaskLogs(task_service_pb2.StreamTaskLogsRequest(name=final.name), timeout=60)
        )
        return final, logs

    def probe(self, args: list[str], env: dict[str, str]) -> dict[str, Any]:
        spec = task_pb2.TaskSpec(command=[sys.executable, "-c", PROBE, *args], env=env)
        final, logs = self.run(spec)
        assert final.state == task_pb2.TASK_STATE_COMPLETED, (final.state_reason, logs)
        received: dict[str, Any] = json.loads(logs)
        return received


@pytest.fixture(scope="module")
def runner(shared_daemon: Daemon) -> Iterator[Runner]:
    runner = Runner(shared_daemon)
    yield runner
    runner.channel.close()


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / f"pwned-{uuid.uuid4().hex}"


def test_arguments_and_environment_arrive_verbatim_and_never_run(runner: Runner, canary: Path) -> None:
    values = hostile_values(canary)
    env = {f"INJ_{i}": value for i, value in enumerate(values)}
    received = runner.probe(values, env)
    assert received["argv"] == values
    assert received["env"] == env
    assert not canary.exists()


def test_a_shell_string_is_evaluated_once_by_bash(runner: Runner, canary: Path) -> None:
    # Single quotes keep $(...) literal for bash; a second evaluation anywhere would run it.
    shell = f"printf '%s\\n' '$(touch {canary})' \"$INJ_A\" \"$(printf '%s' ok)\""
    final, logs = runner.run(task_pb2.TaskSpec(shell=shell, env={"INJ_A": f"$(touch {canary}) `touch {canary}`"}))
    assert final.state == task_pb2.TASK_STATE_COMPLETED, final.state_reason
    assert logs.decode() == f"$(touch {canary})\n$(touch {canary}) `touch {canary}`\nok\n"
    assert not canary.exists()


def test_a_script_runs_as_written(runner: Runner, canary: Path) -> None:
    script = f"#!/bin/bash\nprintf '%s\\n' '$(touch {canary})' \"$INJ_A\"\n"
    final, logs = runner.run(task_pb2.TaskSpec(script=script, env={"INJ_A": f"`touch {canary}`"}))
    assert final.state == task_pb2.TASK_STATE_COMPLETED, final.state_reason
    assert logs.decode() == f"$(touch {canary})\n`touch {canary}`\n"
    assert not canary.exists()


def test_exec_arguments_arrive_verbatim_and_never_run(runner: Runner, canary: Path) -> None:
    spec = task_pb2.TaskSpec(command=["sleep", "600"], upload_code=False)
    task = runner.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=60).task
    try:
        values = hostile_values(canary)
        start = task_service_pb2.ExecStart(name=task.name, command=[sys.executable, "-c", PROBE, *values])
        replies = list(runner.tasks.ExecTask(iter([task_service_pb2.ExecTaskRequest(start=start)]), timeout=60))
        assert json.loads(b"".join(r.stdout for r in replies))["argv"] == values
        assert replies[-1].exit_code == 0
        assert not canary.exists()
    finally:
        runner.tasks.CancelTask(task_service_pb2.CancelTaskRequest(name=task.name), timeout=60)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (task_pb2.TaskSpec(command=["echo", "a\x00b"]), "command[1]"),
        (task_pb2.TaskSpec(command=["echo"], env={"INJ_A": "a\x00$(touch /tmp/x)"}), "env['INJ_A']"),
        (task_pb2.TaskSpec(shell="echo a\x00b"), "shell"),
        (task_pb2.TaskSpec(script="#!/bin/sh\necho \x00"), "script"),
        (task_pb2.TaskSpec(command=["echo"], name="$(touch x)"), "name"),
        (task_pb2.TaskSpec(command=["echo"], env={"A;touch x": "v"}), "env['A;touch x']"),
    ],
)
def test_nul_bytes_and_unsafe_names_are_refused_by_field(runner: Runner, spec: task_pb2.TaskSpec, field: str) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    with pytest.raises(grpc.RpcError) as caught:
        runner.tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in status.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    assert [v.field for v in bad.field_violations] == [field]


ENV_NAMES = st.from_regex(r"INJ_[A-Za-z0-9_]{1,12}", fullmatch=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    args=st.lists(
        st.one_of(any_text(max_size=60), st.sampled_from(hostile_values(Path("/tmp/flow-h-canary")))), max_size=6
    ),
    env=st.dictionaries(ENV_NAMES, any_text(max_size=60), max_size=4),
)
def test_any_text_reaches_the_program_exactly(runner: Runner, args: list[str], env: dict[str, str]) -> None:
    received = runner.probe(args, env)
    assert received["argv"] == args
    assert received["env"] == env
    assert not Path("/tmp/flow-h-canary").exists()
