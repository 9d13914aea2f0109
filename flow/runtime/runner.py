"""Runs one Python function inside a task and records what it returned or raised.

This file is copied into the task and run by the task's own interpreter, so it imports nothing
but the standard library (and cloudpickle, only for the PICKLE encoding). The user's code imports
nothing from Flow either.

    python3 runner.py INVOCATION_JSON RESULT_JSON

INVOCATION_JSON names the function ("path" to a file relative to the working directory, or a
"module"), its "function", and its "args"/"kwargs" (JSON) or "pickled_arguments" (base64 of
cloudpickle). RESULT_JSON receives {"ok": true, "value": ...} or {"ok": false, "error": {...}},
written atomically. Exit status: 0 when the function returned, 1 when it raised, 2 when it could
not be called at all (missing file or function, wrong arguments).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import types

TYPE_CHECKING = False  # typing itself costs ~7 ms of start-up per call; mypy reads this name

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

MAX_RESULT_BYTES = 16 * 1024 * 1024
IMPORTING_ENV = "FLOW_IMPORTING_FOR_CALL"
MAX_SAFE_INTEGER = 2**53


class CallError(Exception):
    """The function could not be called as asked (exit status 2)."""


def restore_integers(value: Any) -> Any:
    """JSON numbers travel as doubles (google.protobuf.Value): integral ones become int again,
    as json.loads would have made them. (flow.domain.function_call has the same rule; this file
    runs inside tasks without Flow installed, so it cannot import it.)"""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, list):
        return [restore_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: restore_integers(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """Marks the import of the user's module, so that a .remote() at its top level fails clearly
    instead of launching tasks from inside this task (flow.remote_call.IMPORTING_ENV)."""
    os.environ[IMPORTING_ENV] = "1"
    try:
        yield
    finally:
        del os.environ[IMPORTING_ENV]


def load_function(spec: dict[str, Any]) -> Any:
    name = spec["function"]
    if spec.get("path"):
        path = os.path.abspath(spec["path"])
        if not os.path.isfile(path):
            raise CallError(f"no file {spec['path']!r} in the task's code (working directory {os.getcwd()})")
        sys.path.insert(0, os.path.dirname(path))
        module_name = os.path.splitext(os.path.basename(path))[0]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise CallError(f"cannot import {spec['path']!r} as Python")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        with importing():
            loader_spec.loader.exec_module(module)
        where = spec["path"]
    else:
        sys.path.insert(0, os.getcwd())
        with importing():
            module = importlib.import_module(spec["module"])
        where = spec["module"]
    function = getattr(module, name, None)
    if function is None or not callable(function):
        found = sorted(
            n for n, v in vars(module).items() if isinstance(v, types.FunctionType) and not n.startswith("_")
        )
        raise CallError(f"{where} has no function {name!r}; it defines: {', '.join(found) or 'no functions'}")
    # FlowApp.function wraps the user's function; call the original, not the remote wrapper.
    return getattr(function, "__flow_wrapped__", function)


def load_arguments(spec: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    if spec.get("encoding") == "pickle":
        import cloudpickle  # the PICKLE encoding needs it in the task's environment

        args, kwargs = cloudpickle.loads(__import__("base64").b64decode(spec["pickled_arguments"]))
        return list(args), dict(kwargs)
    return restore_integers(spec.get("args") or []), restore_integers(spec.get("kwargs") or {})


def signature_error(function: Any, exc: TypeError) -> CallError | None:
    """A CallError when `exc` came from calling `function` with arguments it cannot take (raised
    by the call itself, not inside the function); None otherwise. `inspect` is imported only
    here: it costs ~15 ms of start-up on every call."""
    if exc.__traceback__ is None or exc.__traceback__.tb_next is not None:
        return None
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    return CallError(f"{function.__name__}{signature} cannot take these arguments: {exc}")


def encode_value(value: Any, encoding: str) -> dict[str, Any]:
    if encoding == "pickle":
        import cloudpickle

        return {"ok": True, "pickled_value": __import__("base64").b64encode(cloudpickle.dumps(value)).decode()}
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the function returned a value JSON cannot hold ({exc}); return lists, dicts, strings, "
            "numbers, booleans or None, or call it with encoding='pickle'"
        ) from None
    return {"ok": True, "value": value}


def encode_error(exc: BaseException, encoding: str, kind: str = "raised") -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": "".join(__import__("traceback").format_exception(exc)),
        "kind": kind,
    }
    if encoding == "pickle":
        try:
            import cloudpickle

            error["pickled_exception"] = __import__("base64").b64encode(cloudpickle.dumps(exc)).decode()
        except Exception:  # noqa: BLE001 - an unpicklable exception still reports its text
            pass
    return {"ok": False, "error": error}


def write_result(path: str, result: dict[str, Any]) -> None:
    data = json.dumps(result, allow_nan=False).encode()
    if len(data) > MAX_RESULT_BYTES:
        size_mb = len(data) / 1e6
        data = json.dumps(
            encode_error(
                ValueError(
                    f"the result is {size_mb:.1f} MB, above the {MAX_RESULT_BYTES // 2**20} MB limit; "
                    "write large outputs to a file or volume and return its path"
                ),
                "json",
                kind="unreturnable",
            )
        ).encode()
    partial = f"{path}.partial"
    with open(partial, "wb") as out:
        out.write(data)
    os.replace(partial, path)


def main(argv: list[str]) -> int:
    invocation_path, result_path = argv[1], argv[2]
    with open(invocation_path) as source:
        spec = json.load(source)
    encoding = spec.get("encoding", "json")
    try:
        function = load_function(spec)
        args, kwargs = load_arguments(spec)
    except CallError as exc:
        print(f"flow: {exc}", file=sys.stderr)
        write_result(result_path, encode_error(exc, "json", kind="uncallable"))
        return 2
    except BaseException as exc:  # noqa: BLE001 - importing the user's module raised
        __import__("traceback").print_exc()
        write_result(result_path, encode_error(exc, encoding, kind="import"))
        return 2
    try:
        value = function(*args, **kwargs)
    except TypeError as exc:
        wrong_call = signature_error(function, exc)
        if wrong_call is not None:
            print(f"flow: {wrong_call}", file=sys.stderr)
            write_result(result_path, encode_error(wrong_call, "json", kind="uncallable"))
            return 2
        __import__("traceback").print_exc()
        write_result(result_path, encode_error(exc, encoding))
        return 1
    except BaseException as exc:  # noqa: BLE001 - the remote exception, reported to the caller
        __import__("traceback").print_exc()
        write_result(result_path, encode_error(exc, encoding))
        return 1
    try:
        result = encode_value(value, encoding)
    except Exception as exc:  # noqa: BLE001
        print(f"flow: {exc}", file=sys.stderr)
        write_result(result_path, encode_error(exc, "json", kind="unreturnable"))
        return 1
    write_result(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
