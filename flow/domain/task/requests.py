"""The checks of task requests, before anything is touched: CreateTask (its request id, secrets,
config, code snapshot and function call, judged together so every problem is named at once),
ExecTask, StreamTaskLogs, and the resource names of every task call.

Pure: the daemon passes in what only it can know (the code snapshot's manifest, or why it could
not load it; the sizes of a task's output files).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Final

from returns.result import Failure, Result, Success

from flow.domain.code.manifest import Manifest
from flow.domain.errors import DomainError, FieldViolation, validation_error, violation
from flow.domain.task.config import TaskConfig, task_config_violations
from flow.domain.task.function_call import FunctionCall, function_call_violations

MAX_REQUEST_ID: Final = 128
MAX_TASK_ID: Final = 64
MAX_WINDOW_SIZE: Final = 65535  # a terminal's rows and columns are 16-bit (struct winsize)
TASK_PREFIX: Final = "tasks/"


def task_id_from_name(name: str) -> Result[str, DomainError]:
    """'tasks/<id>' -> '<id>'."""
    task_id = name[len(TASK_PREFIX) :] if name.startswith(TASK_PREFIX) else ""
    if 0 < len(task_id) <= MAX_TASK_ID and all(c.isalnum() or c in "-_" for c in task_id) and task_id.isascii():
        return Success(task_id)
    return Failure(
        validation_error(
            [violation("name", name, "is not a task name", "give 'tasks/<task_id>', e.g. 'tasks/t-3kq9x2m4zr'")],
            subject="request",
        )
    )


def create_violations(
    config: TaskConfig,
    request_id: str,
    secrets: Mapping[str, str],
    code_digest: str | None,
    manifest: Manifest | None,
    manifest_problems: Sequence[FieldViolation],
    call: FunctionCall | None,
) -> Result[None, DomainError]:
    """A CreateTask request judged whole. `manifest` is the code snapshot's (None when there is
    none, or it could not be loaded: `manifest_problems` say why)."""
    if len(request_id) > MAX_REQUEST_ID or "\x00" in request_id:
        problem = f"must be at most {MAX_REQUEST_ID} characters without NUL"
        return Failure(
            validation_error([violation("request_id", request_id, problem, "use a UUID")], subject="request")
        )
    bad_secret = [
        violation(
            f"secret_env[{name!r}]", "<secret>", "has no value, or contains a NUL byte", f"set {name} when submitting"
        )
        for name in config.secret_env
        if isinstance(name, str) and (not secrets.get(name) or "\x00" in secrets[name])
    ]
    if bad_secret:
        return Failure(validation_error(bad_secret, subject="task configuration"))
    problems = [*task_config_violations(config), *manifest_problems, *_working_dir_violations(config, manifest)]
    if call is not None:
        problems.extend(function_call_violations(call, manifest, code_given=code_digest is not None))
        given = [
            (n, v)
            for n, v in (("command", config.command), ("shell", config.shell), ("script", config.script))
            if v is not None
        ]
        if given:
            field, value = given[0]
            fix = "a task runs either a command or a function, not both"
            problems.append(violation(field, value, "is given together with function_call", fix))
    if problems:
        return Failure(validation_error(problems, subject="task configuration"))
    return Success(None)


def _working_dir_violations(config: TaskConfig, manifest: Manifest | None) -> list[FieldViolation]:
    """A relative working_dir must be a directory of the code snapshot, on every provider (known
    here, before anything is launched, even where the code only reaches an instance later)."""
    wanted = config.working_dir
    if manifest is None or not isinstance(wanted, str) or not wanted or wanted.startswith("/"):
        return []
    inside = posixpath.normpath(wanted)
    if inside == "." or any(e.path.startswith(inside + "/") for e in manifest.entries):
        return []
    fix = "give a directory of your code (relative to code_root) that holds files, or leave working_dir out"
    return [violation("working_dir", wanted, "is not a directory of the uploaded code", fix)]


def exec_violations(argv: Sequence[str], rows: int, columns: int, term: str) -> Result[None, DomainError]:
    bad = [
        violation(f"command[{i}]", arg, "contains a NUL byte", "remove it")
        for i, arg in enumerate(argv)
        if "\x00" in arg
    ]
    if argv and not argv[0]:
        bad.append(violation("command[0]", "", "the program name is empty", "give a program, e.g. ['nvidia-smi']"))
    bad.extend(
        violation(f"window.{name}", size, f"must be at most {MAX_WINDOW_SIZE}", "give the terminal's real size")
        for name, size in (("rows", rows), ("columns", columns))
        if not 0 <= size <= MAX_WINDOW_SIZE
    )
    if "\x00" in term:
        bad.append(violation("term", term, "contains a NUL byte", "remove it"))
    if bad:
        return Failure(validation_error(bad, subject="exec request"))
    return Success(None)


def log_request_violations(
    tail_lines: int, offsets: Sequence[int], sizes: Sequence[int], cursor: str
) -> Result[None, DomainError]:
    """A log request's tail_lines, and its cursor against the output's sizes: output only grows,
    so no cursor of ours points past the end of a file."""
    if tail_lines < 0:
        fix = "give 0 for everything, or N for the last N lines"
        return Failure(
            validation_error([violation("tail_lines", tail_lines, "must not be negative", fix)], subject="log request")
        )
    past = [k for k, (offset, size) in enumerate(zip(offsets, sizes, strict=True)) if offset > size]
    if past:
        k = past[0]
        where = f"node {k}'s output" if len(sizes) > 1 else "the task's output"
        return Failure(
            validation_error(
                [
                    violation(
                        "cursor",
                        cursor,
                        f"points past the end of {where} ({sizes[k]} bytes)",
                        "pass back the cursor of the last chunk you received, or '' to start over",
                    )
                ],
                subject="log request",
            )
        )
    return Success(None)
