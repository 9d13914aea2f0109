"""`flow invoke FILE FUNCTION`: call a function from a Python file in a task, print its JSON result.

Start-up is most of what the command costs, so with plain options it builds neither a TaskConfig
nor the core's FunctionCall (`_plain_invocation`), as `flow run` does with its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flow.cli.arguments import add_json, add_provider, client, plain_tasks_enabled
from flow.cli.output import emit_json

if TYPE_CHECKING:
    from flow.task import Task


def cmd_invoke(args: argparse.Namespace) -> int:
    import json

    from flow.errors import ValidationError

    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"--args/--kwargs must be JSON: {exc}", suggestions=["e.g. --args '[1, \"a\"]' --kwargs '{\"epochs\": 3}'"]
        ) from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise ValidationError(
            "--args must be a JSON list and --kwargs a JSON object", suggestions=["e.g. --args '[1]' --kwargs '{}'"]
        )
    task = _plain_invocation(args, call_args, call_kwargs) if plain_tasks_enabled() else None
    if task is None:
        from flow.invoke import spawn_invocation

        options: dict[str, Any] = {}
        if args.name is not None:
            options["name"] = args.name
        if args.max_run_time_hours is not None:
            options["max_run_time_hours"] = args.max_run_time_hours
        task = spawn_invocation(
            args.path, args.function, call_args, call_kwargs, args.instance_type, flow=client(args), **options
        )
    print(f"task {task.task_id} calls {args.function} from {args.path}", file=sys.stderr)
    value = task.result()
    emit_json({"task_id": task.task_id, "result": value} if args.json else value)
    return 0


def _plain_invocation(args: argparse.Namespace, call_args: list[Any], call_kwargs: dict[str, Any]) -> Task | None:
    """The task `spawn_invocation` would start, submitted from plain values: the file, function
    and arguments checked here first, as there; flowd then validates the spec and the call as it
    validates every client's, by the same rules, in the same words. None where the typed path
    must run: arguments JSON cannot carry, a value the wire would read as unset (""), or a run
    time that is not finite, which that path names as the mistakes they are."""
    import math
    from pathlib import Path

    from flow.domain.task.json_values import json_problem

    hours = args.max_run_time_hours
    if json_problem(call_args) or json_problem(call_kwargs) or "" in (args.name, args.instance_type):
        return None
    if hours is not None and not math.isfinite(hours):
        return None
    from flow.cli.tasks import submit_plain
    from flow.remote_call import check_file_function, default_task_name, relative_to_root
    from flow.wire.function_codec import json_call_to_proto

    file = Path(args.path)
    check_file_function(file, args.function, call_args, call_kwargs)
    flow = client(args)
    fields: dict[str, Any] = {"name": args.name or default_task_name(args.function)}
    if args.instance_type is not None:
        fields["instance_type"] = args.instance_type
    if hours is not None:
        fields["max_run_time_hours"] = hours
    path = relative_to_root(file, Path.cwd())
    call = json_call_to_proto(args.function, path, call_args, call_kwargs, flow.local_python())
    return submit_plain(flow, fields, progress=None, function_call=call)


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    invoke = add_parser("invoke", help="call a function from a Python file in a task; prints its JSON result")
    invoke.add_argument("path", metavar="FILE", help="the .py file, relative to the current directory")
    invoke.add_argument("function", metavar="FUNCTION", help="the name of a function defined in FILE")
    invoke.add_argument("--args", default="[]", metavar="JSON", help="positional arguments as a JSON list")
    invoke.add_argument("--kwargs", default="{}", metavar="JSON", help="keyword arguments as a JSON object")
    invoke.add_argument("--gpu", dest="instance_type", help="the instance type to run on, e.g. a100")
    invoke.add_argument("-n", "--name", help="a name for the task (default: the function's)")
    invoke.add_argument(
        "--max-run-time", dest="max_run_time_hours", type=float, metavar="HOURS", help="stop the task after this long"
    )
    add_provider(invoke)
    add_json(invoke)
    invoke.set_defaults(handler=cmd_invoke, command_parser=invoke)


__all__ = ["register"]
