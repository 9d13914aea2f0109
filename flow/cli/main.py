"""The `flow` command: one module per command group (tasks, functions, instances, slurm, volumes,
daemon), each with its parsers and handlers. Every subcommand takes --json; heavy modules load
only when a command runs, so `flow --version` and `flow status` start fast."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Final, NoReturn

from flow.cli import daemon, exit_status, functions, instances, slurm, tasks, volumes
from flow.cli.arguments import CommandParser, fast_path_enabled, split_program
from flow.cli.output import emit_json

if TYPE_CHECKING:
    from flow.errors import FlowError


GROUPS: Final = (tasks, functions, instances, slurm, volumes, daemon)
# The group that registers each command. A command line names one, and only its group's parsers
# are built: building all of them costs a fifth of `python -c pass`, more than some commands
# take. tests/cli/test_command_line.py keeps this equal to what the groups register.
COMMAND_GROUPS: Final[dict[str, ModuleType]] = {
    **dict.fromkeys(("run", "status", "logs", "cancel", "wait", "ssh"), tasks),
    "invoke": functions,
    "instances": instances,
    "slurm": slurm,
    "volumes": volumes,
    "daemon": daemon,
}


# Commands whose first call starts flowd when none serves. They start it as soon as the command
# line parses (flow.connection.start_daemon_early), so that flowd's start-up, most of a first
# command's time, runs on the other core while this process imports what the command needs.
STARTS_DAEMON: Final = frozenset(COMMAND_GROUPS) - {"daemon"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line's parser; given the command a line names, only that command's
    group is registered (the parse is the same: tests/cli/test_command_line.py)."""
    from flow import __version__

    parser = argparse.ArgumentParser(
        prog="flow",
        description="Run code on GPUs: locally, on Slurm, or in the cloud.",
        epilog=exit_status.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flow {__version__}", help="print the version")
    sub = parser.add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=CommandParser, help="what to do (flow COMMAND --help for more)"
    )
    for group in (COMMAND_GROUPS[command],) if command in COMMAND_GROUPS else GROUPS:
        group.register(sub.add_parser)
    return parser


def _report(error: FlowError, args: argparse.Namespace) -> None:
    from flow.cli.hints import flags_of, in_cli_words

    command: argparse.ArgumentParser | None = getattr(args, "command_parser", None)
    flags = flags_of(command) if command is not None else {}
    hints = [in_cli_words(tip, flags) for tip in error.suggestions]
    if getattr(args, "json", False):
        emit_json(
            {
                "error": {
                    "code": error.error_code,
                    "type": type(error).__name__,
                    "message": error.message,
                    "suggestions": hints,
                    "violations": [{"field": v.field, "description": v.description} for v in error.violations],
                }
            }
        )
        return
    remote_traceback = getattr(error, "remote_traceback", None)
    if remote_traceback:
        print(remote_traceback.rstrip(), file=sys.stderr)
    print(f"error: {error.message}", file=sys.stderr)
    for tip in hints:
        print(f"  hint: {tip}", file=sys.stderr)


def _usage(parser: argparse.ArgumentParser) -> NoReturn:
    parser.print_help(sys.stderr)
    sys.exit(exit_status.USAGE)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as a Namespace; `program` holds the words after `--` (None without one).
    Usage errors print the command's usage and exit 2."""
    flow_words, program = split_program(argv)
    parser = build_parser(flow_words[0] if flow_words else None)
    args, unknown = parser.parse_known_args(flow_words)
    command: argparse.ArgumentParser = getattr(args, "command_parser", parser)
    example: str = getattr(args, "takes_program", "")
    if unknown:
        hint = f"\n  hint: {command.prog}'s options go before `--`, the program's after: {example}" if example else ""
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    if program is not None and not example:
        command.error(f"takes no program after `--` (given: {' '.join(program) or 'nothing'})")
    args.program = program
    return args


def _start_daemon_early(command: str | None) -> None:
    """flowd started now, unwaited, when the command will need it and its socket is missing."""
    if command not in STARTS_DAEMON or os.environ.get("FLOW_DAEMON_ADDRESS"):
        return  # a remote daemon is not ours to start
    from flow.connection import start_daemon_early
    from flow.errors import FlowError
    from flow.home import resolve_home

    with contextlib.suppress(FlowError, OSError, ValueError):  # the command's own connection says it
        start_daemon_early(resolve_home())


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)  # a usage error or --help ends here
    _start_daemon_early(args.cmd)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        _usage(getattr(args, "command_parser", None) or build_parser())
    from flow.connection import prefer_http2
    from flow.errors import FlowError

    prefer_http2(fast_path_enabled())  # calls without importing grpcio (see flow.connection)

    try:
        code = handler(args)
    except FlowError as error:
        _report(error, args)
        code = exit_status.of_error(error)
    except KeyboardInterrupt:
        code = exit_status.DETACHED
    # Skip interpreter teardown (60-100 ms of module finalizers and gRPC shutdown): the CLI has
    # nothing left to flush but its two streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
