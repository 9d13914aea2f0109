"""`flow invoke FILE FUNCTION`: call a function from a Python file in a task, print its JSON result."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from flow.cli.arguments import add_json, client
from flow.cli.output import emit_json


def cmd_invoke(args: argparse.Namespace) -> int:
    import json

    from flow.errors import ValidationError
    from flow.invoke import spawn_invocation

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
    options: dict[str, Any] = {}
    if args.name:
        options["name"] = args.name
    if args.max_run_time is not None:
        options["max_run_time_hours"] = args.max_run_time
    task = spawn_invocation(args.path, args.function, call_args, call_kwargs, args.gpu, flow=client(args), **options)
    print(f"task {task.task_id} calls {args.function} from {args.path}", file=sys.stderr)
    value = task.result()
    emit_json({"task_id": task.task_id, "result": value} if args.json else value)
    return 0


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    invoke = add_parser("invoke", help="call a function from a Python file in a task; prints its JSON result")
    invoke.add_argument("path", help="the .py file, relative to the current directory")
    invoke.add_argument("function")
    invoke.add_argument("--args", default="[]", help="positional arguments as a JSON list")
    invoke.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    invoke.add_argument("--gpu", help="instance type, e.g. a100")
    invoke.add_argument("-n", "--name")
    invoke.add_argument("--max-run-time", type=float, metavar="HOURS")
    invoke.add_argument("--provider")
    add_json(invoke)
    invoke.set_defaults(handler=cmd_invoke)


__all__ = ["register"]
