"""`@app.cls`: classes whose methods run in tasks, as in the Mithril platform's SDK (flow-compute).

    app = flow.FlowApp()

    @app.cls(instance_type="a100")
    class Predictor:
        model_name: str = flow.param(default="gpt2")

        @flow.on_enter()
        def load(self) -> None:
            self.model = load_model(self.model_name)

        @flow.remote()
        def predict(self, text: str) -> str:
            return self.model(text)

    Predictor(model_name="gpt2").predict.remote("hello")

Each `.remote()` (or `.spawn()`) call is one task, as on flow-compute's own VM backend: the task
imports the module, makes the class with no arguments, sets its parameters, runs its on_enter
hooks, calls the method and runs its on_exit hooks (also after an exception). Nothing persists
from one call to the next (flow-compute keeps the object between calls only on its serverless
backend); to load a model once for many inputs, give one call all of them. The object made here
never runs on_enter; calling a method directly (or `.local()`) runs it here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from flow.errors import ValidationError
from flow.runtime.runner import CLASS_CALL

if TYPE_CHECKING:
    from flow.task import Task

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")
ON_ENTER: Final = "__flow_on_enter__"
ON_EXIT: Final = "__flow_on_exit__"
REMOTE: Final = "__flow_remote__"
_MISSING: Final = object()
# (method name, the CLASS_CALL document) -> the submitted task (FlowApp makes it).
Spawn = Callable[[str, dict[str, Any]], "Task"]


def _marker(attribute: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, attribute, True)
        return fn

    return mark


def on_enter() -> Callable[[F], F]:
    """Marks a method that each task runs before the called method (load a model, open a file)."""
    return _marker(ON_ENTER)


def on_exit() -> Callable[[F], F]:
    """Marks a method that each task runs after the called method, even when it raised."""
    return _marker(ON_EXIT)


def remote() -> Callable[[F], F]:
    """Marks a method callable in a task: `obj.method.remote(...)`, `.spawn(...)`."""
    return _marker(REMOTE)


class Parameter:
    """A class-level parameter of an `@app.cls` class: a keyword of its constructor, sent to
    each task (as JSON, or pickled with encoding="pickle")."""

    def __init__(self, default: Any = _MISSING) -> None:
        self.default = default
        self.name = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        if self.name in vars(obj):
            return vars(obj)[self.name]
        if not self.required:
            return self.default
        raise AttributeError(f"parameter {self.name!r} is not set; pass it: {type(obj).__name__}({self.name}=...)")

    def __set__(self, obj: object, value: Any) -> None:
        vars(obj)[self.name] = value


def param(*, default: Any = _MISSING) -> Any:
    """Declares a parameter: `model_name: str = flow.param(default="gpt2")`."""
    return Parameter(default)


def _members(cls: type) -> dict[str, Any]:
    """The class's attributes in definition order (a base's first; an override keeps its place)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):
        found.update(vars(klass))
    return found


class RemoteClass(Generic[C]):
    """What `@app.cls(...)` makes of a class: call it with the class's parameters (keywords) for
    an object whose `@flow.remote()` methods have `.remote()`, `.spawn()` and `.local()`."""

    def __init__(self, cls: type[C], spawn: Spawn) -> None:
        self.__flow_wrapped__ = cls  # the task's runner makes the class itself
        functools.update_wrapper(self, cls, updated=())
        self._cls = cls
        self._spawn = spawn
        members = _members(cls)
        self._params = {name: value for name, value in members.items() if isinstance(value, Parameter)}
        self._enter = [name for name, value in members.items() if getattr(value, ON_ENTER, False)]
        self._exit = [name for name, value in members.items() if getattr(value, ON_EXIT, False)]
        self._methods = [name for name, value in members.items() if getattr(value, REMOTE, False)]

    def __call__(self, **params: Any) -> RemoteObject[C]:
        unknown = sorted(params.keys() - self._params.keys())
        missing = [name for name, p in self._params.items() if p.required and name not in params]
        if unknown or missing:
            known = ", ".join(self._params) or "none"
            problem = f"has no parameter {', '.join(unknown)}" if unknown else f"needs {', '.join(missing)}"
            raise ValidationError(
                f"{self._cls.__name__}() {problem} (its parameters: {known})",
                suggestions=["declare parameters in the class body: name: str = flow.param(default=...)"],
            )
        values = {name: params.get(name, p.default) for name, p in self._params.items()}
        return RemoteObject(self, values)

    def _call_document(
        self, method: str, params: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "method": method,
            "params": params,
            "enter": list(self._enter),
            "exit": list(self._exit),
            "args": list(args),
            "kwargs": kwargs,
        }

    def __repr__(self) -> str:
        return f"<flow remote class {self._cls.__qualname__}>"


class RemoteObject(Generic[C]):
    """An `@app.cls` class with its parameters. `local_instance` is the object made here (its
    on_enter hooks are not run); each `@flow.remote()` method is a RemoteMethod attribute."""

    def __init__(self, remote_class: RemoteClass[C], params: dict[str, Any]) -> None:
        self._class = remote_class
        self.params = params
        self.local_instance: C = remote_class._cls()
        for name, value in params.items():
            setattr(self.local_instance, name, value)
        for name in remote_class._methods:
            setattr(self, name, RemoteMethod(self, name))

    def _spawn(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Task:
        return self._class._spawn(method, self._class._call_document(method, self.params, args, kwargs))


class RemoteMethod:
    """A `@flow.remote()` method of an `@app.cls` object."""

    def __init__(self, owner: RemoteObject[Any], name: str) -> None:
        self._owner = owner
        self._name = name
        self._bound = getattr(owner.local_instance, name)
        functools.update_wrapper(self, self._bound, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the method here, on the object made here (no on_enter)."""
        return self._bound(*args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the method here, on the object made here (no on_enter)."""
        return self._bound(*args, **kwargs)

    def spawn(self, *args: Any, **kwargs: Any) -> Task:
        """Starts the call in a task and returns the Task; `task.result()` gives the value."""
        import inspect

        from flow.remote_call import check_arguments

        check_arguments(self._name, inspect.signature(self._bound), args, kwargs)
        return self._owner._spawn(self._name, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the call in a task and returns its value (or raises what it raised)."""
        return self.spawn(*args, **kwargs).result()


def class_call(document: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments by which the task's runner calls a method (flow.runtime.runner)."""
    return {CLASS_CALL: document}


__all__ = ["Parameter", "RemoteClass", "RemoteMethod", "RemoteObject", "on_enter", "on_exit", "param", "remote"]
