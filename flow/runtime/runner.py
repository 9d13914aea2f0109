"""Runs one Python function inside a task and records what it returned or raised.

This file is copied into the task and run by the task's own interpreter, so it imports nothing
but the standard library (and cloudpickle, only for the PICKLE encoding). The user's code imports
nothing from Flow either.

    python3 runner.py INVOCATION_JSON RESULT_JSON

INVOCATION_JSON names the function ("path" to a file relative to the working directory, or a
"module"), its "function", and its "args"/"kwargs" (JSON) or "pickled_arguments" (base64 of
cloudpickle). A method of an `@app.cls` class is called as its class with one keyword argument,
CLASS_CALL: {"method", "params", "enter", "exit", "args", "kwargs"} (see call_method).
RESULT_JSON receives {"ok": true, "value": ...} or {"ok": false, "error": {...}}, written
atomically. Exit status: 0 when the function returned, 1 when it raised, 2 when it could
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
CLASS_CALL = "__flow_class_call__"


class CallError(Exception):
    """The function could not be called as asked (exit status 2)."""


def restore_integers(value: Any) -> Any:
    """JSON numbers travel as doubles (google.protobuf.Value): integral ones become int again,
    as json.loads would have made them. (flow.domain.task.function_call has the same rule; this file
    runs inside tasks without Flow installed, so it cannot import it.)"""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, list):
        return [restore_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: restore_integers(v) for k, v in value.items()}
    return value


class _StandIn:
    """Whatever a module asks of `flow` where Flow is not installed: `FlowApp()`, `app.function(...)`,
    `app.cls(...)`, `flow.on_enter()`, `flow.param(...)`, `flow.Secret.from_env(...)`. Used as a
    decorator, it leaves what it decorates as it is (the task calls it itself); anything else
    gives another stand-in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return _StandIn()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn()


def _stand_in_attribute(name: str) -> Any:
    if name.startswith("__"):  # __path__, __file__, ...: what the import system asks a module
        raise AttributeError(name)
    return _StandIn()


def flow_stand_in() -> None:
    """A task on a machine without Flow installed (a cluster node, a cloud instance) still imports
    a module written with `from flow import FlowApp`: the task calls the function itself, so the
    decorators have nothing to do there."""
    try:
        importlib.import_module("flow")
    except ImportError:
        stand_in = types.ModuleType(
            "flow", "Flow is not installed here; its names are stand-ins (flow.runtime.runner)."
        )
        stand_in.__getattr__ = _stand_in_attribute  # type: ignore[method-assign]
        sys.modules["flow"] = stand_in


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """Marks the import of the user's module, so that a .remote() at its top level fails clearly
    instead of launching tasks from inside this task (flow.remote_call.IMPORTING_ENV)."""
    flow_stand_in()
    os.environ[IMPORTING_ENV] = "1"
    try:
        yield
    finally:
        del os.environ[IMPORTING_ENV]


def import_target(spec: dict[str, Any]) -> tuple[Any, str]:
    """Imports the module the call names ("path" relative to the working directory, or
    "module"); (the module, how the call named it)."""
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
        return module, spec["path"]
    sys.path.insert(0, os.getcwd())
    with importing():
        module = importlib.import_module(spec["module"])
    return module, spec["module"]


def function_in(module: Any, where: str, name: str) -> Any:
    function = getattr(module, name, None)
    if function is None or not callable(function):
        found = sorted(
            n for n, v in vars(module).items() if isinstance(v, types.FunctionType) and not n.startswith("_")
        )
        raise CallError(f"{where} has no function {name!r}; it defines: {', '.join(found) or 'no functions'}")
    # FlowApp.function wraps the user's function; call the original, not the remote wrapper.
    return getattr(function, "__flow_wrapped__", function)


def load_function(spec: dict[str, Any]) -> Any:
    module, where = import_target(spec)
    return function_in(module, where, spec["function"])


def load_arguments(spec: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    if spec.get("encoding") == "pickle":
        import cloudpickle  # the PICKLE encoding needs it in the task's environment

        args, kwargs = cloudpickle.loads(__import__("base64").b64decode(spec["pickled_arguments"]))
        return list(args), dict(kwargs)
    return restore_integers(spec.get("args") or []), restore_integers(spec.get("kwargs") or {})


def call_method(cls: type, call: dict[str, Any]) -> Any:
    """A method of an `@app.cls` class, as flow-compute runs one per task: the class made with no
    arguments, its parameters set, its on_enter hooks run, the method called, then its on_exit
    hooks (also when something raised)."""
    instance = cls()
    for name, value in call["params"].items():
        setattr(instance, name, value)
    for hook in call["enter"]:
        getattr(instance, hook)()
    try:
        return getattr(instance, call["method"])(*call["args"], **call["kwargs"])
    finally:
        for hook in call["exit"]:
            getattr(instance, hook)()


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


def run_call(spec: dict[str, Any], result_path: str, load: Any = load_function) -> int:
    """Calls the function `spec` names (found by `load(spec)`), writes the result document to
    `result_path`; the exit status (module docstring)."""
    encoding = spec.get("encoding", "json")
    try:
        function = load(spec)
        args, kwargs = load_arguments(spec)
    except CallError as exc:
        print(f"flow: {exc}", file=sys.stderr)
        write_result(result_path, encode_error(exc, "json", kind="uncallable"))
        return 2
    except BaseException as exc:  # noqa: BLE001 - importing the user's module raised
        __import__("traceback").print_exc()
        write_result(result_path, encode_error(exc, encoding, kind="import"))
        return 2
    if isinstance(function, type) and not args and list(kwargs) == [CLASS_CALL]:
        function, args, kwargs = call_method, [function, kwargs[CLASS_CALL]], {}
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
    except Exception as exc:  # noqa: BLE001 - whatever encoding the value raises is reported to the caller
        print(f"flow: {exc}", file=sys.stderr)
        write_result(result_path, encode_error(exc, "json", kind="unreturnable"))
        return 1
    write_result(result_path, result)
    return 0


def main(argv: list[str]) -> int:
    invocation_path, result_path = argv[1], argv[2]
    with open(invocation_path) as source:
        spec = json.load(source)
    return run_call(spec, result_path)


# --- the warm interpreter -----------------------------------------------------------------------
#
# flowd (daemon/flowd/providers/warm_python.py) keeps this file running as a fork server, started
# by the same interpreter with the same environment (minus the per-task variables) as a task's
# own `python flow_runner.py ...` would be, and stopped at the start of main(): everything a cold
# start does before it calls a function is done once. Each call forks a wrapper (the keeper's
# part: the task's directory and output, the exit status file) which
# forks the task's process; that one takes the task's environment, argv and sys.path[0], then
# runs the task's copy of this file as __main__, exactly as `python` would.

SERVE_FLAG = "--serve"
TITLE_ROOM = 4096  # the zygote's last argument: room for the titles its children give themselves


def _signals() -> Any:
    return importlib.import_module("_signal")  # loaded by every interpreter at start-up


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """One length-prefixed JSON message (`_write_frame`'s), or None at EOF (the writer went away)
    or, given a `deadline` (time.monotonic()), once it passes. Bad JSON raises ValueError.
    flowd reads the zygote's and the warm workers' replies with it too (warm_python)."""
    data = b""
    need = 4
    length = -1
    while True:
        while len(data) < need:
            if deadline is not None:
                import select
                import time

                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return None
            chunk = os.read(fd, need - len(data))
            if not chunk:
                return None
            data += chunk
        if length < 0:
            length = int.from_bytes(data, "big")
            data, need = b"", length
            continue
        return json.loads(data)


def _write_frame(fd: int, message: Any) -> None:
    data = json.dumps(message).encode()
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data) :]


def title_area() -> tuple[int, int]:
    """Where this process's command line lives in its memory (forked children share it)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            raw = stat.read()
        fields = raw[raw.rfind(b")") + 2 :].split()
        return int(fields[45]), int(fields[46])
    except (OSError, ValueError, IndexError):
        return 0, 0


def retitle(parts: list[str], area: tuple[int, int]) -> None:
    """Rewrites this process's command line (what /proc/PID/cmdline and ps show), in the memory
    the kernel reads it from. Best effort: the room is the zygote's original argv."""
    start, end = area
    if end <= start:
        return
    data = b"\0".join(p.encode() for p in parts)[: end - start - 1]
    try:
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(data + b"\0" * (end - start - len(data)))
    except OSError:
        pass


def _retarget(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_retarget(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _run_task(
    request: dict[str, Any], compiled: tuple[bytes, types.CodeType], baseline: set[str], area: tuple[int, int]
) -> None:
    """In the task's process: become what a cold `python flow_runner.py ...` is, then run it."""
    signals = _signals()
    signals.signal(signals.SIGTERM, signals.SIG_DFL)
    signals.signal(signals.SIGINT, signals.default_int_handler)
    signals.signal(signals.SIGHUP, signals.SIG_IGN)  # as the keeper starts cold tasks (nohup)
    argv = list(request["argv"])  # [python, runner, invocation, result]
    retitle(argv, area)
    env = request["env"]  # the zygote's environment is this one without the per-task variables
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    os.environ["PWD"] = os.getcwd()  # as the keeper sets it for a cold task
    sys.argv = argv[1:]
    sys.orig_argv = list(argv)
    sys.path[0] = os.path.dirname(argv[1])
    for name in set(sys.modules) - baseline:  # what serving needed (gc): not in a cold start's state
        del sys.modules[name]
    with open(argv[1], "rb") as source:
        text = source.read()
    # The zygote compiled this very source once; only the file name differs (tracebacks name the
    # task's copy, as in a cold start).
    code = _retarget(compiled[1], argv[1]) if text == compiled[0] else compile(text, argv[1], "exec")
    main_module = sys.modules["__main__"]
    namespace = vars(main_module)
    builtins = namespace["__builtins__"]
    loader = type(namespace["__loader__"])("__main__", argv[1])  # a SourceFileLoader, as for any script
    namespace.clear()
    namespace.update(
        __name__="__main__",
        __doc__=None,
        __package__=None,
        __spec__=None,
        __loader__=loader,
        __file__=argv[1],
        __cached__=None,
        __builtins__=builtins,
    )
    exec(code, namespace)  # ends with sys.exit(main(sys.argv)): SystemExit, as in a cold start


def _start_ticks(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
        return raw[raw.rfind(b")") + 2 :].split()[19].decode()
    except (OSError, IndexError):
        return "None"


def _wrapper(
    request: dict[str, Any],
    ready: int,
    inherited: tuple[int, ...],
    compiled: tuple[bytes, types.CodeType],
    baseline: set[str],
    area: tuple[int, int],
) -> None:
    """The forked wrapper: what the keeper is for a cold task (the parent that records the exit
    status). Returns only in the task's process (to run it); the wrapper itself ends with os._exit."""
    try:
        for fd in inherited:
            os.close(fd)
        os.setsid()  # out of the zygote's session (the task gets one of its own below)
        signals = _signals()
        signals.signal(signals.SIGCHLD, signals.SIG_DFL)
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):  # outlive the program to record its status
            signals.signal(getattr(signals, name), signals.SIG_IGN)
        os.chdir(request["cwd"])
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        pid = os.fork()
    except BaseException as exc:  # noqa: BLE001 - reported to flowd, which fails the launch
        with contextlib.suppress(OSError):
            os.write(ready, f"E{exc}".encode())
        os._exit(127)
    if pid == 0:
        try:
            os.setsid()  # the task leads its own session and process group, as a cold task does
            if request.get("record"):
                fd = os.open(request["record"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(fd, f"{os.getpid()} {_start_ticks(os.getpid())}\n".encode())
                os.close(fd)
            os.write(ready, f"ok {os.getpid()}".encode())  # once its group exists: flowd signals it
        except BaseException as exc:  # noqa: BLE001 - reported to flowd, which fails the launch
            with contextlib.suppress(OSError):
                os.write(ready, f"E{exc}".encode())
            os._exit(127)
        os.close(ready)
        _run_task(request, compiled, baseline, area)
        raise SystemExit(0)
    os.close(ready)
    # Found by its marker, as a cold task's keeper is by its name (what `ps` shows).
    retitle(["flow-warm-python", request["marker"]], area)
    while True:
        try:
            # The status is recorded while the task is still a zombie: whoever watches its pid
            # finds the status on disk once it is gone.
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            if info is None:  # (only with WNOHANG)
                continue
            code = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
            break
        except ChildProcessError:
            code = 127
            break
        except InterruptedError:
            continue
    with contextlib.suppress(OSError):
        fd = os.open(request["exit_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # as `>"$f"`
        os.write(fd, f"{code}\n".encode())
        os.close(fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    os._exit(code & 0xFF)


def serve(requests: int, replies: int) -> None:
    """The fork server's loop: one request (JSON) per task, answered with the task's pid once
    its process leads its own session. Ends when flowd closes the pipe. Wrappers are reaped by
    the kernel (SIGCHLD ignored here; the wrapper resets it)."""
    baseline = set(sys.modules)
    signals = _signals()
    signals.signal(signals.SIGCHLD, signals.SIG_IGN)
    with open(__file__, "rb") as source:
        text = source.read()
    compiled = (text, compile(text, __file__, "exec"))
    area = title_area()
    _write_frame(replies, {"pid": os.getpid(), "paths": list(sys.path)})
    # What exists now is the zygote's: a task's collector need not walk it (or copy its pages).
    importlib.import_module("gc").freeze()
    while True:
        request = read_frame(requests)
        if request is None:
            os._exit(0)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            _wrapper(request, ready_w, (requests, replies), compiled, baseline, area)
            return  # the task's process: back to the top level, which runs nothing more
        os.close(ready_w)
        answer = os.read(ready_r, 4096)
        os.close(ready_r)
        if answer.startswith(b"ok "):
            _write_frame(replies, {"pid": int(answer[3:])})
        else:
            _write_frame(replies, {"error": answer[1:].decode(errors="replace") or "the wrapper died"})


# --- the warm worker ----------------------------------------------------------------------------
#
# flowd (daemon/flowd/providers/warm_workers.py) keeps this file running as a warm worker of one
# function's module (`keep_warm`): started in the worker's own copy of the code snapshot, with the
# task's environment minus the per-call variables. It imports the module on its first call and
# keeps it: each call runs here, one at a time, with its task's output, result and exit status
# files. What a call shares with the calls before it is listed in warm_workers.py (and the README).

WORKER_FLAG = "--worker"


def _module_cache() -> Any:
    """A `load` for run_call that imports each module once, then finds the functions in it."""
    modules: dict[tuple[str, str], tuple[Any, str]] = {}

    def load(spec: dict[str, Any]) -> Any:
        key = (spec.get("path") or "", spec.get("module") or "")
        found = modules.get(key)
        if found is None:
            found = modules[key] = import_target(spec)
        return function_in(found[0], found[1], spec["function"])

    return load


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _warm_call(request: dict[str, Any], home: str, environment: dict[str, str], load: Any) -> int:
    """One call in this worker: its output into its task's log, back in the worker's directory
    and environment (plus the call's own variables), then the call as a cold task runs it."""
    _flush()  # what earlier calls left buffered belongs to their logs
    output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.chdir(home)
    wanted = {**environment, **request["env"]}
    if os.environ != wanted:
        os.environ.clear()
        os.environ.update(wanted)
    code = run_call(request["spec"], request["result"], load)
    _flush()
    with contextlib.suppress(OSError):
        fd = os.open(request["exit_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, f"{code}\n".encode())
        os.close(fd)
    return code


def work(requests: int, replies: int) -> None:
    """The worker's loop: one request (JSON) per call, answered with its exit status once its
    result and exit status are written. After a call that did not return (it raised, or could
    not be called) the worker exits, so that nothing that call left behind reaches another; it
    exits too when flowd closes the pipe (flowd went away, or retired it) between calls."""
    home = os.getcwd()
    environment = dict(os.environ)
    load = _module_cache()
    _write_frame(replies, {"pid": os.getpid(), "paths": list(sys.path)})
    while True:
        request = read_frame(requests)
        if request is None:
            os._exit(0)
        code = _warm_call(request, home, environment, load)
        try:
            _write_frame(replies, {"task_id": request["task_id"], "code": code})
        except OSError:  # flowd went away during the call: a later flowd reads the exit status file
            os._exit(0)
        if code != 0:
            os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] == [SERVE_FLAG]:
        serve(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == [WORKER_FLAG]:
        work(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main(sys.argv))
