"""What every command group shares: how a command line is read, the --json flag, and the client a
command talks through.

The rule for programs (`flow run`, `flow ssh`): Flow's own options are recognised anywhere before
`--`; everything after `--` is the program's, untouched. So `flow run "echo hi" -d` detaches, and
`flow run -- python train.py -d` passes -d to train.py."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from flow.client import Flow

PROGRAM_SEPARATOR = "--"
# "0": every call over grpcio, and every task built as a TaskConfig (tests compare both paths)
FASTPATH_ENV: Final = "FLOW_CLI_FASTPATH"


class CommandParser(argparse.ArgumentParser):
    """A parser that takes its options anywhere among its positional words (argparse's
    intermixed parsing), except where a positional swallows the rest (subcommands)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._intermixing = False

    def parse_known_args(  # type: ignore[override]  # typeshed overloads it on the namespace
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing or any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions):
            return super().parse_known_args(args, namespace)
        # parse_known_intermixed_args calls parse_known_args itself (Python 3.11, 3.12): once only.
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def split_program(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """A command line split at its first `--`: Flow's words, and the program's (None: no `--`).
    (A plain tuple: a NamedTuple class costs `flow status` most of a millisecond to build.)"""
    words = list(argv)
    if PROGRAM_SEPARATOR not in words:
        return words, None
    at = words.index(PROGRAM_SEPARATOR)
    return words[:at], words[at + 1 :]


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_provider(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        metavar="NAME",
        help="local, a slurm or mithril provider of $FLOW_HOME/config.yaml, ... (default: $FLOW_PROVIDER, "
        "else the daemon's default)",
    )


def fast_path_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the CLI's calls try HTTP/2 without grpcio first (flow.connection.prefer_http2);
    only ever for the local daemon on its Unix socket, never for FLOW_DAEMON_ADDRESS (TCP/TLS)."""
    source = os.environ if env is None else env
    return not source.get("FLOW_DAEMON_ADDRESS", "").startswith(("tcp:", "tls:")) and source.get(FASTPATH_ENV) != "0"


def plain_tasks_enabled() -> bool:
    """Whether `flow run` and `flow invoke` may build their task from plain values, without a
    TaskConfig (any daemon validates it the same way); off only when FASTPATH_ENV says "0"."""
    return os.environ.get(FASTPATH_ENV) != "0"


def client(args: argparse.Namespace) -> Flow:
    """A Flow client for the command's --provider (imported only here: `flow --version` needs none)."""
    from flow.client import Flow

    return Flow(provider=getattr(args, "provider", None))


__all__ = [
    "FASTPATH_ENV",
    "CommandParser",
    "add_json",
    "add_provider",
    "client",
    "fast_path_enabled",
    "plain_tasks_enabled",
    "split_program",
]
