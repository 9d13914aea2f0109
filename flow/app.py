"""FlowApp: Python functions that run as tasks.

    app = FlowApp()

    @app.function(gpu="a100", memory=32768)
    def train_model(data_path: str, epochs: int = 100) -> dict: ...

    train_model("./local.csv")                  # a plain local call
    train_model.remote("s3://bucket/data")      # runs in a task, returns its value
    task = train_model.spawn("s3://bucket/data"); task.result()
    evaluate.spawn(depends_on=[task])           # starts once that task has completed
    train_model.map(["a", "b", "c"])            # one task per input, results in order

The task imports the function from a snapshot of the code root (the current directory) and
calls it with the arguments; JSON values by default, any Python object with encoding="pickle".

The spellings of the Mithril platform's SDK (flow-compute) work too: `.local()`, `.starmap()`,
map's `max_concurrent=`, `return_exceptions=`, `order_outputs=` and `kwargs=`, the decorators'
`secrets=[flow.Secret.from_env(...)]` and `volumes={mount_path: volume}`, and `@app.cls` classes
(flow.remote_class).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

# flow.errors is imported where it is raised: a task imports this module with the user's (to
# decorate the functions), and every millisecond of that import is paid on every call.

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.config import TaskConfig
    from flow.domain.task.function_call import FunctionCall
    from flow.remote_class import RemoteClass
    from flow.task import Task

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C")
DEFAULT_MAP_CONCURRENCY = 16


def _function_location(fn: Callable[..., Any], code_root: Path) -> tuple[str | None, str | None]:
    """(path, module) by which the task finds `fn` in the code snapshot."""
    import inspect

    from flow.errors import ValidationError

    module = sys.modules.get(fn.__module__)
    source = inspect.getsourcefile(fn)
    if source is None:
        raise ValidationError(
            f"{fn.__qualname__} has no source file (defined in a notebook or the REPL?)",
            suggestions=["define the function in a .py file under the code root"],
        )
    if "<locals>" in fn.__qualname__ or "." in fn.__qualname__:
        raise ValidationError(
            f"{fn.__qualname__} is not a top-level function, so a task cannot import it",
            suggestions=["define it at the top level of its module"],
        )
    package = getattr(module, "__package__", None)
    if fn.__module__ != "__main__" and package:
        # A package module: import it by name, so its relative imports work.
        top = fn.__module__.split(".")[0]
        if (code_root / top).is_dir():
            return None, fn.__module__
    from flow.remote_call import relative_to_root

    return relative_to_root(Path(source), code_root), None


class RemoteFunction(Generic[P, R]):
    """A function decorated with FlowApp.function. Calling it runs it here."""

    def __init__(
        self, app: FlowApp, fn: Callable[P, R], options: dict[str, Any], encoding: str, keep_warm: int = 0
    ) -> None:
        self._app = app
        self._fn = fn
        self._options = options
        self._encoding = encoding
        self._keep_warm = keep_warm
        self.__flow_wrapped__ = fn  # the task's runner calls this, not the wrapper
        # (An @app.cls class carried here keeps its attributes to itself: flow.remote_class.)
        functools.update_wrapper(self, fn, updated=() if isinstance(fn, type) else functools.WRAPPER_UPDATES)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fn(*args, **kwargs)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Runs the function here, as calling it does (flow-compute's name for that)."""
        return self._fn(*args, **kwargs)

    def _config(self, depends_on: object = None) -> TaskConfig:
        from flow.config import TaskConfig

        options = dict(self._options)
        options.setdefault("name", self._fn.__name__.replace("_", "-")[:63])
        options.setdefault("code_root", str(Path.cwd()))
        if depends_on is not None:
            options["depends_on"] = depends_on
        return TaskConfig(upload_code=True, **options)

    def _call(self, config: TaskConfig, args: tuple[Any, ...], kwargs: dict[str, Any], flow: Flow) -> FunctionCall:
        import inspect

        from flow.domain.task.function_call import FunctionCall
        from flow.remote_call import check_arguments, check_call

        if not isinstance(self._fn, type):  # a class takes the runner's class call (flow.remote_class)
            check_arguments(self._fn.__name__, inspect.signature(self._fn), args, kwargs)
        path, module = _function_location(self._fn, Path(config.code_root or Path.cwd()))
        pickled = b""
        if self._encoding == "pickle":
            import cloudpickle

            pickled = cloudpickle.dumps((args, kwargs))
        call = FunctionCall(
            function=self._fn.__name__,
            path=path,
            module=module,
            args=() if pickled else args,
            kwargs={} if pickled else kwargs,
            encoding=self._encoding,
            pickled_arguments=pickled,
            python=flow.local_python(),
            keep_warm=self._keep_warm,
        )
        check_call(call)
        return call

    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> Task:
        """Starts the call in a task and returns the Task; `task.result()` gives the value.
        `depends_on=` is spawn's own (never passed to the function): the tasks the call waits
        for, as TaskConfig.depends_on (Task objects, task ids, "ID:afterany", ...)."""
        from flow.remote_call import refuse_nested_import_call

        refuse_nested_import_call(self._fn.__name__)
        flow = self._app.flow
        config = self._config(kwargs.pop("depends_on", None))
        return flow.submit(config, function_call=self._call(config, args, dict(kwargs), flow))

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Runs the call in a task and returns its value (or raises what it raised)."""
        result: R = self.spawn(*args, **kwargs).result()
        return result

    def map(
        self,
        *iterables: Iterable[Any],
        max_concurrency: int = DEFAULT_MAP_CONCURRENCY,
        max_concurrent: int | None = None,
        return_exceptions: bool = False,
        order_outputs: bool = True,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[R]:
        """One task per input (like builtins.map over several iterables), at most
        `max_concurrency` at a time; results in input order. If a call raises, the tasks not yet
        finished are cancelled and the first error (in input order) is raised.

        flow-compute's keywords: `max_concurrent` (max_concurrency), `return_exceptions=True` (a
        call's exception takes its place among the results; nothing is cancelled),
        `order_outputs=False` (results in the order the calls finish), `kwargs` (keyword
        arguments for every call)."""
        calls = [(item, dict(kwargs or {})) for item in zip(*iterables, strict=False)]
        limit = max_concurrent if max_concurrent is not None else max_concurrency
        return self._fan_out(calls, limit, return_exceptions, order_outputs)

    def starmap(
        self,
        inputs: Iterable[Sequence[Any]],
        *,
        max_concurrent: int = DEFAULT_MAP_CONCURRENCY,
        return_exceptions: bool = False,
        order_outputs: bool = True,
    ) -> list[R]:
        """flow-compute's starmap: one task per tuple of positional arguments, `fn(*item)`; the
        rest as map."""
        return self._fan_out([(tuple(item), {}) for item in inputs], max_concurrent, return_exceptions, order_outputs)

    def _fan_out(
        self,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        max_concurrency: int,
        return_exceptions: bool,
        order_outputs: bool,
    ) -> list[R]:
        import threading
        from concurrent.futures import ThreadPoolExecutor, as_completed

        if max_concurrency < 1:
            from flow.errors import ValidationError

            raise ValidationError(f"max_concurrency={max_concurrency} must be at least 1", suggestions=["use e.g. 16"])
        spawned: list[Task] = []
        lock = threading.Lock()
        failed = threading.Event()

        def run_one(call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
            if failed.is_set():
                raise RuntimeError("skipped: an earlier call failed")
            task = self.spawn(*call[0], **call[1])
            with lock:
                spawned.append(task)
            try:
                return task.result()
            except Exception as exc:
                if return_exceptions:
                    return exc
                failed.set()
                raise
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=min(max_concurrency, max(1, len(calls)))) as pool:
            futures = [pool.submit(run_one, call) for call in calls]
            results: list[R] = []
            for future in futures if order_outputs else as_completed(futures):
                try:
                    results.append(future.result())
                except BaseException:
                    failed.set()
                    for task in list(spawned):
                        task.cancel()
                    raise
        return results


class FlowApp:
    """A group of remote functions sharing one client."""

    def __init__(self, name: str | None = None, flow: Flow | None = None) -> None:
        self.name = name
        self._flow = flow

    @property
    def flow(self) -> Flow:
        if self._flow is None:
            from flow.client import Flow

            self._flow = Flow()
        return self._flow

    def function(
        self,
        gpu: str | None = None,
        memory: int | None = None,
        *,
        encoding: str = "json",
        keep_warm: int = 0,
        **task_options: Any,
    ) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]:
        """Marks a function to run in tasks. `gpu` is an instance type ("a100", "4xh100");
        `memory` the RAM it needs in MB; other keywords are TaskConfig fields (image, env,
        max_run_time_hours, max_price_per_hour, ...), and flow-compute's `secrets=[Secret...]`
        (secret_env) and `volumes={mount_path: volume name, VolumeSpec fields or Volume}`.

        `keep_warm=N` (0 to 16; 0, the default, is one process per call): on the local provider
        flowd keeps up to N worker processes that have imported the function's module, and runs
        each call (still a task of its own) in a free one. A warm call shares its process with
        the calls before it: module globals, imported modules, open files, threads, GPU memory
        (the README's "Warm functions" says exactly what is shared and what is reset)."""
        options = _task_options(gpu, memory, encoding, task_options)
        _check_keep_warm(keep_warm)

        def decorate(fn: Callable[P, R]) -> RemoteFunction[P, R]:
            return RemoteFunction(self, fn, options, encoding, keep_warm)

        return decorate

    def cls(
        self,
        gpu: str | None = None,
        memory: int | None = None,
        *,
        encoding: str = "json",
        keep_warm: int = 0,
        **task_options: Any,
    ) -> Callable[[type[C]], RemoteClass[C]]:
        """flow-compute's `@app.cls(...)` (keywords as for `function`, keep_warm included: a
        warm worker keeps the class's module, and each call still makes a new instance and runs
        its hooks): a class whose `@flow.remote()` methods each run as one task, with its
        `@flow.on_enter()` and `@flow.on_exit()` hooks around the call (flow.remote_class)."""
        options = _task_options(gpu, memory, encoding, task_options)
        _check_keep_warm(keep_warm)

        def decorate(user_cls: type[C]) -> RemoteClass[C]:
            from flow.remote_class import RemoteClass, class_call

            def spawn(method: str, document: dict[str, Any]) -> Task:
                name = f"{user_cls.__name__}-{method}".replace("_", "-")[:63]
                carrier: RemoteFunction[..., C] = RemoteFunction(
                    self, user_cls, {"name": name, **options}, encoding, keep_warm
                )
                return carrier.spawn(**class_call(document))

            return RemoteClass(user_cls, spawn)

        return decorate


def _check_keep_warm(keep_warm: object) -> None:
    """keep_warm is a whole number from 0 to MAX_KEEP_WARM (the core's rule, checked at decoration)."""
    from flow.domain.task.function_call import keep_warm_violation

    problem = keep_warm_violation(keep_warm)
    if problem is not None:
        from flow.domain.errors import validation_error
        from flow.wire.error_table import exception_from_domain_error

        raise exception_from_domain_error(validation_error([problem], subject="function options"))


def _task_options(gpu: str | None, memory: int | None, encoding: str, task_options: dict[str, Any]) -> dict[str, Any]:
    """The TaskConfig fields of a decorator's keywords."""
    if encoding not in ("json", "pickle"):
        from flow.errors import ValidationError

        raise ValidationError(f"encoding={encoding!r} is not an encoding", suggestions=["use 'json' or 'pickle'"])
    options = dict(task_options)
    if gpu is not None:
        options["instance_type"] = gpu
    if memory is not None:
        options["memory_mb"] = memory
    if "secrets" in options:
        from flow.secret import with_secrets

        options = with_secrets(options)
    if isinstance(options.get("volumes"), Mapping):
        from flow.config import volumes_from_mapping

        options["volumes"] = volumes_from_mapping(options["volumes"])
    return options
