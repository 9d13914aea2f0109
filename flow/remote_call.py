"""Calling Python functions in tasks: the shared machinery of FlowApp.function and invoke.

Before anything is submitted, the call is checked here, where the caller can fix it: the file
exists and parses, it defines the function, and the arguments fit its signature (read with
`ast`, so the user's file is never imported on the submitting machine for `invoke`).
"""

from __future__ import annotations

import ast
import builtins
import inspect
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flow.errors import TaskExecutionError, ValidationError
from flow.runtime.runner import IMPORTING_ENV  # set while a task imports the user's file

if TYPE_CHECKING:  # the core is imported where it decides: `flow invoke` loads only what it uses
    from flow.domain.task.function_call import FunctionCall, RemoteError
    from flow.wire.function_codec import Returned

# ast.parse from several threads at once (invoke in threads, FlowApp.map) can fail on CPython 3.11
# with "SystemError: AST constructor recursion depth mismatch": the AST constructor's recursion
# counter is shared (python/cpython gh-106905; seen here on 3.11.7). So parses take turns.
_PARSE_LOCK = threading.Lock()


def refuse_nested_import_call(name: str) -> None:
    if os.environ.get(IMPORTING_ENV):
        raise TaskExecutionError(
            f"{name}.remote() ran while a task was importing your file to call a function in it",
            suggestions=['put module-level calls under `if __name__ == "__main__":`'],
        )


def _signature_from_ast(node: ast.FunctionDef | ast.AsyncFunctionDef) -> inspect.Signature:
    """The function's parameters as `inspect` would give them (defaults are placeholders)."""
    a = node.args
    params: list[inspect.Parameter] = []
    positional = [*a.posonlyargs, *a.args]
    first_default = len(positional) - len(a.defaults)
    for i, arg in enumerate(positional):
        kind = inspect.Parameter.POSITIONAL_ONLY if i < len(a.posonlyargs) else inspect.Parameter.POSITIONAL_OR_KEYWORD
        default = ... if i >= first_default else inspect.Parameter.empty
        params.append(inspect.Parameter(arg.arg, kind, default=default))
    if a.vararg:
        params.append(inspect.Parameter(a.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for arg, default_node in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        default = inspect.Parameter.empty if default_node is None else ...
        params.append(inspect.Parameter(arg.arg, inspect.Parameter.KEYWORD_ONLY, default=default))
    if a.kwarg:
        params.append(inspect.Parameter(a.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def check_arguments(name: str, signature: inspect.Signature, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        shown = str(signature).replace("=Ellipsis", "=...")
        raise ValidationError(
            f"{name}{shown} cannot be called with these arguments: {exc}",
            suggestions=[f"match the signature {name}{shown}"],
        ) from None


def check_file_function(path: Path, function: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Fails before submit when `path` cannot provide `function(*args, **kwargs)`."""
    if not path.is_file():
        raise ValidationError(
            f"no file {str(path)!r}",
            suggestions=[
                "give the path of the Python file that defines the function, relative to the current directory"
            ],
        )
    try:
        source = path.read_bytes()
        with _PARSE_LOCK:
            tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ValidationError(
            f"{path} is not valid Python: {exc.msg} (line {exc.lineno})",
            suggestions=[f"fix line {exc.lineno} of {path}"],
        ) from None
    defined = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    node = defined.get(function)
    if node is None:
        names = ", ".join(sorted(n for n in defined if not n.startswith("_"))) or "none"
        raise ValidationError(
            f"{path} defines no function {function!r} at its top level",
            suggestions=[f"functions it defines: {names}"],
        )
    check_arguments(function, _signature_from_ast(node), args, kwargs)


def check_call(call: FunctionCall) -> None:
    """The core's rules for a call (JSON-able arguments, names), before any upload."""
    from flow.domain.task.function_call import function_call_violations

    problems = function_call_violations(call, manifest=None)
    # Whether the file is in the uploaded code is for flowd to judge; everything else is ours.
    problems = tuple(p for p in problems if "needs the task's code" not in p.problem)
    if problems:
        from flow.domain.errors import validation_error
        from flow.wire.error_table import exception_from_domain_error

        raise exception_from_domain_error(validation_error(problems, subject="function call"))


def default_task_name(function: str) -> str:
    """An invoked function's task name when none is given: the function's, as a task name."""
    return function.replace("_", "-")[:63]


def relative_to_root(path: Path, root: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValidationError(
            f"{path} is outside the uploaded code root {root}",
            suggestions=["run from a directory that contains the file, or pass code_root=..."],
        ) from None


def _builtin_exception(qualified: str) -> type[BaseException] | None:
    module, _, name = qualified.rpartition(".")
    if module != "builtins":
        return None
    found = getattr(builtins, name, None)
    return found if isinstance(found, type) and issubclass(found, Exception) else None


def remote_exception(task_id: str, error: RemoteError) -> BaseException:
    """The exception to raise for a function that raised in task `task_id`.

    With the pickle encoding and an exception that unpickles, it is the very exception. Otherwise
    it is a TaskExecutionError that is also an instance of the remote builtin type (so `except
    ValueError` works), carrying the remote type, message and traceback."""
    if error.pickled:
        try:
            import cloudpickle

            original = cloudpickle.loads(error.pickled)
        except Exception:  # noqa: BLE001 - fall back to the text form
            original = None
        if isinstance(original, BaseException):
            original.add_note(f"Raised in Flow task {task_id}. Remote traceback:\n{error.traceback}")
            return original
    base = _builtin_exception(error.type)
    cls: type[TaskExecutionError] = TaskExecutionError
    if base is not None and base is not Exception:
        cls = type(f"Remote{base.__name__}", (TaskExecutionError, base), {})
    short = error.type.removeprefix("builtins.")
    raised = cls(
        f"{short}: {error.message}" if error.message else short,
        suggestions=[f"see the remote traceback (exception.remote_traceback) or `flow logs {task_id}`"],
    )
    raised.remote_type = error.type
    raised.remote_traceback = error.traceback
    raised.task_id = task_id
    raised.add_note(f"Remote traceback (task {task_id}):\n{error.traceback}")
    return raised


def decode_result(task_id: str, result: Returned) -> Any:
    """The returned value, or raises what the function raised."""
    if result.error is not None:
        raise remote_exception(task_id, result.error)
    if result.pickled:
        import cloudpickle

        return cloudpickle.loads(result.pickled)
    return result.value
