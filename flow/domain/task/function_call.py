"""Function calls inside tasks: what to call, with what, and what came back.

A `FunctionCall` names a function by file (relative to the code root) or module, with its
arguments as JSON values (any language can send them) or, opted in, as cloudpickle bytes. The
task's runner (flow.runtime.runner) writes a result document; `parse_result` reads it.
"""

from __future__ import annotations

import base64
import json
import keyword
from collections.abc import Mapping
from typing import Any, Final

from attrs import field, frozen
from returns.result import Failure, Result, Success

from flow.domain.code.manifest import Manifest, path_problem
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, violation
from flow.domain.task.json_values import json_problem

ENCODINGS: Final = ("json", "pickle")
MAX_ARGUMENT_BYTES: Final = 16 * 1024 * 1024
MAX_KEEP_WARM: Final = 16  # warm workers one function may keep (each is a whole interpreter)


def _as_tuple(value: object) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _as_dict(value: object) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


@frozen
class FunctionCall:
    function: str
    path: str | None = None
    module: str | None = None
    args: tuple[Any, ...] = field(default=(), converter=_as_tuple)
    kwargs: dict[str, Any] = field(factory=dict, converter=_as_dict, hash=False)
    encoding: str = "json"
    pickled_arguments: bytes = b""
    python: str | None = None
    keep_warm: int = 0  # warm worker processes flowd keeps for this function (0: one process per call)


@frozen
class RemoteError:
    type: str
    message: str
    traceback: str
    kind: str = "raised"  # raised | import | uncallable | unreturnable
    pickled: bytes = b""


@frozen
class FunctionResult:
    """A returned value (JSON, or pickled bytes) or the error the call ended with."""

    encoding: str
    value: Any = None
    pickled: bytes = b""
    error: RemoteError | None = None


def _identifier(text: object) -> bool:
    return isinstance(text, str) and text.isidentifier() and not keyword.iskeyword(text)


def keep_warm_violation(value: object, field_name: str = "keep_warm") -> FieldViolation | None:
    """Why `value` is not a number of warm workers (an int from 0 to MAX_KEEP_WARM), if it is not."""
    if isinstance(value, bool) or not isinstance(value, int):
        problem = f"is a {type(value).__name__}, not a whole number of worker processes"
    elif value < 0:
        problem = "is negative"
    elif value > MAX_KEEP_WARM:
        problem = f"is more than {MAX_KEEP_WARM}, the most warm workers one function may keep"
    else:
        return None
    fix = f"give a whole number from 0 (one process per call, the default) to {MAX_KEEP_WARM}, e.g. keep_warm=1"
    return violation(field_name, value, problem, fix)


def function_call_violations(
    call: FunctionCall, manifest: Manifest | None = None, code_given: bool = False
) -> tuple[FieldViolation, ...]:
    """Every problem with a call; with the code snapshot's manifest, a missing file too.
    `code_given`: a snapshot was named (even one that failed to load, which is its own error)."""
    out: list[FieldViolation] = []
    where = "function_call"
    if not _identifier(call.function):
        out.append(
            violation(
                f"{where}.function",
                call.function,
                "is not a Python function name",
                "give the function's name, e.g. 'train_model'",
            )
        )
    if (call.path is None) == (call.module is None):
        out.append(
            violation(
                f"{where}.path",
                call.path,
                "give exactly one of path and module",
                "e.g. path='train.py' or module='mypkg.train'",
            )
        )
    if call.path is not None:
        problem = path_problem(call.path) if isinstance(call.path, str) else "is not a string"
        if problem:
            out.append(
                violation(
                    f"{where}.path", call.path, problem, "give the file relative to the code root, e.g. 'train.py'"
                )
            )
        elif not call.path.endswith(".py"):
            out.append(
                violation(
                    f"{where}.path", call.path, "is not a .py file", "name the Python file that defines the function"
                )
            )
        elif manifest is not None and call.path not in {e.path for e in manifest.entries}:
            python_files = sorted(e.path for e in manifest.entries if e.path.endswith(".py"))[:10]
            shown = ", ".join(python_files) or "none"
            out.append(
                violation(
                    f"{where}.path",
                    call.path,
                    "is not in the uploaded code",
                    f"run from the directory that holds it, or check .flowignore; Python files uploaded: {shown}",
                )
            )
        elif manifest is None and not code_given:
            out.append(
                violation(
                    f"{where}.path",
                    call.path,
                    "needs the task's code, but no code was uploaded",
                    "submit with upload_code=True (the default) from the directory that holds the file",
                )
            )
    warm = keep_warm_violation(call.keep_warm, f"{where}.keep_warm")
    if warm is not None:
        out.append(warm)
    if call.module is not None and not (
        isinstance(call.module, str) and all(_identifier(p) for p in call.module.split("."))
    ):
        out.append(
            violation(f"{where}.module", call.module, "is not a module name", "give a dotted name, e.g. 'mypkg.train'")
        )
    if call.encoding not in ENCODINGS:
        out.append(
            violation(f"{where}.encoding", call.encoding, "is not an encoding", "use 'json' (default) or 'pickle'")
        )
    elif call.encoding == "json":
        fix = "pass JSON values (None, bool, int, float, str, list, dict with str keys), or use encoding='pickle'"
        for label, value in (
            ("args", list(call.args) if isinstance(call.args, tuple) else call.args),
            ("kwargs", call.kwargs),
        ):
            if label == "kwargs" and not isinstance(value, dict):
                out.append(violation(f"{where}.kwargs", value, "must be a mapping of names to values", fix))
                continue
            if label == "args" and not isinstance(value, list):
                out.append(violation(f"{where}.args", value, "must be a list", fix))
                continue
            problem = json_problem(value)
            if problem:
                out.append(violation(f"{where}.{label}", "<arguments>", problem, fix))
        if isinstance(call.kwargs, dict) and any(not _identifier(k) for k in call.kwargs):
            bad = next(k for k in call.kwargs if not _identifier(k))
            out.append(
                violation(f"{where}.kwargs", bad, "is not a keyword argument name", "use Python identifiers as keys")
            )
    elif not call.pickled_arguments:
        out.append(
            violation(
                f"{where}.pickled_arguments",
                "<empty>",
                "is required with encoding='pickle'",
                "send cloudpickle.dumps((args, kwargs))",
            )
        )
    if len(call.pickled_arguments) > MAX_ARGUMENT_BYTES:
        out.append(
            violation(
                f"{where}.pickled_arguments",
                f"{len(call.pickled_arguments)} bytes",
                "is too large",
                "pass large data through a file or volume and send its path",
            )
        )
    if call.python is not None and (not isinstance(call.python, str) or not call.python or "\x00" in call.python):
        out.append(
            violation(
                f"{where}.python", call.python, "is not an interpreter", "give e.g. 'python3' or '/opt/venv/bin/python'"
            )
        )
    return tuple(out)


def invocation_document(call: FunctionCall) -> dict[str, Any]:
    """What the runner reads (JSON), for a valid call."""
    document: dict[str, Any] = {"function": call.function, "encoding": call.encoding}
    if call.path is not None:
        document["path"] = call.path
    else:
        document["module"] = call.module
    if call.encoding == "pickle":
        document["pickled_arguments"] = base64.b64encode(call.pickled_arguments).decode()
    else:
        document["args"] = list(call.args)
        document["kwargs"] = dict(call.kwargs)
    return document


def _bad_result(why: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.TASK_EXECUTION_FAILED,
        message=f"the task's result could not be read: {why}",
        suggestions=("look at the task's logs",),
    )


def parse_result(data: bytes, encoding: str) -> Result[FunctionResult, DomainError]:
    """The runner's result document."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Failure(_bad_result("it is not JSON"))
    if not isinstance(document, dict) or not isinstance(document.get("ok"), bool):
        return Failure(_bad_result("it has no 'ok' field"))
    if document["ok"]:
        if "pickled_value" in document:
            try:
                pickled = base64.b64decode(document["pickled_value"], validate=True)
            except (ValueError, TypeError):
                return Failure(_bad_result("its pickled value is not base64"))
            return Success(FunctionResult(encoding="pickle", pickled=pickled))
        return Success(FunctionResult(encoding=encoding, value=document.get("value")))
    error = document.get("error")
    if not isinstance(error, dict):
        return Failure(_bad_result("it has no error"))
    pickled_exc = b""
    if isinstance(error.get("pickled_exception"), str):
        try:
            pickled_exc = base64.b64decode(error["pickled_exception"], validate=True)
        except (ValueError, TypeError):
            pickled_exc = b""
    return Success(
        FunctionResult(
            encoding=encoding,
            error=RemoteError(
                type=str(error.get("type", "builtins.Exception")),
                message=str(error.get("message", "")),
                traceback=str(error.get("traceback", "")),
                kind=str(error.get("kind", "raised")),
                pickled=pickled_exc,
            ),
        )
    )
