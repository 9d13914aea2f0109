"""The `flow` command: one module per command group (tasks, functions, instances, slurm, volumes,
daemon), each with its parsers and handlers. Every subcommand takes --json; heavy modules load
only when a command runs, so `flow --version` and `flow status` start fast."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from flow.cli import daemon, functions, instances, slurm, tasks, volumes
from flow.cli.output import emit_json

if TYPE_CHECKING:
    from flow.errors import FlowError

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    from flow import __version__

    parser = argparse.ArgumentParser(prog="flow", description="Run code on GPUs: locally, on Slurm, or in the cloud.")
    parser.add_argument("--version", action="version", version=f"flow {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    for group in (tasks, functions, instances, slurm, volumes, daemon):
        group.register(sub.add_parser)
    return parser


def _report(error: FlowError, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "error": {
                    "code": error.error_code,
                    "type": type(error).__name__,
                    "message": error.message,
                    "suggestions": error.suggestions,
                    "violations": [{"field": v.field, "description": v.description} for v in error.violations],
                }
            }
        )
        return
    remote_traceback = getattr(error, "remote_traceback", None)
    if remote_traceback:
        print(remote_traceback.rstrip(), file=sys.stderr)
    print(f"error: {error.message}", file=sys.stderr)
    for tip in error.suggestions:
        print(f"  hint: {tip}", file=sys.stderr)


def _fail(parser: argparse.ArgumentParser) -> NoReturn:
    parser.print_help(sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        _fail(parser)
    from flow.errors import FlowError, ValidationError

    try:
        code = handler(args)
    except FlowError as error:
        _report(error, getattr(args, "json", False))
        code = EXIT_USAGE if isinstance(error, ValidationError) else EXIT_FAILED
    except KeyboardInterrupt:
        code = tasks.EXIT_INTERRUPTED
    # Skip interpreter teardown (60-100 ms of module finalizers and gRPC shutdown): the CLI has
    # nothing left to flush but its two streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
