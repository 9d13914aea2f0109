"""invoke: call a function in a file that imports nothing from Flow, as a task.

result = invoke("train.py", "train_model", args=["s3://bucket/data"], kwargs={"epochs": 200}, gpu="a100")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.task import Task


def spawn_invocation(
    path: str | Path,
    function: str,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    gpu: str | None = None,
    *,
    encoding: str = "json",
    flow: Flow | None = None,
    **task_options: Any,
) -> Task:
    """Starts `function(*args, **kwargs)` from `path` in a task and returns the Task."""
    from flow.client import Flow
    from flow.config import TaskConfig
    from flow.domain.task.function_call import FunctionCall
    from flow.remote_call import check_call, check_file_function, default_task_name, relative_to_root

    args = list(args or [])
    kwargs = dict(kwargs or {})
    file = Path(path)
    check_file_function(file, function, args, kwargs)
    options = dict(task_options)
    if gpu is not None:
        options["instance_type"] = gpu
    options.setdefault("name", default_task_name(function))
    code_root = Path(options.setdefault("code_root", str(Path.cwd())))
    config = TaskConfig(upload_code=True, **options)
    client = flow or Flow()
    pickled = b""
    if encoding == "pickle":
        import cloudpickle

        pickled = cloudpickle.dumps((tuple(args), kwargs))
    call = FunctionCall(
        function=function,
        path=relative_to_root(file, code_root),
        args=() if pickled else tuple(args),
        kwargs={} if pickled else kwargs,
        encoding=encoding,
        pickled_arguments=pickled,
        python=client.local_python(),
    )
    check_call(call)
    return client.submit(config, function_call=call)


def invoke(
    path: str | Path,
    function: str,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    gpu: str | None = None,
    *,
    encoding: str = "json",
    flow: Flow | None = None,
    timeout: float | None = None,
    **task_options: Any,
) -> Any:
    """Runs `function(*args, **kwargs)` from the file `path` in a task and returns its value, or
    raises what it raised. `gpu` is an instance type; other keywords are TaskConfig fields. The
    file, the function and the arguments are checked before anything is submitted."""
    task = spawn_invocation(path, function, args, kwargs, gpu, encoding=encoding, flow=flow, **task_options)
    return task.result(timeout=timeout)
